"""How much the local platform costs over running a script directly.

    .venv/bin/python benchmarks/server.py [--repeat 5] [--batch 20]

Prints, in one run:
  1. one trivial job through the platform (presign, upload, run, Completed, outputs listed; its
     requirements.txt is the seed's automatic one, already satisfied) next to `python train.py`;
  2. a batch of trivial jobs on a server with --max-instances 2 next to the same number of direct
     runs two at a time.
Targets (issue 3): under 1 s of overhead per trivial job; the batch within 1.5x of direct runs.
Also printed, as what the platform costs the machine: the server process's own CPU per batch job
(outside the timings), next to the CPU of the job's process.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

SCRIPT = "import json, os\njson.dump({'host': os.environ.get('SM_CURRENT_HOST')}, open('out.json', 'w'))\n"
REQUIREMENTS = "nbconvert\npsutil\nGPUtil\n"  # what the seed client adds to every package
FINAL = {"Completed", "Failed", "Stopped"}


def package() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, text in (("train.py", SCRIPT), ("requirements.txt", REQUIREMENTS)):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tf.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


class Server:
    def __init__(self, data_dir: Path, max_instances: int):
        cmd = [sys.executable, "-m", "kaio_spec.cli", "server", "--port", "0"]
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
        self.session = requests.Session()
        token = self.session.post(f"{self.url}/login", json={"api_key": key}).json()
        self.session.headers["Authorization"] = f"Bearer {token['access_token']}"
        # Presigned URLs take no bearer token; one pooled session for them, as the Client has.
        self.uploads = requests.Session()

    def submit(self, name: str, pkg: bytes) -> str:
        body = {
            "job_name": name,
            "job_spec": {"instance_type": "ml.m5.large", "entrypoint": "train.py"},
        }
        presigned = self.session.post(f"{self.url}/jobs/presign", json=body).json()
        self.uploads.put(presigned["upload_url"], data=pkg).raise_for_status()
        return presigned["unique_job_name"]

    def wait_all(self, uniques: list[str], poll_s: float = 0.01) -> None:
        """Poll like the executor: one GET /jobs per round, and each job's outputs listed as
        soon as the job is seen to have ended (the executor downloads them then)."""
        left = set(uniques)
        while left:
            for job in self.session.get(f"{self.url}/jobs").json()["jobs"]:
                if job["unique_job_name"] in left and job["status"] in FINAL:
                    if job["status"] != "Completed":
                        raise SystemExit(f"job failed: {job}")
                    left.discard(job["unique_job_name"])
                    self.list_outputs(job["unique_job_name"])
            if left:
                time.sleep(poll_s)

    def list_outputs(self, unique: str) -> None:
        files = self.session.get(f"{self.url}/jobs/download/{unique}").json()["output_files"]
        assert any(rel == "out.json" for rel, _, _ in files), files

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds of the server process itself, and of the job processes it reaped."""
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system, t.children_user + t.children_system

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


def direct_run(folder: Path) -> None:
    subprocess.run([sys.executable, "train.py"], cwd=folder, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="batch comparisons (median)")
    args = parser.parse_args()
    pkg = package()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "job"
        folder.mkdir()
        (folder / "train.py").write_text(SCRIPT)
        server = Server(tmp / "data", max_instances=2)
        try:
            server.wait_all([server.submit("warm-up", pkg)])  # imports and caches warm

            platform_s, direct_s = [], []
            for i in range(args.repeat):
                t0 = time.perf_counter()
                server.wait_all([server.submit(f"one-{i}", pkg)])
                platform_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                direct_run(folder)
                direct_s.append(time.perf_counter() - t0)

            batch_platform, batch_direct, server_cpu, job_cpu, bench_cpu = [], [], [], [], []
            for r in range(args.rounds):  # interleaved, so load from elsewhere hits both
                cpu0 = server.cpu_s()
                own0 = time.process_time()
                t0 = time.perf_counter()
                uniques = [server.submit(f"batch-{r}-{i}", pkg) for i in range(args.batch)]
                server.wait_all(uniques, poll_s=0.025)
                batch_platform.append(time.perf_counter() - t0)
                bench_cpu.append((time.process_time() - own0) / args.batch)
                cpu1 = server.cpu_s()
                server_cpu.append((cpu1[0] - cpu0[0]) / args.batch)
                job_cpu.append((cpu1[1] - cpu0[1]) / args.batch)
                t0 = time.perf_counter()
                with ThreadPoolExecutor(2) as pool:
                    list(pool.map(lambda _: direct_run(folder), range(args.batch)))
                batch_direct.append(time.perf_counter() - t0)
        finally:
            server.stop()

    one_p, one_d = statistics.median(platform_s), statistics.median(direct_s)
    print(f"one trivial job (median of {args.repeat}):")
    print(
        f"  through the platform  {one_p * 1000:8.0f} ms  (submit -> Completed -> outputs listed)"
    )
    print(f"  python train.py       {one_d * 1000:8.0f} ms")
    print(f"  overhead              {(one_p - one_d) * 1000:8.0f} ms per job   (target < 1000 ms)")
    many_p, many_d = statistics.median(batch_platform), statistics.median(batch_direct)
    print(f"{args.batch} trivial jobs, two at a time (median of {args.rounds}):")
    print(f"  through the platform  {many_p:8.2f} s   (--max-instances 2, polled every 25 ms)")
    print(f"  direct, 2 at a time   {many_d:8.2f} s")
    print(f"  ratio                 {many_p / many_d:8.2f} x    (target <= 1.5 x)")
    # On two cores that the jobs fill, everything else's CPU is time the jobs wait.
    print(
        f"  server CPU per job    {statistics.median(server_cpu) * 1000:8.1f} ms  "
        f"(the job's own process: {statistics.median(job_cpu) * 1000:.1f} ms; this "
        f"benchmark's client: {statistics.median(bench_cpu) * 1000:.1f} ms)"
    )


if __name__ == "__main__":
    main()
