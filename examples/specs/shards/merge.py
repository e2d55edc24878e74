"""Merge the parts of examples/specs/multi-instance.yaml's job, on your own machine:

    python3 examples/specs/shards/merge.py examples/specs/outputs/multi-instance/stats

Reads OUTPUTS/algo-*/part.json, checks that every row of data.csv was counted exactly once,
and writes OUTPUTS/merged.json ({"rows", "sum", "mean", "hosts"}). Exits 1 if a row is missing
or was counted twice."""

import csv
import json
import sys
from pathlib import Path


def merge(outputs: Path, data: Path) -> dict:
    parts = [json.loads(p.read_text()) for p in sorted(outputs.glob("algo-*/part.json"))]
    if not parts:
        raise SystemExit(f"{outputs}: no algo-*/part.json; download the job's outputs first")
    ids = [i for part in parts for i in part["ids"]]
    with open(data, newline="") as f:
        expected = [int(row["id"]) for row in csv.DictReader(f)]
    if sorted(ids) != sorted(expected):
        missing = sorted(set(expected) - set(ids))[:5]
        twice = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise SystemExit(f"rows missing {missing} or counted twice {twice}")
    total = sum(part["sum"] for part in parts)
    merged = {
        "rows": len(ids),
        "sum": round(total, 6),
        "mean": round(total / len(ids), 6),
        "hosts": [part["host"] for part in parts],
    }
    (outputs / "merged.json").write_text(json.dumps(merged, indent=2) + "\n")
    return merged


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    result = merge(Path(sys.argv[1]), Path(__file__).with_name("data.csv"))
    print(f"{result['rows']} rows from {len(result['hosts'])} instances: mean {result['mean']}")
