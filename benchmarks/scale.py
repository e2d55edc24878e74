"""Sweeps at scale: the executor's cost per job from 100 to 10,000 cells (issue 18).

Starts a local platform of its own (127.0.0.1, a free port, `--max-instances 2`, a temporary
data dir and KAIO_HOME), writes one small job folder (its job does nothing: the server's work per
job stays trivial) and, for each size, a sweep manifest over it with `max_parallel` as large as
the sweep (submission is what is measured), then runs as a user would:

    kaio apply --yes --detach      (wall, client CPU and peak memory of the `kaio` process)
    kaio status                    (wall)
    kaio stop --yes                (wall; frees the platform for the next size)

Each size is its own manifest and its own tenant. Beside them, the seed README's loop
(`Client.submit_job` per cell, 100 cells) measured in the same run: the baseline the per-job
figures are quoted against. Prints per size: wall and client CPU per job, peak memory, and the
server's own CPU and its jobs' during the apply; then the largest/smallest ratio of client CPU
per job.

Then the planner alone: `kaio plan FILE -o json --offline` of the largest sweep against a 1-cell
one (client CPU, the best of --plan-repeat runs each): its cost per cell beyond start-up.

Targets: client CPU per job at 10,000 cells within 1.5x of 100 cells; 1,000 cells submitted in
under 8 s; client peak memory under 250 MB at 10,000 cells; status and stop under 3 s each; the
plan under 100 us per cell beyond start-up.

    .venv/bin/python benchmarks/scale.py [--sizes 100,1000,10000] [--profile 1000]
"""

from __future__ import annotations

# A script's folder comes first on sys.path: benchmarks/packaging.py would shadow the
# `packaging` distribution kaio_spec imports. Drop the folder before importing anything else.
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, _HERE)  # benchmarks/apply.py's platform helpers (it drops the folder again)
from apply import add_user, start_server, stop_all, stop_server  # noqa: E402

MANIFEST = """\
version: 1
name: scale{cells}
settings:
  max_parallel: {cells}
  max_jobs: {cells}
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

TRAIN = "pass\n"  # the platform's work per job stays trivial


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    peak_mb: float
    rc: int
    output: str


def run_kaio(args: list[str], cwd: Path, env: dict[str, str], profile: Path | None = None) -> Run:
    """`kaio ARGS` as a child process; its wall time, CPU (user + system) and peak RSS."""
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
        cmd += [str(Path(sys.executable).parent / "kaio")]
    else:
        cmd += ["-m", "kaio_spec.cli"]
    log = cwd / "kaio.log"
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd + args, cwd=cwd, env=env, stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,  # KiB on Linux
        proc.returncode,
        log.read_text(errors="replace")[-2000:],
    )


def seed_loop(url: str, key: str, folder: Path, cells: int) -> tuple[float, float]:
    """The seed README's loop: per-job wall and CPU seconds."""
    from kaio_spec import Client

    client = Client(url).login(key)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(cells):
        client.submit_job(directory=str(folder), job_name=f"loop-cell-{i}", entrypoint="train.py")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    stop_all(client)
    return wall / cells, cpu / cells


def server_cpu(pid: int) -> tuple[float, float]:
    """The server's own CPU seconds, and its reaped children's (the jobs' processes), from
    /proc (Linux): load-independent figures of where an apply's time goes."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return (float("nan"), float("nan"))
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def measure_size(
    work: Path,
    url: str,
    key: str,
    cells: int,
    profile: Path | None,
    profile_status: Path | None,
    server_pid: int,
) -> dict:
    project = write_sweep(work / f"sweep{cells}", work, cells)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIO_")}
    env.update(KAIO_API_KEY=key, KAIO_HOME=str(work / "home"), NO_COLOR="1")
    api = ["--api", url]
    before = server_cpu(server_pid)
    apply = run_kaio(["apply", "kaio.yaml", "--yes", "--detach", *api], project, env, profile)
    after = server_cpu(server_pid)
    if apply.rc != 0:
        raise SystemExit(f"kaio apply of {cells} cells exited {apply.rc}:\n{apply.output}")
    status = run_kaio(["status", "kaio.yaml", *api], project, env, profile_status)
    stop = run_kaio(["stop", "kaio.yaml", "--yes", *api], project, env)
    for what, r in (("status", status), ("stop", stop)):
        if r.rc != 0:
            raise SystemExit(f"kaio {what} of {cells} cells exited {r.rc}:\n{r.output}")
    server = (after[0] - before[0], after[1] - before[1])
    return {"apply": apply, "status": status, "stop": stop, "server": server}


def write_sweep(folder: Path, work: Path, cells: int) -> Path:
    """The benchmark's manifest of `cells` cells over work/job, in `folder`."""
    shutil.copytree(work / "job", folder / "job")
    values = ", ".join(str(i) for i in range(cells))
    (folder / "kaio.yaml").write_text(MANIFEST.format(cells=cells, values=values))
    return folder


def plan_cpu(work: Path, cells: int, repeat: int) -> float:
    """The least client CPU of `repeat` runs of `kaio plan -o json --offline` over `cells` cells."""
    project = write_sweep(work / f"plan{cells}", work, cells)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIO_")}
    env.update(KAIO_HOME=str(work / "home"), NO_COLOR="1")
    args = ["plan", "kaio.yaml", "-o", "json", "--offline"]
    runs = [run_kaio(args, project, env) for _ in range(max(1, repeat))]
    for r in runs:
        if r.rc != 0:
            raise SystemExit(f"kaio plan of {cells} cells exited {r.rc}:\n{r.output}")
    return min(r.cpu_s for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000", help="comma-separated sweep sizes")
    ap.add_argument("--max-instances", type=int, default=2)
    ap.add_argument("--loop-cells", type=int, default=100, help="cells of the seed loop")
    ap.add_argument("--profile", type=int, metavar="CELLS", help="cProfile this size's apply")
    ap.add_argument("--profile-status", type=int, metavar="CELLS", help="cProfile its status")
    ap.add_argument("--profile-out", default="scale.prof", help="where the profile goes")
    ap.add_argument("--plan-repeat", type=int, default=3, help="runs of each plan (best kept)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    # Byte-compiled first, as pip installs it: with PYTHONDONTWRITEBYTECODE set (as here), each
    # `kaio` process would otherwise compile the package again (about 0.2 s of CPU each).
    import kaio_spec

    package = os.path.dirname(kaio_spec.__file__)
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True)
    work = Path(tempfile.mkdtemp(prefix="kaio-bench-scale-"))
    proc = None
    try:
        (work / "job").mkdir()
        (work / "job" / "train.py").write_text(TRAIN)
        (work / "home").mkdir()
        data_dir = work / "server"
        data_dir.mkdir()
        proc, url = start_server(data_dir, args.max_instances)
        print(f"sizes {sizes}, one small folder, --max-instances {args.max_instances}; {url}")
        loop_wall, loop_cpu = seed_loop(
            url, add_user(data_dir, "loop"), work / "job", args.loop_cells
        )
        print(
            f"  seed loop (Client.submit_job), {args.loop_cells} cells: "
            f"{loop_wall * 1000:6.1f} ms wall per job, {loop_cpu * 1000:6.1f} ms CPU per job"
        )
        per_job: dict[int, float] = {}
        for cells in sizes:
            profile = Path(args.profile_out).resolve() if args.profile == cells else None
            profile_status = None
            if args.profile_status == cells:
                profile_status = Path(args.profile_out + ".status").resolve()
            key = add_user(data_dir, f"u{cells}")
            r = measure_size(work, url, key, cells, profile, profile_status, proc.pid)
            a = r["apply"]
            per_job[cells] = a.cpu_s / cells
            print(
                f"  {cells:6d} cells: apply {a.wall_s:7.2f} s wall "
                f"({a.wall_s / cells * 1000:5.2f} ms/job, {loop_wall / (a.wall_s / cells):5.1f}x "
                f"the loop), client CPU {a.cpu_s:7.2f} s ({per_job[cells] * 1000:5.2f} ms/job), "
                f"peak {a.peak_mb:5.0f} MB; status {r['status'].wall_s:5.2f} s "
                f"(CPU {r['status'].cpu_s:4.2f} s), stop {r['stop'].wall_s:5.2f} s "
                f"(CPU {r['stop'].cpu_s:4.2f} s)" + (" [profiled]" if profile else "")
            )
            own, jobs = r["server"]
            print(
                f"  {'':6s}        during the apply: server CPU {own:6.2f} s "
                f"({own / cells * 1000:5.2f} ms/job), its jobs' processes {jobs:6.2f} s "
                "(they share the cores with the submission)"
            )
        if len(per_job) > 1:
            small, large = min(per_job), max(per_job)
            print(
                f"  client CPU per job, {large} / {small} cells: "
                f"{per_job[large] / per_job[small]:.2f}x (target: at most 1.5x)"
            )
        largest = max(sizes)
        one, many = plan_cpu(work, 1, args.plan_repeat), plan_cpu(work, largest, args.plan_repeat)
        print(
            f"  kaio plan, client CPU: 1 cell {one:5.2f} s, {largest} cells {many:5.2f} s: "
            f"{(many - one) / max(1, largest - 1) * 1e6:5.1f} us per cell beyond start-up "
            "(target: under 100)"
        )
    finally:
        stop_server(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
