"""Packaging speed and memory: kaio_spec.packaging.build_package against `tar -cf - DIR | gzip -1`.

Generates a folder of about 250 MB (CSV text, random binary, many small source files), then, in
the same run and on the same warm page cache, packages it several ways, each in its own child
process so that its peak memory (VmHWM, sampled from /proc) is its own:

    kaio          build_package(DIR) and save() (what submit_job does), default settings
    kaio 1 core   the same with workers=1
    tar|gzip -1   tar -cf - DIR | gzip -1 > out   (peak: the larger of the two processes)
    tar czf       tar -czf out DIR                (gzip's default level 6, one core)

Prints wall time (best of --repeat), peak memory (VmHWM) and package size side by side, and ratios to
`tar | gzip -1`. Targets (issue 2): no slower than `tar | gzip -1`; peak memory under 100 MB.

    .venv/bin/python benchmarks/packaging.py [--size-mb 250] [--repeat 3] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")


def generate(root: Path, size_mb: int, seed: int = 0) -> int:
    """~60% CSV text, ~38% random binary, the rest small source files. Returns bytes written."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "blobs").mkdir(exist_ok=True)
    (root / "src").mkdir(exist_ok=True)
    total = 0
    csv_target = int(size_mb * 0.60) << 20
    n = 0
    while total < csv_target:
        rows = [
            f"{i},{rng.random():.6f},{rng.gauss(0, 1):.5f},{rng.randint(0, 99999)},{rng.choice(WORDS)}\n"
            for i in range(60_000)
        ]
        data = ("id,x,y,k,label\n" + "".join(rows)).encode()
        (root / "data" / f"part-{n:03d}.csv").write_bytes(data)
        total += len(data)
        n += 1
    bin_target = total + (int(size_mb * 0.38) << 20)
    n = 0
    while total < bin_target:
        data = rng.randbytes(8 << 20)
        (root / "blobs" / f"weights-{n:02d}.bin").write_bytes(data)
        total += len(data)
        n += 1
    for i in range(1500):
        body = "".join(
            f"def f{j}(x):\n    return x * {rng.randint(1, 9)} + {rng.random():.4f}\n"
            for j in range(20)
        )
        (root / "src" / f"module_{i:04d}.py").write_text(body)
        total += len(body)
    (root / "train.py").write_text("print('hello')\n")
    (root / "requirements.txt").write_text("numpy\n")
    return total


# Peak memory is VmHWM from /proc/<pid>/status, sampled until the process exits. Not ru_maxrss:
# Linux carries the pre-exec high-water mark of a forked child (a copy of this process) into it,
# so every child would report at least this process's own peak.


class PeakRss(threading.Thread):
    """Samples a process's VmHWM (its peak resident memory since exec) until it exits."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.path = f"/proc/{pid}/status"
        self.peak = 0
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                with open(self.path) as f:
                    match = re.search(r"VmHWM:\s+(\d+) kB", f.read())
            except OSError:
                return
            if match:
                self.peak = max(self.peak, int(match.group(1)) * 1024)
            time.sleep(0.005)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def run_measured(argv: list[str], **kwargs) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes, exit status) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, **kwargs)
    peak = PeakRss(proc.pid)
    # Reap only after the last sample: wait for the exit without reaping (WNOWAIT).
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    rss = peak.stop()
    proc.wait()
    return time.perf_counter() - start, rss, proc.returncode


def measure_kaio(folder: Path, out: Path, workers: int | None) -> tuple[float, int, int]:
    code = (
        "import sys\n"
        "from kaio_spec.packaging import build_package\n"
        "w = int(sys.argv[3]) or None\n"
        "with build_package(sys.argv[1], 'train.py', workers=w, tmp_dir=sys.argv[4]) as p:\n"
        "    p.save(sys.argv[2])\n"
    )
    argv = [sys.executable, "-c", code, str(folder), str(out), str(workers or 0), str(out.parent)]
    wall, rss, rc = run_measured(argv)
    if rc:
        raise SystemExit(f"build_package failed ({rc})")
    return wall, rss, out.stat().st_size


def measure_pipeline(folder: Path, out: Path) -> tuple[float, int, int]:
    start = time.perf_counter()
    with open(out, "wb") as f:
        tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(folder), "."], stdout=subprocess.PIPE)
        gz = subprocess.Popen(["gzip", "-1"], stdin=tar.stdout, stdout=f)
        tar.stdout.close()
        peaks = [PeakRss(tar.pid), PeakRss(gz.pid)]
        for proc, peak in zip((tar, gz), peaks, strict=True):
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            peak.stop()
            proc.wait()
    wall = time.perf_counter() - start
    rss = max(p.peak for p in peaks)
    return wall, rss, out.stat().st_size


def measure_tar_czf(folder: Path, out: Path) -> tuple[float, int, int]:
    wall, rss, rc = run_measured(["tar", "-czf", str(out), "-C", str(folder), "."])
    if rc:
        raise SystemExit("tar czf failed")
    return wall, rss, out.stat().st_size


def warm(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-mb", type=int, default=250)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, help="where to generate the folder (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated folder")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kaio-bench-"))
    folder = args.dir or work / "job"
    try:
        if folder.exists() and any(folder.iterdir()):
            total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            print(f"using {folder}: {total / 2**20:.0f} MB")
        else:
            t = time.perf_counter()
            total = generate(folder, args.size_mb)
            print(f"generated {folder}: {total / 2**20:.0f} MB in {time.perf_counter() - t:.1f} s")
        warm(folder)
        cases = {
            "kaio": lambda: measure_kaio(folder, work / "kaio.tar.gz", None),
            "kaio 1 core": lambda: measure_kaio(folder, work / "kaio1.tar.gz", 1),
            "tar|gzip -1": lambda: measure_pipeline(folder, work / "pipe.tar.gz"),
            "tar czf": lambda: measure_tar_czf(folder, work / "czf.tar.gz"),
        }
        results: dict[str, list[tuple[float, int, int]]] = {name: [] for name in cases}
        for _ in range(args.repeat):  # interleaved, so drift hits every case alike
            for name, fn in cases.items():
                results[name].append(fn())
        base_wall = min(r[0] for r in results["tar|gzip -1"])
        base_rss = max(r[1] for r in results["tar|gzip -1"])
        print(f"\ncores available: {len(os.sched_getaffinity(0))}; best of {args.repeat}\n")
        print(f"{'case':<14}{'wall s':>8}{'x pipe':>8}{'peak MB':>9}{'x pipe':>8}{'size MB':>9}")
        for name, rows in results.items():
            wall = min(r[0] for r in rows)
            rss = max(r[1] for r in rows)
            size = rows[0][2]
            print(
                f"{name:<14}{wall:>8.2f}{wall / base_wall:>8.2f}{rss / 2**20:>9.1f}"
                f"{rss / base_rss:>8.1f}{size / 2**20:>9.1f}"
            )
        kaio_wall = min(r[0] for r in results["kaio"])
        kaio_rss = max(r[1] for r in results["kaio"])
        print(
            f"\ntargets: no slower than tar|gzip -1: {'met' if kaio_wall <= base_wall else 'MISSED'}"
            f" ({kaio_wall / base_wall:.2f}x); peak under 100 MB: "
            f"{'met' if kaio_rss < 100 * 2**20 else 'MISSED'} ({kaio_rss / 2**20:.0f} MB)"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
