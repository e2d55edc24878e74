"""Start-up cost: `kaio --help` and `kaio validate examples/specs/sweep.yaml` beside `python -c pass`.

Each command runs in a fresh process, as a user (or pre-commit, on every commit) meets it; the
figure is the median wall time of --repeat runs, printed beside the bare interpreter's start-up
measured in the same run, and the ratio to it. Targets (issue 14): --help <= 0.15 s and validate
<= 0.25 s on the project's machine. To see where the time goes:
`python -X importtime -m kaio_spec.cli --help 2>&1 | sort -t'|' -k2 -n | tail`.

    .venv/bin/python benchmarks/imports.py [--repeat 11]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "examples" / "specs" / "sweep.yaml"


def kaio_command() -> list[str]:
    """The installed `kaio` script beside this interpreter (what a user runs), else `-m`."""
    script = Path(sys.executable).parent / "kaio"
    return [str(script)] if script.exists() else [sys.executable, "-m", "kaio_spec.cli"]


# As an installed package runs: from compiled bytecode (pip writes it at install). A shell with
# PYTHONDONTWRITEBYTECODE set would otherwise compile every module of ours at every start
# (~50 ms here), which no user pays.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def median_wall(argv: list[str], repeat: int) -> float:
    times = []
    subprocess.run(argv, capture_output=True, check=False, cwd=ROOT, env=ENV)  # bytecode written
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT, env=ENV)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args()
    kaio = kaio_command()
    cases = [
        ("python -c pass (baseline)", [sys.executable, "-c", "pass"], None),
        ("kaio --help", [*kaio, "--help"], 0.15),
        ("kaio validate sweep.yaml", [*kaio, "validate", str(SWEEP)], 0.25),
        ("import kaio_spec", [sys.executable, "-c", "import kaio_spec"], None),
    ]
    print(f"median of {args.repeat} runs each, {os.cpu_count()} CPUs, {sys.version.split()[0]}")
    baseline = None
    for label, argv, target in cases:
        wall = median_wall(argv, args.repeat)
        baseline = baseline or wall
        verdict = (
            "" if target is None else ("  ok" if wall <= target else "  OVER") + f" <= {target}"
        )
        print(f"{label:28} {wall:7.3f} s  {wall / baseline:5.1f}x baseline{verdict}")


if __name__ == "__main__":
    main()
