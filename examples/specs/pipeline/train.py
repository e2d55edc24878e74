"""Stage 2, one cell of the grid: fits a line to prep's points (inputs/prep/points.csv) by
gradient descent with this cell's lr and epochs.

Writes metrics.json (its loss) and model.json."""

import csv
import json
from pathlib import Path

params = json.loads(Path("params.json").read_text())
lr, epochs = float(params["lr"]), int(params["epochs"])
with open("inputs/prep/points.csv", newline="") as f:
    points = [(float(row["x"]), float(row["y"])) for row in csv.DictReader(f)]

w, b = 0.0, 0.0
for _ in range(epochs):
    gw = sum(2 * (w * x + b - y) * x for x, y in points) / len(points)
    gb = sum(2 * (w * x + b - y) for x, y in points) / len(points)
    w, b = w - lr * gw, b - lr * gb
loss = sum((w * x + b - y) ** 2 for x, y in points) / len(points)

print(f"train: lr={lr} epochs={epochs} on {len(points)} points -> loss={loss:.5f}")
Path("metrics.json").write_text(json.dumps({"loss": loss, "w": w, "b": b}))
Path("model.json").write_text(json.dumps({"w": w, "b": b, "lr": lr, "epochs": epochs}))
