"""A job that would report to an experiment tracker: it reads the tracker's API key and project
from its environment (a secret and a var in tracking.yaml), fits a line and writes run.json with
the project and a fingerprint of the key (never the key itself), as a tracker's client would
identify the account it logs to, and metrics.json."""

import hashlib
import json
import os
import random
from pathlib import Path

key = os.environ["TRACKER_API_KEY"]  # KeyError: the manifest's secret did not arrive
project = os.environ["TRACKER_PROJECT"]
params = json.loads(Path("params.json").read_text())
lr, epochs = float(params["lr"]), int(params["epochs"])

rng = random.Random(7)
points = [(x / 10, 2 * x / 10 - 1 + rng.gauss(0, 0.1)) for x in range(50)]
w, b = 0.0, 0.0
for _ in range(epochs):
    gw = sum(2 * (w * x + b - y) * x for x, y in points) / len(points)
    gb = sum(2 * (w * x + b - y) for x, y in points) / len(points)
    w, b = w - lr * gw, b - lr * gb
loss = sum((w * x + b - y) ** 2 for x, y in points) / len(points)

fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
print(f"logging to project {project} as key {fingerprint}: loss={loss:.5f}")
Path("metrics.json").write_text(json.dumps({"loss": loss, "w": w, "b": b}))
Path("run.json").write_text(json.dumps({"project": project, "key_sha256_16": fingerprint}))
