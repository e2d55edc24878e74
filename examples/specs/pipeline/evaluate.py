"""Stage 3: reads every training's metrics (needs.json lists them, each cell in its own folder
under inputs/train/) and keeps the model of the cell with the lowest loss.

Writes best.json (which cell won, and every cell's loss), best_model.json and metrics.json."""

import json
import shutil
from pathlib import Path

needs = json.loads(Path("needs.json").read_text())
losses = {}
for cell in needs["train"]:
    losses[cell["name"]] = json.loads(Path(cell["path"], "metrics.json").read_text())["loss"]
best = min(needs["train"], key=lambda cell: losses[cell["name"]])
shutil.copyfile(Path(best["path"], "model.json"), "best_model.json")

summary = {"best": best["name"], "params": best["matrix"], "loss": losses[best["name"]]}
Path("best.json").write_text(json.dumps({**summary, "losses": losses}, indent=2))
Path("metrics.json").write_text(json.dumps({"best_loss": losses[best["name"]]}))
print(f"eval: best of {len(losses)} is {best['name']} (loss {losses[best['name']]:.5f})")
