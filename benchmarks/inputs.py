"""A dataset as `inputs:` against the same data in the code folder: bytes sent and time to submit.

Starts a local platform of its own (benchmarks/apply.py's helpers), writes a dataset of random
bytes (incompressible: the worst case for packaging; --mb, default 1024: the issue's 1 GB, in 4
files) and a one-job code folder, and measures through a counting proxy (tests/faultproxy.py),
each way as its own tenant: a first apply, a second apply with nothing changed, and an apply after an edit of
train.py. The ways:

1. inputs: the data in ./data, named by `inputs: {train: ./data}` (stored once per content);
2. in the folder: the data inside the job's folder, packaged with the code (no inputs);
3. no data: the same job without any data (the baseline that target 2 compares with).

Targets (issue 16): the apply after an edit sends under 1 MB with inputs, and takes under 2x the
time of an apply with no data at all.

    .venv/bin/python benchmarks/inputs.py [--mb 1024]   # about 4 GB of free disk under $TMPDIR
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(_HERE).parent
TRAIN = "import os\nprint(sorted(os.listdir('.')))\n"
MANIFEST = """\
version: 1
name: bench-{way}
jobs:
  train:
    directory: ./code
    entrypoint: train.py
{inputs}"""


def _apply_helpers():
    spec = importlib.util.spec_from_file_location("bench_apply", os.path.join(_HERE, "apply.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_way(root: Path, way: str, data: Path) -> Path:
    folder = root / way
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "train.py").write_text(TRAIN)
    inputs = ""
    if way == "inputs":
        (folder / "data").symlink_to(data)  # the same bytes: hashed once per file and process
        inputs = "    inputs: {train: ./data}\n"
    elif way == "in-folder":
        shutil.copytree(data, folder / "code" / "data")
    manifest = folder / "kaio.yaml"
    manifest.write_text(MANIFEST.format(way=way, inputs=inputs))
    return manifest


def one_apply(url: str, key: str, manifest: Path) -> tuple[float, int, int]:
    """(seconds, bytes sent, requests) of one `kaio_spec.apply(detach=True)` via the proxy."""
    from faultproxy import FaultProxy

    import kaio_spec
    from kaio_spec import Client

    with FaultProxy(url) as proxy:
        client = Client(proxy.url).login(key)
        start = time.perf_counter()
        result = kaio_spec.apply(manifest, client=client, detach=True)
        seconds = time.perf_counter() - start
        sent = list(proxy.sent)
    if not result.ok:
        raise SystemExit(f"{manifest}: apply failed: {result}")
    return seconds, sum(size for _, _, size in sent), len(sent)


def measure(url: str, key: str, manifest: Path) -> dict[str, tuple[float, int, int]]:
    rows = {"first": one_apply(url, key, manifest)}
    rows["unchanged"] = one_apply(url, key, manifest)
    train = manifest.parent / "code" / "train.py"
    train.write_text(train.read_text() + "# edited\n")
    rows["after edit"] = one_apply(url, key, manifest)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--mb",
        "--data-mb",  # its former name
        dest="data_mb",
        type=int,
        default=1024,
        help="the dataset's size in MB (default 1024: the issue's 1 GB)",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    helpers = _apply_helpers()
    root = Path(tempfile.mkdtemp(prefix="kaio-bench-inputs-"))
    proc = None
    try:
        data = root / "dataset"
        data.mkdir()
        for i in range(4):
            (data / f"part-{i}.bin").write_bytes(os.urandom(args.data_mb * 1024 * 1024 // 4))
        (root / "server").mkdir()
        proc, url = helpers.start_server(root / "server" / "data", 4)
        results = {}
        for way in ("inputs", "in-folder", "no-data"):
            key = helpers.add_user(root / "server" / "data", f"bench-{way}")
            results[way] = measure(url, key, write_way(root, way, data))
        report(results, args.data_mb)
    finally:
        helpers.stop_server(proc)
        shutil.rmtree(root, ignore_errors=True)


def report(results: dict, data_mb: int) -> None:
    print(f"dataset: {data_mb} MB of random bytes in 4 files; one job; apply(detach=True)")
    print(f"{'way':<10} {'apply':<11} {'seconds':>8} {'MB sent':>9} {'requests':>9}")
    for way, rows in results.items():
        for step, (seconds, sent, requests) in rows.items():
            print(f"{way:<10} {step:<11} {seconds:8.2f} {sent / 1e6:9.2f} {requests:9d}")
    base = results["no-data"]["after edit"][0]
    for way in ("inputs", "in-folder"):
        seconds, sent, _ = results[way]["after edit"]
        print(
            f"after an edit, {way}: {sent:,} bytes sent, {seconds / base:.2f}x the time of "
            "the same apply with no data"
        )


if __name__ == "__main__":
    main()
