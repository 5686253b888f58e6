"""Trains a logistic regression by gradient descent (standard library only)."""

import argparse
import json
import math
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("data")
parser.add_argument("model")
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=60)
args = parser.parse_args()

rows = [line.split(",") for line in Path(args.data).read_text().splitlines()[1:]]
points = [(float(x), float(y), int(label)) for x, y, label in rows]
w = [0.0, 0.0, 0.0]
for epoch in range(1, args.epochs + 1):
    grad = [0.0, 0.0, 0.0]
    loss = 0.0
    for x, y, label in points:
        p = 1 / (1 + math.exp(-(w[0] + w[1] * x + w[2] * y)))
        loss -= math.log(p if label else 1 - p)
        for i, feature in enumerate((1.0, x, y)):
            grad[i] += (p - label) * feature
    w = [wi - args.lr * g / len(points) for wi, g in zip(w, grad, strict=True)]
    if epoch % 10 == 0:
        print(f"epoch {epoch:3d} loss {loss / len(points):.4f}")
Path(args.model).write_text(json.dumps({"weights": w, "lr": args.lr}))
print(f"saved {args.model}")
