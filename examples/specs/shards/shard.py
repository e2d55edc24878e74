"""One instance's share of a dataset: every Nth row of data.csv, N the number of instances.

The platform tells each instance who it is: SM_CURRENT_HOST ("algo-2") and SM_HOSTS
("algo-1,algo-2,algo-3,algo-4"). Instances run independently; each writes its own part.json and
metrics.json, which come back under algo-N/ in the job's outputs. merge.py adds them up."""

import csv
import json
import os
from pathlib import Path

hosts = os.environ.get("SM_HOSTS", "algo-1").split(",")
host = os.environ.get("SM_CURRENT_HOST", "algo-1")
index, count = hosts.index(host), len(hosts)

ids, total = [], 0.0
with open("data.csv", newline="") as f:
    for row_number, row in enumerate(csv.DictReader(f)):
        if row_number % count == index:  # this instance's rows: index, index + count, ...
            ids.append(int(row["id"]))
            total += float(row["value"])

print(f"{host} ({index + 1} of {count}): {len(ids)} rows, sum {total:.3f}")
Path("part.json").write_text(json.dumps({"host": host, "ids": ids, "sum": total}))
Path("metrics.json").write_text(json.dumps({"rows": len(ids), "sum": total}))
