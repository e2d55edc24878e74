"""Submitting a sweep: `kaio apply` against the seed README's loop, and requests per polling round.

Starts a local platform of its own (a temporary data dir, a free port), writes one job folder
holding a 20 MB data file (random bytes: incompressible, the worst case for packaging) and a
100-cell manifest over it, then measures, each as its own tenant:

1. the loop the seed README has users write: `Client.submit_job(directory=..., ...)` 100 times
   (each call packages the folder and uploads it);
2. `kaio_spec.apply(manifest, detach=True)`: the executor submits the same 100 jobs (the folder
   compressed once and uploaded once as a base package, then each job's params.json alone as its
   overlay: docs/base-packages.md) and returns once all are submitted; settings.max_parallel is
   100 so that submission is what is measured;
3. the executor following those 100 jobs to the end through a counting proxy
   (tests/faultproxy.py): polling rounds against GET /jobs and GET /jobs/status requests.

Prints the two submission times side by side, their ratio, and the requests per polling round.
Targets (issue 6): submission at least 10x faster than the loop; one request per polling round.

    .venv/bin/python benchmarks/apply.py [--cells 100] [--data-mb 20] [--max-instances 2]
"""

from __future__ import annotations

# A script's folder comes first on sys.path: benchmarks/packaging.py would shadow the
# `packaging` distribution kaio_spec imports. Drop the folder before importing anything else.
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import requests  # noqa: E402

REPO = Path(_HERE).parent

MANIFEST = """\
version: 1
name: bench
settings:
  max_parallel: {cells}
  poll_seconds: 2
defaults:
  directory: ./job
jobs:
  train:
    name: "cell-{{{{ matrix.i }}}}"
    entrypoint: train.py
    params: {{i: "{{{{ matrix.i }}}}"}}
    matrix:
      i: [{values}]
"""

TRAIN = "import json\nprint(json.load(open('params.json')))\n"


def start_server(data_dir: Path, max_instances: int) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "kaio_spec.cli", "server", "--host", "127.0.0.1", "--port", "0"]
    cmd += ["--data-dir", str(data_dir), "--max-instances", str(max_instances)]
    log = open(data_dir.parent / "server.log", "wb")  # noqa: SIM115 - the server owns it
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            info = json.loads((data_dir / "server.json").read_text())
            if info.get("pid") == proc.pid:
                url = f"http://127.0.0.1:{info['port']}"
                if requests.get(url + "/healthz", timeout=2).ok:
                    return proc, url
        except (OSError, ValueError, requests.RequestException):
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the local platform did not start")


def stop_server(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def add_user(data_dir: Path, name: str) -> str:
    from kaio_spec.server.store import Store

    store = Store(data_dir)
    try:
        return store.add_user(name)[1]
    finally:
        store.close()


def stop_all(client) -> None:
    """Stop what a measurement left queued or running, so the next one has the machine."""
    for job in client.get_jobs()["jobs"]:
        if job["status"] in ("Pending", "InProgress"):
            with contextlib.suppress(requests.HTTPError):
                client.stop_job(job["unique_job_name"])


def submit_loop(client, folder: Path, cells: int) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(cells):
        client.submit_job(
            directory=str(folder / "job"),
            job_name=f"loop-cell-{i}",
            entrypoint="train.py",
            env={"CELL": str(i)},
        )
    return time.perf_counter() - start, time.process_time() - cpu


def submit_apply(client, manifest: Path) -> tuple[float, float, object]:
    import kaio_spec

    start, cpu = time.perf_counter(), time.process_time()
    result = kaio_spec.apply(manifest, client=client, detach=True)
    return time.perf_counter() - start, time.process_time() - cpu, result


def follow(url: str, key: str, manifest: Path) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from faultproxy import FaultProxy

    import kaio_spec
    from kaio_spec import Client

    with FaultProxy(url) as proxy:
        client = Client(proxy.url).login(key)
        proxy.clear()
        result = kaio_spec.apply(manifest, client=client)
        seen = list(proxy.seen)
    lists = sum(1 for m, p in seen if (m, p) == ("GET", "/jobs"))
    status = sum(1 for m, p in seen if m == "GET" and p.startswith("/jobs/status/"))
    downloads = sum(1 for m, p in seen if m == "GET" and p.startswith("/jobs/download/"))
    return {
        "ok": result.ok,
        "polls": result.polls,
        "list_requests": lists,
        "status_requests": status,
        "downloads": downloads,
        "requests": len(seen),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100)
    ap.add_argument("--data-mb", type=int, default=20)
    ap.add_argument("--max-instances", type=int, default=2)
    ap.add_argument("--skip-follow", action="store_true", help="measure submission only")
    args = ap.parse_args()

    from kaio_spec import Client

    work = Path(tempfile.mkdtemp(prefix="kaio-bench-apply-"))
    proc = None
    try:
        job = work / "project" / "job"
        job.mkdir(parents=True)
        (job / "train.py").write_text(TRAIN)
        (job / "data.bin").write_bytes(os.urandom(args.data_mb * 1024 * 1024))
        manifest = work / "project" / "kaio.yaml"
        values = ", ".join(str(i) for i in range(args.cells))
        manifest.write_text(MANIFEST.format(cells=args.cells, values=values))
        data_dir = work / "server"
        data_dir.mkdir()
        proc, url = start_server(data_dir, args.max_instances)
        print(f"{args.cells} cells over one folder with a {args.data_mb} MB data file; {url}")

        loop_client = Client(url).login(add_user(data_dir, "loop"))
        loop_s, loop_cpu = submit_loop(loop_client, work / "project", args.cells)
        print(
            f"  Client.submit_job loop: {loop_s:7.2f} s to submit {args.cells} jobs "
            f"(client CPU {loop_cpu:6.2f} s)"
        )
        stop_all(loop_client)

        apply_key = add_user(data_dir, "apply")
        apply_client = Client(url).login(apply_key)
        apply_s, apply_cpu, result = submit_apply(apply_client, manifest)
        submitted = sum(1 for j in result.jobs if j.unique_job_names)
        print(
            f"  kaio apply (executor):  {apply_s:7.2f} s to submit {submitted} jobs "
            f"(client CPU {apply_cpu:6.2f} s)"
        )
        print(
            f"  speed-up: {loop_s / apply_s:.1f}x wall clock (target: at least 10x), "
            f"{loop_cpu / apply_cpu:.1f}x client CPU"
        )

        if not args.skip_follow:
            f = follow(url, apply_key, manifest)
            rounds = f["polls"] - 1  # the first listing is the plan's comparison
            # Polling requests: the rounds' GET /jobs, and any status request not made by a
            # download (each download asks for its job once, to write its marker).
            polling = (f["list_requests"] - 1) + (f["status_requests"] - f["downloads"])
            print(
                f"  following {args.cells} jobs to the end ({'all completed' if f['ok'] else 'NOT all completed'}): "
                f"{rounds} polling rounds, {f['list_requests']} GET /jobs, "
                f"{f['status_requests']} GET /jobs/status (for {f['downloads']} downloads), "
                f"{f['requests']} requests in all"
            )
            print(f"  requests per polling round: {polling / max(rounds, 1):.2f} (target: 1)")
    finally:
        stop_server(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
