"""Scores each model on the data; writes metrics.json naming the best one."""

import json
import sys
from pathlib import Path

data, out, *models = sys.argv[1:]
rows = [line.split(",") for line in Path(data).read_text().splitlines()[1:]]
points = [(float(x), float(y), int(label)) for x, y, label in rows]
scores = {}
for model in models:
    w = json.loads(Path(model).read_text())["weights"]
    hits = sum((w[0] + w[1] * x + w[2] * y > 0) == bool(label) for x, y, label in points)
    scores[model] = hits / len(points)
    print(f"{model}: accuracy {scores[model]:.3f}")
best = max(scores, key=lambda m: scores[m])
metrics = {"accuracy": scores[best], "models": len(scores), "best_model": best}
Path(out).write_text(json.dumps(metrics, indent=2))
print(f"best: {best}")
