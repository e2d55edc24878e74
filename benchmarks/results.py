"""`kaio results` of a 1,000-cell sweep whose outputs are downloaded, beside `kaio status` of the
same manifest in the same run (the same planning and GET /jobs, without reading any outputs).

The sweep's outputs are made synthetically, as `kaio download` leaves them: per job a marker
(.kaio-download.json), a metrics.json with nested metrics, a metrics.jsonl of 50 steps and the
logs. The API is a stand-in on loopback that answers POST /login and GET /jobs with every job
Completed (a real platform would have to run 1,000 jobs first); everything else is the real
command in a fresh Python process, imports included, as a user runs it. Prints the best wall time
of --repeat runs of each. Target: `kaio results` under 1 s.

    .venv/bin/python benchmarks/results.py [--cells 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# A script's folder comes first on sys.path, where benchmarks/packaging.py would shadow the
# packaging library kaio_spec imports: kaio_spec is imported without it (in the functions).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

MANIFEST = """\
version: 1
name: bench
settings: {{max_jobs: {cells}}}
defaults:
  directory: ./code
  params: {{seed: 7}}
jobs:
  svc:
    name: "svc-C{{{{ matrix.C }}}}-g{{{{ matrix.gamma }}}}"
    metric: {{name: accuracy, goal: maximize}}
    sweep:
      method: grid
      parameters:
        C: {{values: {cs}}}
        gamma: {{values: {gammas}}}
"""


def write_sweep(folder: Path, cells: int) -> tuple[Path, list[dict]]:
    """The manifest, every job's downloaded outputs, and the API's jobs for them."""
    from kaio_spec.planner import plan

    (folder / "code").mkdir()
    (folder / "code" / "train.py").write_text("print('hi')\n")
    n_c = 40 if cells >= 40 else 1
    cs = [round(0.01 * (i + 1), 2) for i in range(n_c)]
    gammas = [round(0.001 * (i + 1), 3) for i in range(cells // n_c)]
    manifest = folder / "kaio.yaml"
    manifest.write_text(MANIFEST.format(cells=cells, cs=cs, gammas=gammas))
    api_jobs = []
    for i, job in enumerate(plan(manifest).jobs):
        unique = f"20261207-000000{i:03d}-{job.job_name}"
        files = {
            "metrics.json": json.dumps(
                {"accuracy": 0.9 + (i % 97) / 1000, "eval": {"f1": 0.8, "loss": 0.1 + i / 1e4}}
            ),
            "metrics.jsonl": "".join(
                json.dumps({"step": s, "loss": 1 / (s + 1), "lr": 0.1}) + "\n" for s in range(50)
            ),
            "model.json": "{}",
            "logs/algo-1/stdout.log": "done\n",
            "logs/algo-1/stderr.log": "",
        }
        for name, text in files.items():
            path = job.outputs / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        marker = {"unique_job_name": unique, "job_name": job.job_name, "status": "Completed"}
        marker["files"] = sorted(files)
        (job.outputs / ".kaio-download.json").write_text(json.dumps(marker))
        api_jobs.append(
            {
                "unique_job_name": unique,
                "job_name": job.job_name,
                "status": "Completed",
                "start_time": "2026-12-07T00:00:00Z",
                "end_time": "2026-12-07T00:00:42Z",
                "labels": dict(job.labels),
            }
        )
    return manifest, api_jobs


def stand_in_api(jobs: list[dict]) -> ThreadingHTTPServer:
    listing = json.dumps({"jobs": jobs, "count": len(jobs)}).encode()
    token = json.dumps({"access_token": "a.b.c", "exp": time.time() + 3600}).encode()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send(token)

        def do_GET(self):
            self._send(listing)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def timed(args: list[str], env: dict[str, str], repeat: int) -> tuple[float, float]:
    """Best wall seconds and best CPU seconds (user + system) of `kaio ARGS` in a fresh process:
    on a shared machine the CPU time says more than the wall time."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "kaio_spec.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        wall = min(wall, time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        cpu = min(cpu, used)
        if done.returncode != 0:
            sys.exit(f"kaio {' '.join(args)} failed:\n{done.stderr}")
    return wall, cpu


def in_process(manifest: Path, repeat: int) -> tuple[float, float]:
    """Best seconds of plan() alone, and of plan() + results(offline=True)."""
    from kaio_spec.planner import plan
    from kaio_spec.results_table import results

    planned = table = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        p = plan(manifest)
        middle = time.perf_counter()
        rows = results(p, offline=True)
        end = time.perf_counter()
        planned, table = min(planned, middle - start), min(table, end - middle)
        assert len(rows) and rows.best is not None
    return planned, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaio-results-bench-") as tmp:
        manifest, jobs = write_sweep(Path(tmp), args.cells)
        api = stand_in_api(jobs)
        url = f"http://127.0.0.1:{api.server_address[1]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAIO_")}
        env |= {"KAIO_API_KEY": "bench", "KAIO_HOME": str(Path(tmp) / "home")}
        f = str(manifest)
        rows = [
            ("kaio status -o json (baseline)", ["status", f, "--api", url, "-o", "json"]),
            ("kaio --version (start-up alone)", ["--version"]),
            ("kaio results (table)", ["results", f, "--api", url]),
            ("kaio results -o csv", ["results", f, "--api", url, "-o", "csv"]),
            ("kaio results --offline -o json", ["results", f, "--offline", "-o", "json"]),
        ]
        times = [(label, *timed(cmd, env, args.repeat)) for label, cmd in rows]
        planned, table = in_process(manifest, args.repeat)
        api.shutdown()
    n = len(jobs)
    print(f"{n:,} cells, outputs downloaded; best of {args.repeat} (fresh process each)")
    print(f"{'command':<36}{'wall s':>8}{'/ status':>10}{'CPU s':>8}{'/ status':>10}")
    base_wall, base_cpu = times[0][1:]
    for label, wall, cpu in times:
        print(f"{label:<36}{wall:>8.3f}{wall / base_wall:>9.2f}x{cpu:>8.3f}{cpu / base_cpu:>9.2f}x")
    print()
    print(f"in process: plan() {planned:.3f} s, results(offline) after it {table:.3f} s")


if __name__ == "__main__":
    main()
