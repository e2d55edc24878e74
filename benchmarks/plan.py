"""Planning cost: a 10,000-cell matrix against a 1-cell one, in the same run.

Writes two manifests over one small job folder, identical but for the matrix's size: a name
template and env templates that use the matrix, so every cell renders several templates. Each is
planned with `kaio plan FILE -o json` (output to /dev/null) in a fresh Python process, so that
imports, loading and validation (the fixed costs) are counted as a user meets them, and the peak
memory (ru_maxrss of that process) is its own. Prints the best wall time of --repeat runs, the
peak memory, and the ratios. Targets (issue 5): the 10,000-cell plan within 4× the wall time of
the 1-cell one, and its peak memory within 1.5× the 1-cell one's plus 50 MB.

    .venv/bin/python benchmarks/plan.py [--cells 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import contextlib, json, os, resource, sys, time
start = time.perf_counter()
from kaio_spec.cli import main
with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
    try:
        main(["plan", sys.argv[1], "-o", "json", "--offline"], standalone_mode=False)
    except SystemExit as e:
        if e.code:
            raise
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"inside_s": time.perf_counter() - start, "peak_mb": peak_kb / 1024}))
"""

MANIFEST = """\
version: 1
name: bench
settings:
  max_jobs: {max_jobs}
jobs:
  train:
    name: "train-lr{{{{ matrix.lr }}}}-seed{{{{ matrix.seed }}}}"
    instance_type: ml.g4dn.xlarge
    env:
      LR: "{{{{ matrix.lr }}}}"
      SEED: "{{{{ matrix.seed }}}}"
      RUN: "{{{{ manifest.name }}}}-{{{{ job.key }}}}-{{{{ job.index }}}}"
    matrix:
      lr: [{lrs}]
      seed: [{seeds}]
"""


def write_manifest(folder: Path, cells: int) -> Path:
    rows = max(1, math.isqrt(cells))
    cols = max(1, cells // rows)
    lrs = ", ".join(f"0.{i + 1:05d}" for i in range(rows))
    seeds = ", ".join(str(i) for i in range(cols))
    path = folder / f"cells-{rows * cols}.yaml"
    path.write_text(MANIFEST.format(max_jobs=max(rows * cols, 1), lrs=lrs, seeds=seeds))
    return path


def run_once(manifest: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(manifest)], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"planning {manifest} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def best_of(manifest: Path, repeat: int) -> dict:
    runs = [run_once(manifest) for _ in range(repeat)]
    return {
        "wall_s": min(r["wall_s"] for r in runs),
        "inside_s": min(r["inside_s"] for r in runs),
        "peak_mb": max(r["peak_mb"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaio-plan-bench-") as tmp:
        folder = Path(tmp)
        (folder / "train.py").write_text("print('hello')\n")
        small = write_manifest(folder, 1)
        large = write_manifest(folder, args.cells)
        one = best_of(small, args.repeat)
        many = best_of(large, args.repeat)
    n = int(large.stem.split("-")[1])
    print(f"{'manifest':<14}{'wall s':>9}{'in-process s':>15}{'peak MB':>10}")
    print(f"{'1 cell':<14}{one['wall_s']:>9.3f}{one['inside_s']:>15.3f}{one['peak_mb']:>10.1f}")
    print(
        f"{f'{n:,} cells':<14}{many['wall_s']:>9.3f}{many['inside_s']:>15.3f}{many['peak_mb']:>10.1f}"
    )
    time_ratio = many["wall_s"] / one["wall_s"]
    memory_limit = 1.5 * one["peak_mb"] + 50
    print()
    print(
        f"wall time ratio: {time_ratio:.2f}x (target <= 4x): {'ok' if time_ratio <= 4 else 'OVER'}"
    )
    print(
        f"peak memory: {many['peak_mb']:.1f} MB vs limit 1.5 x {one['peak_mb']:.1f} + 50 = "
        f"{memory_limit:.1f} MB ({many['peak_mb'] / one['peak_mb']:.2f}x): "
        f"{'ok' if many['peak_mb'] <= memory_limit else 'OVER'}"
    )


if __name__ == "__main__":
    main()
