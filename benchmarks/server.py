"""How much the local platform costs over running a script directly.

    .venv/bin/python benchmarks/server.py [--repeat 5] [--batch 20]

Prints, in one run:
  1. one trivial job through the platform (presign, upload, run, Completed, outputs listed; its
     requirements.txt is the seed's automatic one, already satisfied) next to `python train.py`;
  2. a batch of trivial jobs on a server with --max-instances 2 next to the same number of direct
     runs two at a time, and on a --no-sandbox server beside it; the rounds are interleaved and
     the ratio is the median of each round's own (the machine's speed drifts between rounds);
  3. what starting one isolated instance costs: `python -c pass` in the namespaces a job gets
     (bubblewrap, kaio_spec/server/namespaces.py) next to the same process started unconfined.
Targets (issue 3): under 1 s of overhead per trivial job; the batch within 1.5x of direct runs.
With --job-ms N each job first computes for N ms of its own CPU time (both sides): the same
platform cost beside a job that does some work.
Also printed, as what the platform costs the machine: the server process's own CPU per batch job
(outside the timings), next to the CPU of the job's process and of this benchmark's client, and
the HTTP requests per job; their sum over a direct run's CPU (the batch is CPU-bound where the
jobs fill the cores, so this ratio is the one the wall-time ratio follows, and the load of the
machine moves it far less); the CPU of starting one instance, confined and not; and what making
a new file or folder costs beside the data folder, before and after the batches.

That last figure is there because the platform makes about a dozen new files and folders per
job, and on ext4 without a journal (this project's VMs) each new one first skips over those of
its block group deleted in the last one to six minutes (the kernel's recently_deleted check):
right after a run whose cleanup deleted thousands, such as a previous run of this benchmark or
a test suite, a new entry costs ten to thirty times its usual CPU and the server's CPU per job
doubles. Compare runs only where that figure is alike.

This benchmark talks HTTP through http.client over kept-alive connections, not through requests
(kaio_spec.Client's transport): on a machine whose cores the jobs fill, the client's CPU is taken
from the jobs being timed, and requests costs several times http.client's CPU per call (both are
measured and printed in the same run), so a heavy client would time itself more than the platform.
What `kaio apply` costs, with kaio_spec.Client, is benchmarks/apply.py's figure.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import requests

SCRIPT = "import json, os\njson.dump({'host': os.environ.get('SM_CURRENT_HOST')}, open('out.json', 'w'))\n"
# --job-ms: the job computes this long first (its own CPU time), as a job that does some work.
WORK = (
    "import time\nt0 = time.process_time()\nwhile time.process_time() - t0 < {seconds}:\n    pass\n"
)


def script(job_ms: float) -> str:
    return (WORK.format(seconds=job_ms / 1000) if job_ms else "") + SCRIPT


REQUIREMENTS = "nbconvert\npsutil\nGPUtil\n"  # what the seed client adds to every package
FINAL = {"Completed", "Failed", "Stopped"}


def package(text: str = SCRIPT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, content in (("train.py", text), ("requirements.txt", REQUIREMENTS)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content.encode()))
    return buf.getvalue()


class Server:
    def __init__(self, data_dir: Path, max_instances: int, *flags: str):
        cmd = [sys.executable, "-m", "kaio_spec.cli", "server", "--port", "0", *flags]
        cmd += ["--data-dir", str(data_dir), "--max-instances", str(max_instances)]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                info = json.loads((data_dir / "server.json").read_text())
                if info["pid"] == self.proc.pid:
                    self.url = info["url"]
                    requests.get(self.url + "/healthz", timeout=2).raise_for_status()
                    break
            except (OSError, ValueError, requests.RequestException):
                time.sleep(0.05)
        else:
            raise SystemExit("the server did not start")
        cli = [sys.executable, "-m", "kaio_spec.cli", "server"]
        key = subprocess.run(
            [*cli, "user", "add", "bench", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.api = Http(self.url)
        token = self.api.call("POST", "/login", {"api_key": key})
        self.api.headers["Authorization"] = f"Bearer {token['access_token']}"
        # Presigned URLs take no bearer token; a connection of their own, as the Client has.
        self.uploads = Http(self.url)

    def submit(self, name: str, pkg: bytes) -> str:
        body = {
            "job_name": name,
            "job_spec": {"instance_type": "ml.m5.large", "entrypoint": "train.py"},
        }
        presigned = self.api.call("POST", "/jobs/presign", body)
        self.uploads.call("PUT", presigned["upload_url"], pkg)
        return presigned["unique_job_name"]

    def wait_all(self, uniques: list[str], poll_s: float = 0.01) -> None:
        """Poll like the executor: one GET /jobs per round, and each job's outputs listed as
        soon as the job is seen to have ended (the executor downloads them then)."""
        left = set(uniques)
        while left:
            for job in self.api.call("GET", "/jobs")["jobs"]:
                if job["unique_job_name"] in left and job["status"] in FINAL:
                    if job["status"] != "Completed":
                        raise SystemExit(f"job failed: {job}")
                    left.discard(job["unique_job_name"])
                    self.list_outputs(job["unique_job_name"])
            if left:
                time.sleep(poll_s)

    def list_outputs(self, unique: str) -> None:
        files = self.api.call("GET", f"/jobs/download/{unique}")["output_files"]
        assert any(rel == "out.json" for rel, _, _ in files), files

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds of the server process itself, and of the job processes it reaped."""
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system, t.children_user + t.children_system

    def requests(self) -> int:
        """HTTP requests made to this server so far (presigned uploads included)."""
        return self.api.requests + self.uploads.requests

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


class Http:
    """Requests over one kept-alive connection, opened again after a pause longer than the
    server's keep-alive (uvicorn's 5 s), so that no request meets a connection closed under it."""

    IDLE_S = 2.0

    def __init__(self, base: str):
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.headers: dict[str, str] = {}
        self.last_used = time.monotonic()
        self.requests = 0  # made so far: the platform's requests per job

    def call(self, method: str, url: str, body: dict | bytes | None = None) -> dict | None:
        """The decoded JSON answer (None for an empty one); exits on an error status."""
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = dict(self.headers)
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if time.monotonic() - self.last_used > self.IDLE_S:
            self.conn.close()
        self.conn.request(method, path, body=body, headers=headers)
        self.requests += 1
        resp = self.conn.getresponse()
        data = resp.read()
        self.last_used = time.monotonic()
        if resp.status >= 400:
            raise SystemExit(f"{method} {parts.path}: {resp.status} {data[:300]!r}")
        return json.loads(data) if data else None


def client_cpu_per_call(url: str, calls: int = 200) -> tuple[float, float]:
    """CPU seconds per GET /healthz through a requests.Session and through Http."""
    session, lean = requests.Session(), Http(url)
    session.get(url + "/healthz").raise_for_status()
    t0 = time.process_time()
    for _ in range(calls):
        session.get(url + "/healthz").raise_for_status()
    t1 = time.process_time()
    for _ in range(calls):
        lean.call("GET", "/healthz")
    return (t1 - t0) / calls, (time.process_time() - t1) / calls


def new_entry_ms(parent: Path, count: int = 100) -> float:
    """CPU milliseconds per new folder or file made under `parent` (left for the caller's
    cleanup: deleting them here would make the next ones dearer)."""
    probe = Path(tempfile.mkdtemp(dir=parent, prefix="probe-"))
    t0 = time.process_time()
    for i in range(count):
        (probe / str(i)).mkdir()
        (probe / str(i) / "f").touch()
    return (time.process_time() - t0) * 1000 / (2 * count)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def direct_run(folder: Path) -> None:
    subprocess.run([sys.executable, "train.py"], cwd=folder, check=True)


def batch(server: Server, pkg: bytes, name: str, jobs: int) -> dict[str, float]:
    """`jobs` trivial jobs submitted at once and followed to their outputs: the wall time, and
    per job the server's CPU, its job processes' and this benchmark's."""
    cpu0, own0, t0 = server.cpu_s(), time.process_time(), time.perf_counter()
    requests0 = server.requests()
    uniques = [server.submit(f"{name}-{i}", pkg) for i in range(jobs)]
    server.wait_all(uniques, poll_s=0.025)
    wall, cpu1 = time.perf_counter() - t0, server.cpu_s()
    requests = server.requests() - requests0
    # Out of the list the next round's polls read: each round then lists its own jobs alone,
    # however many rounds ran before (the cost of a long history is not the batch's).
    for unique in uniques:
        server.api.call("POST", f"/jobs/{unique}/archive")
    return {
        "wall": wall,
        "server": (cpu1[0] - cpu0[0]) / jobs,
        "job": (cpu1[1] - cpu0[1]) / jobs,
        "client": (time.process_time() - own0) / jobs,
        "requests": requests / jobs,
    }


def direct_batch(folder: Path, jobs: int) -> dict[str, float]:
    reaped0, t0 = children_cpu_s(), time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: direct_run(folder), range(jobs)))
    return {"wall": time.perf_counter() - t0, "job": (children_cpu_s() - reaped0) / jobs}


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def round_ratios(platform: list[dict[str, float]], direct: list[dict[str, float]]) -> list[float]:
    """Each round's own ratio: a round's batches ran back to back, so a machine that speeds up
    or slows down between rounds moves both sides of a ratio alike. Their median is the figure;
    their range says how much the machine moved the rounds."""
    return [p["wall"] / d["wall"] for p, d in zip(platform, direct, strict=True)]


def cpu_ratio(platform: list[dict[str, float]], direct: list[dict[str, float]]) -> float:
    """CPU per job through the platform (the server's, the job's processes', this client's)
    over a direct run's."""
    spent = sum(median(platform, key) for key in ("server", "job", "client"))
    return spent / median(direct, "job")


def ratio_text(platform: list[dict[str, float]], direct: list[dict[str, float]]) -> tuple[str, str]:
    """The median ratio, and the range of the rounds' own."""
    ratios = round_ratios(platform, direct)
    return f"{statistics.median(ratios):.2f}", f"rounds {min(ratios):.2f}-{max(ratios):.2f}"


def isolated_argv(tmp: Path) -> list[str] | None:
    """`python -c pass` as the platform starts an instance in namespaces (asked of a fresh
    interpreter: see main's note on importing kaio_spec here), or None where it cannot."""
    code = (
        "import json, sys; from pathlib import Path; from kaio_spec.server import namespaces\n"
        "if namespaces.unavailable(): print('null'); sys.exit()\n"
        "data = Path(sys.argv[1]); work = data / 'jobs' / 'j' / 'work'; home = data / 'home'\n"
        "work.mkdir(parents=True); home.mkdir()\n"
        "jail = namespaces.Jail(str(data), home=home, writable=[work], tmp_bytes=2**30)\n"
        "argv = [sys.executable, '-c', 'pass']\n"
        "print(json.dumps(namespaces.command(argv, jail, work)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp / "isolation")],
        cwd=tmp,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def cgroup_start_ms(argv: list[str], repeat: int = 40) -> list[float] | None:
    """Median wall milliseconds to start `argv` in a cgroup of its own and see it exit: moving
    itself in as it starts, and handed to a process of the platform's prestart.Pool that
    entered its cgroup beforehand (as an instance starts on a platform whose slots refill
    between jobs). None where this user may make no cgroups."""
    code = (
        "import json, os, statistics, subprocess, sys, time\n"
        "from kaio_spec.server import limits, prestart\n"
        "cgroups = limits.InstanceCgroups(f'benchmark-{os.getpid()}')\n"
        "if not cgroups.parents: print('null'); sys.exit()\n"
        "argv, repeat = json.loads(sys.argv[1]), int(sys.argv[2])\n"
        "bounds = limits.Limits('b', 2**30, 1, 2**30, 4096, 2**20)\n"
        "env = {'PATH': os.environ['PATH']}\n"
        "pool, entering, ready = prestart.Pool(cgroups, 1), [], []\n"
        "for i in range(repeat):\n"
        "    made = cgroups.create(f'entering-{i}', bounds)\n"
        "    t0 = time.perf_counter()\n"
        "    subprocess.run(cgroups.command(made, argv), env=env, check=True)\n"
        "    entering.append(time.perf_counter() - t0)\n"
        "    cgroups.remove(made, wait_s=1)\n"
        "    while (taken := pool.take()) is None: time.sleep(0.01)\n"
        "    time.sleep(0.05)  # the time a job runs, at least, between refill and take\n"
        "    taken.cgroups = cgroups.restrict(taken.cgroups, bounds)\n"
        "    t0 = time.perf_counter()\n"
        "    taken.run(prestart.script(argv, env, os.getcwd()))\n"
        "    os.waitpid(taken.proc.pid, 0)\n"
        "    ready.append(time.perf_counter() - t0)\n"
        "    os.close(taken.stdout); os.close(taken.stderr)\n"
        "    cgroups.remove(taken.cgroups, wait_s=1)\n"
        "pool.close()\n"
        "print(json.dumps([statistics.median(t) * 1000 for t in (entering, ready)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argv), str(repeat)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def start_cost_ms(argv: list[str], repeat: int = 20) -> tuple[float, float]:
    """Median wall milliseconds to start `argv` and see it exit, and median CPU milliseconds
    of it and what it started (which the load of the machine moves far less)."""
    times, cpu = [], []
    for _ in range(repeat):
        reaped0, t0 = children_cpu_s(), time.perf_counter()
        subprocess.run(argv, check=True)
        times.append(time.perf_counter() - t0)
        cpu.append(children_cpu_s() - reaped0)
    return statistics.median(times) * 1000, statistics.median(cpu) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7, help="batch comparisons (median)")
    parser.add_argument(
        "--job-ms",
        type=float,
        default=0,
        help="CPU milliseconds each job computes before its output (0: a trivial job)",
    )
    args = parser.parse_args()
    pkg = package(script(args.job_ms))
    # Beside the default data folder (~/.kaio/server): a job's confinement costs with the
    # number of entries of the data folder's ancestors (sandbox.py), which a crowded /tmp
    # would overstate.
    # (Not kaio_spec.targets.local_data_dir: importing kaio_spec from here would find this
    # folder's packaging.py for the library of that name.)
    home = Path(os.environ.get("KAIO_HOME") or Path.home() / ".kaio").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home, prefix="benchmark-") as tmp:
        tmp = Path(tmp)
        entry_ms = [new_entry_ms(tmp)]
        folder = tmp / "job"
        folder.mkdir()
        (folder / "train.py").write_text(script(args.job_ms))
        isolated = isolated_argv(tmp)
        starts = [start_cost_ms([sys.executable, "-c", "pass"])]
        if isolated:
            starts.append(start_cost_ms(isolated))
        in_cgroups = cgroup_start_ms(["/bin/true"])  # what starting costs, not what runs
        server = Server(tmp / "data", 2)
        bare = Server(tmp / "bare", 2, "--no-sandbox")
        try:
            for s in (server, bare):
                s.wait_all([s.submit("warm-up", pkg)])  # imports and caches warm

            platform_s, direct_s = [], []
            for i in range(args.repeat):
                t0 = time.perf_counter()
                server.wait_all([server.submit(f"one-{i}", pkg)])
                platform_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                direct_run(folder)
                direct_s.append(time.perf_counter() - t0)

            confined, unconfined, direct = [], [], []
            for r in range(args.rounds):  # interleaved, so load from elsewhere hits all three
                confined.append(batch(server, pkg, f"batch-{r}", args.batch))
                unconfined.append(batch(bare, pkg, f"batch-{r}", args.batch))
                direct.append(direct_batch(folder, args.batch))
            isolation = server.api.call("GET", "/healthz").get("isolation", "landlock")
            per_call = client_cpu_per_call(server.url)
            entry_ms.append(new_entry_ms(tmp))
        finally:
            server.stop()
            bare.stop()

    one_p, one_d = statistics.median(platform_s), statistics.median(direct_s)
    kind = f"jobs of {args.job_ms:g} ms of CPU" if args.job_ms else "trivial jobs"
    print(f"one job (median of {args.repeat}, {kind}):")
    print(
        f"  through the platform  {one_p * 1000:8.0f} ms  (submit -> Completed -> outputs listed)"
    )
    print(f"  python train.py       {one_d * 1000:8.0f} ms")
    print(f"  overhead              {(one_p - one_d) * 1000:8.0f} ms per job   (target < 1000 ms)")
    many_p, many_d = median(confined, "wall"), median(direct, "wall")
    how = {
        "namespaces": "jobs in namespaces",
        "landlock": "jobs confined with Landlock",
        "none": "no isolation here: jobs unconfined",
    }[isolation]
    print(f"{args.batch} {kind}, two at a time (median of {args.rounds}):")
    print(f"  through the platform  {many_p:8.2f} s   (--max-instances 2, {how})")
    print(f"  direct, 2 at a time   {many_d:8.2f} s")
    ratio, spread = ratio_text(confined, direct)
    print(f"  ratio                 {ratio:>8} x    (target <= 1.5 x; {spread})")
    ratio, spread = ratio_text(unconfined, direct)
    print(
        f"  with --no-sandbox     {median(unconfined, 'wall'):8.2f} s   (ratio {ratio} x; {spread})"
    )
    # On two cores that the jobs fill, everything else's CPU is time the jobs wait.
    for label, rows in (("server CPU per job", confined), ("  with --no-sandbox", unconfined)):
        print(
            f"  {label:20s}  {median(rows, 'server') * 1000:8.1f} ms  (the job's own process: "
            f"{median(rows, 'job') * 1000:.1f} ms, run directly: "
            f"{median(direct, 'job') * 1000:.1f} ms; this benchmark's client: "
            f"{median(rows, 'client') * 1000:.1f} ms; {median(rows, 'requests'):.1f} requests)"
        )
    # The batch is CPU-bound on a machine whose cores the jobs fill: its ratio follows the CPU
    # each job costs, which the load of the machine moves far less than the wall times.
    for label, rows in (("CPU per job, ratio", confined), ("  with --no-sandbox", unconfined)):
        print(
            f"  {label:20s}  {cpu_ratio(rows, direct):8.2f} x    (server + job + client / direct)"
        )
    print(
        f"  client CPU per call   {per_call[1] * 1000:8.2f} ms  (http.client, this benchmark's; "
        f"requests, kaio_spec.Client's: {per_call[0] * 1000:.2f} ms)"
    )
    print(
        f"  a new file or folder  {entry_ms[0]:8.3f} ms  (CPU, beside the data folder, before the "
        f"batches; after them: {entry_ms[1]:.3f} ms; the platform makes about 12 per job)"
    )
    print("starting one instance (python -c pass, median of 20):")
    print(f"  unconfined            {starts[0][0]:8.1f} ms  (CPU {starts[0][1]:.1f} ms)")
    if len(starts) > 1:
        (wall, cpu), (bare_wall, bare_cpu) = starts[1], starts[0]
        print(
            f"  in namespaces         {wall:8.1f} ms  (bubblewrap: {wall - bare_wall:+.1f} ms, "
            f"{wall / bare_wall:.2f} x; CPU {cpu:.1f} ms, {cpu - bare_cpu:+.1f} ms)"
        )
    else:
        print("  in namespaces              -     (bubblewrap cannot make them here)")
    if in_cgroups:
        entering, ready = in_cgroups
        print(
            f"  /bin/true in a cgroup {entering:8.1f} ms  (moving itself in as it starts; "
            f"prestarted, already in it: {ready:.1f} ms, {entering - ready:.1f} ms saved)"
        )
    else:
        print("  /bin/true in a cgroup      -     (this user may make no cgroups)")


if __name__ == "__main__":
    main()
