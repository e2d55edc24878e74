"""Unpacking speed: storage.unpack_package (every member written by descriptor beneath the
folder, unpack.py) against tarfile's extractall with the data filter (what it replaced), on the
same package in the same run.

Two packages: many small files in a few folders (source trees, the common case) and a few large
files (data). Prints the best of --repeat interleaved rounds for each and the ratio new / old.

    .venv/bin/python benchmarks/unpack.py [--files 5000] [--large-mb 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

# A script's folder comes first on sys.path: benchmarks/packaging.py would shadow the
# `packaging` distribution the project imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

from kaio_spec.server import storage  # noqa: E402


def small_files(count: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tf:
        script = b"print('hi')\n"
        info = tarfile.TarInfo("train.py")
        info.size = len(script)
        tf.addfile(info, io.BytesIO(script))
        for i in range(count):
            data = os.urandom(512)
            info = tarfile.TarInfo(f"src/mod{i % 50}/file{i}.py")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def large_files(total_mb: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tf:
        info = tarfile.TarInfo("train.py")
        tf.addfile(info, io.BytesIO(b""))
        for i in range(4):
            data = os.urandom(total_mb * 1024**2 // 4)
            info = tarfile.TarInfo(f"data/part{i}.bin")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def old_way(path: Path, dest: Path) -> None:
    with tarfile.open(path, "r:gz", copybufsize=1024 * 1024) as tf:
        tf.extractall(dest, members=(storage.check_member(m) or m for m in tf), filter="data")


def new_way(path: Path, dest: Path) -> None:
    storage.unpack_package(path, dest, "train.py", 10**12)


def timed(fn, path: Path, work: Path) -> float:
    dest = work / "dest"
    t0 = time.perf_counter()
    fn(path, dest)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(dest)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--large-mb", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        work = Path(tmp)
        for label, data in (
            (f"{args.files} small files", small_files(args.files)),
            (f"4 files, {args.large_mb} MB", large_files(args.large_mb)),
        ):
            path = work / "package.tar.gz"
            path.write_bytes(data)
            # Interleaved rounds: the machine's load drifts alike for both.
            rounds = [
                (timed(old_way, path, work), timed(new_way, path, work)) for _ in range(args.repeat)
            ]
            old = min(r[0] for r in rounds)
            new = min(r[1] for r in rounds)
            print(
                f"{label:>22}: extractall(data) {old:7.3f} s   unpack.Tree {new:7.3f} s   "
                f"ratio {new / old:.2f}"
            )


if __name__ == "__main__":
    main()
