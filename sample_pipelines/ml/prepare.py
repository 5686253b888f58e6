"""Makes a two-class data set of 2-D points (seeded), written as CSV."""

import os
import random
import sys
from pathlib import Path

rng = random.Random(int(os.environ.get("SEED", "7")))
out = Path(sys.argv[1])
out.parent.mkdir(parents=True, exist_ok=True)
rows = []
for _ in range(400):
    label = rng.random() < 0.5
    cx, cy = (1.5, 1.0) if label else (-1.0, -1.2)
    rows.append(f"{rng.gauss(cx, 1.0):.4f},{rng.gauss(cy, 1.0):.4f},{int(label)}")
out.write_text("x,y,label\n" + "\n".join(rows) + "\n")
print(f"wrote {len(rows)} points to {out}")
