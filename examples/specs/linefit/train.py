"""A tiny "training" job: fits a line to noisy points with plain Python and writes its results.

It reads its parameters from params.json when a manifest provides one, and writes metrics.json
(numbers the dashboard can chart) and model.json (the result)."""

import json
import os
import random
from pathlib import Path

params = json.loads(Path("params.json").read_text()) if Path("params.json").exists() else {}
lr = float(params.get("lr", 0.05))
epochs = int(params.get("epochs", 200))
host = os.environ.get("SM_CURRENT_HOST", "algo-1")

rng = random.Random(42)
points = [(x / 10, 3 * x / 10 + 1 + rng.gauss(0, 0.1)) for x in range(50)]
w, b = 0.0, 0.0
for _ in range(epochs):
    gw = sum(2 * (w * x + b - y) * x for x, y in points) / len(points)
    gb = sum(2 * (w * x + b - y) for x, y in points) / len(points)
    w, b = w - lr * gw, b - lr * gb
loss = sum((w * x + b - y) ** 2 for x, y in points) / len(points)

print(f"{host}: lr={lr} epochs={epochs} -> w={w:.3f} b={b:.3f} loss={loss:.5f}")
Path("metrics.json").write_text(json.dumps({"loss": loss, "w": w, "b": b}))
Path("model.json").write_text(json.dumps({"w": w, "b": b, "lr": lr, "epochs": epochs}))
