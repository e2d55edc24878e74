import json
from pathlib import Path

print(json.loads(Path("params.json").read_text()))
