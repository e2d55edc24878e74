"""Packaging speed and memory: kaio_spec.packaging against `tar -cf - DIR | gzip -1` and bare tar.

Generates three folders of about --size-mb each, then, in the same run and on the same warm page
cache, packages each several ways, each in its own child process so that its peak memory (VmHWM,
sampled from /proc) is its own:

    mixed        ~60% CSV text, ~38% random binary, 1500 small sources
    compressed   already-compressed files: npz (zip of .npy), gzip'd text, random .bin
    text         CSV text and sources only

    kaio          build_package(DIR): deflated where a sample shows it pays, stored elsewhere
    kaio today    build_package(DIR) as it was before issue 19 (every byte deflated by zlib, then
                  uploaded after): packaging.py from git, --today-ref
    tar|gzip -1   tar -cf - DIR | gzip -1 > out   (peak: the larger of the two processes)
    tar           tar -cf out DIR (reading the folder, no compression)

kaio's figure is the package made, on disk, ready to upload (the folder's compressed part; the
last few bytes stay in memory until sent). Then, for the mixed folder:

    ingest        the server's check-and-unpack (storage.unpack_package) of kaio's and today's
                  package: a stored block must cost it no more than a deflated one
    submit_job    Client.submit_job to a local platform started here (package + upload + the
                  server's ingest, which answers the upload), in a child process: its wall time
                  against tar|gzip -1 alone, its peak memory, and the CPU time of client and
                  server together

Prints wall time (best of --repeat), peak memory and size side by side, ratios to `tar | gzip -1`,
and the targets of issue 19.

    .venv/bin/python benchmarks/packaging.py [--size-mb 250] [--repeat 2] [--keep]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from functools import partial
from pathlib import Path

# The last commit whose packaging deflated every byte with zlib (the "kaio today" of issue 19).
TODAY_REF = "111087a"
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")


def generate(root: Path, size_mb: int, seed: int = 0, binary_share: float = 0.38) -> int:
    """~60% CSV text, `binary_share` random binary (the rest CSV too), then 1500 small source
    files. Returns bytes written."""
    rng = random.Random(seed)
    for sub in ("data", "blobs", "src"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    total = 0
    csv_target = int(size_mb * (1 - binary_share - 0.02)) << 20
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
    bin_target = total + (int(size_mb * binary_share) << 20)
    n = 0
    while total < bin_target:
        data = rng.randbytes(8 << 20)
        (root / "blobs" / f"weights-{n:02d}.bin").write_bytes(data)
        total += len(data)
        n += 1
    return total + write_sources(root, rng)


def write_sources(root: Path, rng: random.Random) -> int:
    total = 0
    (root / "src").mkdir(parents=True, exist_ok=True)
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


def generate_compressed(root: Path, size_mb: int, seed: int = 1) -> int:
    """Already-compressed files: ~40% .npz (a zip of .npy arrays of random floats), ~20% .gz
    (gzip'd text), the rest random .bin (checkpoints, images); then the small sources."""
    rng = random.Random(seed)
    for sub in ("arrays", "logs", "ckpt"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    target, total, n = size_mb << 20, 0, 0
    while total < target * 0.4:
        npy = (
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1048576,), }"
        )
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            z.writestr("arr_0.npy", npy.ljust(128, b" ") + rng.randbytes(8 << 20))
        (root / "arrays" / f"a{n:03d}.npz").write_bytes(buf.getvalue())
        total, n = total + len(buf.getvalue()), n + 1
    while total < target * 0.6:
        text = base64.b64encode(rng.randbytes(6 << 20))  # 8 MB of text that deflates to ~6
        data = gzip.compress(text, 1, mtime=0)
        (root / "logs" / f"l{n:03d}.log.gz").write_bytes(data)
        total, n = total + len(data), n + 1
    while total < target:
        data = rng.randbytes(8 << 20)
        (root / "ckpt" / f"c{n:03d}.bin").write_bytes(data)
        total, n = total + len(data), n + 1
    return total + write_sources(root, rng)


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


def measure_kaio(folder: Path, out: Path, module: Path | None) -> tuple[float, int, int]:
    """build_package of `folder` in a child, from kaio_spec.packaging or from the packaging.py
    file `module` (today's: see today_module)."""
    code = (
        "import importlib.util, shutil, sys\n"
        "if sys.argv[4]:\n"
        "    spec = importlib.util.spec_from_file_location('packaging_today', sys.argv[4])\n"
        "    m = sys.modules['packaging_today'] = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(m)\n"
        "else:\n"
        "    import kaio_spec.packaging as m\n"
        "with m.build_package(sys.argv[1], 'train.py', tmp_dir=sys.argv[3]) as p:\n"
        "    shutil.move(p.path, sys.argv[2])\n"
        "    open(sys.argv[2], 'ab').write(p._tail)\n"
    )
    argv = [sys.executable, "-c", code, str(folder), str(out), str(out.parent), str(module or "")]
    wall, rss, rc = run_measured(argv)
    if rc:
        raise SystemExit(f"build_package failed ({rc})")
    return wall, rss, out.stat().st_size


def today_module(ref: str, work: Path) -> Path:
    """kaio_spec/packaging.py as it was at `ref` (before issue 19: every byte deflated by zlib),
    written to a file that measure_kaio loads."""
    repo = Path(__file__).resolve().parent.parent
    text = subprocess.run(
        ["git", "-C", str(repo), "show", f"{ref}:kaio_spec/packaging.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = work / "packaging_today.py"
    path.write_text(text)
    return path


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


def measure_tar(folder: Path, out: Path) -> tuple[float, int, int]:
    wall, rss, rc = run_measured(["tar", "-cf", str(out), "-C", str(folder), "."])
    if rc:
        raise SystemExit("tar failed")
    return wall, rss, out.stat().st_size


def measure_ingest(package: Path, dest: Path) -> tuple[float, int, int]:
    """The server's check and unpack of a package (what answers its upload), in a child."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from kaio_spec.server import storage\n"
        "storage.unpack_package(Path(sys.argv[1]), Path(sys.argv[2]), 'train.py', 1 << 40)\n"
    )
    wall, rss, rc = run_measured([sys.executable, "-c", code, str(package), str(dest)])
    shutil.rmtree(dest, ignore_errors=True)
    if rc:
        raise SystemExit("unpack_package failed")
    return wall, rss, package.stat().st_size


def measure_inflate(package: Path) -> tuple[float, int, int]:
    """Decoding alone: `gzip -dc package > /dev/null` (stored blocks against deflated ones)."""
    with open(os.devnull, "wb") as null:
        wall, rss, rc = run_measured(["gzip", "-dc", str(package)], stdout=null)
    if rc:
        raise SystemExit("gzip -dc failed")
    return wall, rss, package.stat().st_size


def measure_submit(folder: Path, url: str, key: str) -> tuple[float, int, int]:
    """Client.submit_job of `folder` (package, upload, ingest) in a child; the job is stopped
    right after, so that it does not compete with the next measurement."""
    code = (
        "import sys, warnings\n"
        "from kaio_spec import Client\n"
        "warnings.simplefilter('ignore')\n"
        "c = Client(sys.argv[2]).login(sys.argv[3])\n"
        "r = c.submit_job(directory=sys.argv[1], job_name='bench', entrypoint='train.py')\n"
        "c.stop_job(r['unique_job_name'])\n"
        "print(r['package_bytes'])\n"
    )
    argv = [sys.executable, "-c", code, str(folder), url, key]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    peak = PeakRss(proc.pid)
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    rss = peak.stop()
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit("submit_job failed")
    return time.perf_counter() - start, rss, int(out.split()[-1])


def cpu_seconds(pid: int) -> float:
    """A running process's CPU time so far (user + system), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def warm(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass


Row = tuple[float, int, int, float]  # wall seconds, peak bytes, package bytes, CPU seconds


def with_cpu(fn) -> Row:
    """fn()'s (wall, peak, size) and the CPU time (user + system) of the children it reaped.
    Each case starts with nothing left to write back: a case writes up to 410 MB (submit_job:
    the package and its unpacked files), which the kernel writing back during the next case
    would charge to that one."""
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, rss, size = fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, rss, size, cpu


def best(rows: list[Row]) -> Row:
    return min(r[0] for r in rows), max(r[1] for r in rows), rows[0][2], min(r[3] for r in rows)


def measure_folder(name: str, folder: Path, work: Path, repeat: int, today: Path) -> dict[str, Row]:
    """Each way of packaging `folder`, interleaved `repeat` times (drift hits every case alike)."""
    warm(folder)
    cases = {
        "kaio": lambda: measure_kaio(folder, work / f"{name}-kaio.tar.gz", None),
        "kaio today": lambda: measure_kaio(folder, work / f"{name}-today.tar.gz", today),
        "tar|gzip -1": lambda: measure_pipeline(folder, work / f"{name}-pipe.tar.gz"),
        "tar": lambda: measure_tar(folder, work / f"{name}.tar"),
    }
    rows: dict[str, list[Row]] = {case: [] for case in cases}
    for _ in range(repeat):
        for case, fn in cases.items():
            rows[case].append(with_cpu(fn))
    return {case: best(r) for case, r in rows.items()}


def print_table(title: str, results: dict[str, Row], base: Row) -> None:
    print(f"\n{title}")
    print(f"  {'case':<22}{'wall s':>8}{'x pipe':>8}{'CPU s':>8}{'peak MB':>9}{'size MB':>9}")
    for case, (wall, rss, size, cpu) in results.items():
        print(
            f"  {case:<22}{wall:>8.2f}{wall / base[0]:>8.2f}{cpu:>8.2f}{rss / 2**20:>9.1f}"
            f"{size / 2**20:>9.1f}"
        )


def target(label: str, ok: bool, figure: str) -> None:
    print(f"  {'met   ' if ok else 'MISSED'} {label}: {figure}")


def measure_submit_and_ingest(folder: Path, work: Path, repeat: int) -> dict[str, Row]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from apply import add_user, start_server

    data_dir = work / "server"
    data_dir.mkdir()
    proc, url = start_server(data_dir, 1)
    try:
        key = add_user(data_dir, "bench")
        rows: dict[str, list[Row]] = {
            "ingest kaio": [],
            "ingest today": [],
            "inflate kaio": [],
            "inflate today": [],
            "submit_job": [],
        }
        for i in range(repeat):
            # Each pair in turn first: the first of a pair pays for the other's writeback.
            for which in ("kaio", "today") if i % 2 == 0 else ("today", "kaio"):
                package = work / f"mixed-{which}.tar.gz"
                unpacked = work / f"unpacked-{which}"
                rows[f"inflate {which}"].append(with_cpu(partial(measure_inflate, package)))
                rows[f"ingest {which}"].append(with_cpu(partial(measure_ingest, package, unpacked)))
            server_cpu = cpu_seconds(proc.pid)
            row = with_cpu(lambda: measure_submit(folder, url, key))
            # The client's CPU and the server's (receiving and ingesting it) together.
            rows["submit_job"].append((*row[:3], row[3] + cpu_seconds(proc.pid) - server_cpu))
        return {case: best(r) for case, r in rows.items()}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-mb", type=int, default=250)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dir", type=Path, help="where to work (default: a temp dir in /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the generated folders")
    ap.add_argument(
        "--today-ref",
        default=TODAY_REF,
        help="the git commit whose packaging.py is 'kaio today' (default: the last before issue 19)",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kaio-bench-", dir=args.dir or "/var/tmp"))
    makers = {
        "mixed": lambda root: generate(root, args.size_mb),
        "compressed": lambda root: generate_compressed(root, args.size_mb),
        "text": lambda root: generate(root, args.size_mb, binary_share=0.0),
    }
    try:
        today = today_module(args.today_ref, work)
        results = {}
        for name, make in makers.items():
            t = time.perf_counter()
            total = make(work / name)
            print(f"generated {name}: {total / 2**20:.0f} MB in {time.perf_counter() - t:.1f} s")
            results[name] = measure_folder(name, work / name, work, args.repeat, today)
        extra = measure_submit_and_ingest(work / "mixed", work, args.repeat)
        report(results, extra, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


def report(results: dict[str, dict[str, Row]], extra: dict[str, Row], repeat: int) -> None:
    print(f"\ncores available: {len(os.sched_getaffinity(0))}; best of {repeat}")
    for name, rows in results.items():
        shown = dict(rows)
        if name == "mixed":
            shown.update(extra)
        print_table(name, shown, rows["tar|gzip -1"])
    print(
        "\ntargets (issue 19): judged on wall time; CPU time beside it, steadier on a shared machine"
    )
    mixed, comp, text = results["mixed"], results["compressed"], results["text"]

    def ratio(row, base) -> str:
        return f"{row[0] / base[0]:.2f}x (CPU {row[3] / base[3]:.2f}x)"

    def size(rows) -> float:
        return rows["kaio"][2] / rows["kaio today"][2]

    pipe = mixed["tar|gzip -1"]
    target(
        "mixed <= 0.25x tar|gzip -1", mixed["kaio"][0] <= 0.25 * pipe[0], ratio(mixed["kaio"], pipe)
    )
    target("mixed size no more than 2% over today's", size(mixed) <= 1.02, f"{size(mixed):.3f}x")
    cpipe = comp["tar|gzip -1"]
    target(
        "compressed <= 0.1x tar|gzip -1",
        comp["kaio"][0] <= 0.1 * cpipe[0],
        ratio(comp["kaio"], cpipe),
    )
    print(f"         compressed against bare tar: {ratio(comp['kaio'], comp['tar'])}")
    today = text["kaio today"]
    target(
        "text no slower than today (2%)",
        text["kaio"][0] <= 1.02 * today[0],
        ratio(text["kaio"], today),
    )
    target("text no larger than today (2%)", size(text) <= 1.02, f"{size(text):.3f}x")
    sub = extra["submit_job"]
    target("submit_job mixed <= 0.5x tar|gzip -1", sub[0] <= 0.5 * pipe[0], ratio(sub, pipe))
    ingest, ingest_today = extra["ingest kaio"], extra["ingest today"]
    target(
        "ingest no dearer than today's (CPU)",
        ingest[3] <= 1.02 * ingest_today[3],
        ratio(ingest, ingest_today),
    )
    print(
        f"         decoding alone (gzip -dc): {ratio(extra['inflate kaio'], extra['inflate today'])}"
    )
    peak = max(mixed["kaio"][1], comp["kaio"][1], text["kaio"][1], sub[1])
    target("peak client memory < 100 MB", peak < 100 * 2**20, f"{peak / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
