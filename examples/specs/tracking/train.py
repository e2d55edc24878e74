"""A job that would report to an experiment tracker: it reads the tracker's API key and project
from its environment (a secret and a var in tracking.yaml) and writes run.json with the project
and a fingerprint of the key (never the key itself), as a tracker's client would name the
account it logs to, and metrics.json."""

import hashlib
import json
import os
from pathlib import Path

key = os.environ["TRACKER_API_KEY"]  # KeyError: the manifest's secret did not arrive
project = os.environ["TRACKER_PROJECT"]
params = json.loads(Path("params.json").read_text())
lr, epochs = float(params["lr"]), int(params["epochs"])

# A stand-in for training: a loss that falls with the steps taken.
loss = 1 / (1 + lr * epochs)
fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
print(f"logging to project {project} as key {fingerprint}: loss={loss:.5f}")
Path("metrics.json").write_text(json.dumps({"loss": loss, "lr": lr, "epochs": epochs}))
Path("run.json").write_text(json.dumps({"project": project, "key_sha256_16": fingerprint}))
