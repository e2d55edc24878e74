"""Stage 1: makes the dataset (noisy points on y = 3x + 1) that every training reads.

Writes points.csv, stats.json (what it made) and metrics.json."""

import csv
import json
import random
from pathlib import Path

params = json.loads(Path("params.json").read_text())
rows, noise = int(params["rows"]), float(params["noise"])
rng = random.Random(7)
points = [(x, 3 * x + 1 + rng.gauss(0, noise)) for x in (i / rows * 5 for i in range(rows))]

with open("points.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["x", "y"])
    writer.writerows(points)
y_mean = sum(y for _, y in points) / rows
Path("stats.json").write_text(json.dumps({"rows": rows, "noise": noise, "y_mean": y_mean}))
Path("metrics.json").write_text(json.dumps({"rows": rows, "y_mean": y_mean}))
print(f"prep: {rows} points, y mean {y_mean:.3f}")
