"""`kaio validate` of a 1,000-cell manifest against a 1-cell one, in the same run.

Since issue 13 validate renders every template of every cell (what `kaio plan --offline` checks,
but the folders' hashing), so its cost grows with the sweep. The manifests are benchmarks/plan.py's
(a name template and three env templates per cell). Each is validated with `kaio validate FILE` in
a fresh Python process, as pre-commit runs it: imports, loading and checks all counted. Prints the
best wall time of --repeat runs, and `kaio plan --offline` of the same large manifest beside it
(which also hashes the folder). Target: the 1,000-cell validation under 1 s.

    .venv/bin/python benchmarks/validate.py [--cells 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from plan import write_manifest  # benchmarks/plan.py: the same manifests


def wall_time(*args: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "kaio_spec.cli", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        best = min(best, time.perf_counter() - start)
        if done.returncode != 0:
            sys.exit(f"kaio {' '.join(args)} failed:\n{done.stderr}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaio-validate-bench-") as tmp:
        folder = Path(tmp)
        (folder / "train.py").write_text("print('hello')\n")
        small = write_manifest(folder, 1)
        large = write_manifest(folder, args.cells)
        one = wall_time("validate", str(small), repeat=args.repeat)
        many = wall_time("validate", str(large), repeat=args.repeat)
        planned = wall_time("plan", "--offline", "-o", "json", str(large), repeat=args.repeat)
    n = int(large.stem.split("-")[1])
    print(f"{'command':<32}{'wall s':>9}")
    print(f"{'kaio validate, 1 cell':<32}{one:>9.3f}")
    print(f"{f'kaio validate, {n:,} cells':<32}{many:>9.3f}")
    print(f"{f'kaio plan --offline, {n:,} cells':<32}{planned:>9.3f}")
    print()
    print(f"validate {n:,} cells / 1 cell: {many / one:.2f}x")
    print(f"validate {n:,} cells: {many:.3f} s (target < 1 s): {'ok' if many < 1 else 'OVER'}")


if __name__ == "__main__":
    main()
