"""`kaio server --backend ray` on a 3-node Ray cluster on 127.0.0.1, next to the local runner.

    .venv/bin/python benchmarks/ray.py [--batch 20] [--instances 4]

Needs the `ray` extra (pip install -e '.[ray]'). Prints, in one run:
  1. the cluster's start time (head and workers up, its job API answering) and its memory (the
     RSS of all its processes, idle);
  2. a batch of trivial jobs submitted at once to each platform: the wall time from the first
     submission to the last job's end, per job, and each job's own latency (submitted to ended),
     Ray's beside the local runner's, with their ratio;
  3. one job of N instances on each, end to end;
  4. where a Ray job's start goes (medians over the batch): from the platform starting it (out
     of its queue) to its driver running, to its placement group placed, to an instance running;
  5. CPU seconds per job of the batch (load-independent): the server's (its job processes
     included, once ended) and the cluster's: every process the cluster started (workers, job
     supervisors, drivers, instances), exited ones included, from a cpuacct cgroup of its own
     (cgroup v1; where none can be made, only the cluster's live processes are counted). The
     local column's cluster figure is what the idle cluster costs meanwhile.
Target (issue 17): under 1 s per job on the cluster for the batch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import psutil

# This file is named ray.py: its own folder off the path, so that `import ray` finds Ray.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "tests"))
import ray_cluster  # noqa: E402
from conftest import ServerProcess  # noqa: E402
from server_support import FINAL, Api  # noqa: E402
from support import poll  # noqa: E402

SCRIPT = (
    "import json, os\njson.dump({'host': os.environ['SM_CURRENT_HOST']}, open('out.json', 'w'))\n"
)

WAIT_S = 900.0  # a hang detector: on a loaded machine a Ray job's processes start slowly


def ended(job: dict) -> bool:
    return job["status"] in FINAL


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def cpu_seconds(pids) -> float:
    """CPU time of these processes so far, with their children's that they reaped."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


class ClusterCpu:
    """The CPU seconds of the cluster started in `started_in()`: its cpuacct cgroup's (every
    process it ever started, exited ones too), or its live processes' where none can be made."""

    def __init__(self):
        self.group: Path | None = CPUACCT / f"kaio-bench-ray-{os.getpid()}"
        self.cluster = None

    @contextlib.contextmanager
    def started_in(self):
        home = next(
            (
                line.split(":", 2)[2].strip()
                for line in Path("/proc/self/cgroup").read_text().splitlines()
                if line.split(":")[1] == "cpuacct"
            ),
            None,
        )
        try:
            self.group.mkdir()
            (self.group / "cgroup.procs").write_text(str(os.getpid()))
        except (OSError, TypeError):  # no cgroup v1 cpuacct, or not ours to write
            self.remove()
            self.group = None
        try:
            yield
        finally:
            if self.group is not None:  # this process back home: only the cluster stays in it
                (CPUACCT / home.lstrip("/") / "cgroup.procs").write_text(str(os.getpid()))

    def seconds(self) -> float:
        if self.group is None:
            return cpu_seconds(self.cluster.pids())
        return int((self.group / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        """The group, once the cluster's last processes have left it (they exit a moment
        after the cluster's shutdown)."""
        for _ in range(50):
            if self.group is None or not self.group.exists():
                return
            with contextlib.suppress(OSError):
                self.group.rmdir()
            time.sleep(0.2)


def run_batch(api: Api, count: int, instances: int = 1, cpu=lambda: {}) -> dict:
    """Submit `count` jobs at once, wait for all; wall time, each job's latency, and CPU
    seconds used meanwhile by each group of processes `cpu()` measures."""
    cpu0 = cpu()
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        names = list(
            pool.map(
                lambda i: api.submit(
                    {"train.py": SCRIPT}, job_name=f"b{i}", instance_count=instances
                ),
                range(count),
            )
        )
        jobs = list(pool.map(lambda n: poll(lambda: api.job(n), ended, n, WAIT_S), names))
    wall = time.monotonic() - t0
    bad = [j["unique_job_name"] for j in jobs if j["status"] != "Completed"]
    if bad:
        raise SystemExit(f"jobs did not complete: {bad}")
    latency = [epoch(j["end_time"]) - epoch(j["timestamp"]) for j in jobs]
    used = {k: v - cpu0[k] for k, v in cpu().items()}
    return {"wall": wall, "latency": latency, "names": names, "cpu": used}


def ray_phases(data_dir: Path, names: list[str], started: dict[str, float]) -> dict:
    """Medians of where each Ray job's start went, from its driver's result.json: from the
    platform's start (out of its queue, InProgress) to the Ray job's driver running (Ray's
    job supervisor and the driver's process), to its placement group placed, to its first
    instance running (a Ray worker process started for the task)."""
    phases: dict[str, list[float]] = {"to driver": [], "to placed": [], "to instance": []}
    for name in names:
        result = json.loads((data_dir / "jobs" / name / "ray" / "result.json").read_text())
        times = result["times"]
        first = min(i["started_at"] for i in result["instances"].values())
        phases["to driver"].append(times["driver_at"] - started[name])
        phases["to placed"].append(times["placed_at"] - times["driver_at"])
        phases["to instance"].append(first - times["placed_at"])
    return {k: statistics.median(v) for k, v in phases.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--instances", type=int, default=4)
    args = parser.parse_args()

    cluster_cpu = ClusterCpu()
    with cluster_cpu.started_in():
        cluster = ray_cluster.start(nodes=3)
    cluster_cpu.cluster = cluster
    try:
        time.sleep(2)  # settled, before its memory is read
        rss = sum(_rss(pid) for pid in cluster.pids())
        print(
            f"cluster: 3 nodes started in {cluster.start_s:.1f} s, {rss / 2**20:.0f} MiB RSS idle"
        )
        tmp = Path(tempfile.mkdtemp(prefix="kaio-bench-ray-", dir="/var/tmp"))
        servers = {
            "local": ServerProcess(tmp / "local", max_instances=8),
            "ray": ServerProcess(
                tmp / "ray",
                env=ray_cluster.LOOPBACK_ENV,
                max_instances=8,
                backend="ray",
                ray_address=cluster.address,
                ray_scale=0.25,
            ),
        }
        results = {}
        for name, server in servers.items():
            server.start()
            try:
                api = Api(server.url, server.add_user())

                def cpu(server=server):
                    tree = psutil.Process(server.proc.pid).children(recursive=True)
                    return {
                        "server": cpu_seconds([server.proc.pid, *(p.pid for p in tree)]),
                        "cluster": cluster_cpu.seconds(),
                    }

                batch = run_batch(api, args.batch, cpu=cpu)
                multi = run_batch(api, 1, args.instances)
                results[name] = (batch, multi, api)
                if name == "ray":
                    started = {n: epoch(api.job(n)["start_time"]) for n in batch["names"]}
                    phases = ray_phases(server.data_dir, batch["names"], started)
            finally:
                server.stop()
        report(results, args, phases)
    finally:
        cluster.shutdown()
        cluster_cpu.remove()


def _rss(pid: int) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def report(results: dict, args, phases: dict) -> None:
    (lb, lm, _), (rb, rm, _) = results["local"], results["ray"]
    per_local, per_ray = lb["wall"] / args.batch, rb["wall"] / args.batch
    print(f"\n{args.batch} trivial jobs at once      local      ray    ray/local")
    print(
        f"  wall per job            {per_local:7.2f} s {per_ray:7.2f} s  {per_ray / per_local:6.1f}x"
    )
    ml, mr = statistics.median(lb["latency"]), statistics.median(rb["latency"])
    print(f"  median job latency      {ml:7.2f} s {mr:7.2f} s  {mr / ml:6.1f}x")
    wl, wr = lm["wall"], rm["wall"]
    print(f"one {args.instances}-instance job          {wl:7.2f} s {wr:7.2f} s  {wr / wl:6.1f}x")
    for part in ("server", "cluster"):
        cl, cr = lb["cpu"][part] / args.batch, rb["cpu"][part] / args.batch
        print(f"  CPU per job, {part:<10}{cl:7.2f} s {cr:7.2f} s")
    print("\na Ray job's start, from the platform's (medians over the batch):")
    for phase, seconds in phases.items():
        print(f"  {phase:<22}{seconds:7.2f} s")
    print(f"\ntarget: under 1 s per job on the cluster: {'met' if per_ray < 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
