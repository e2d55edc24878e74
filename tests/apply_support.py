"""Helpers for the apply tests: a sweep project on disk, `kaio apply` as a subprocess, and checks
of what the API and the outputs folders hold afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import requests
import support

import kaio_spec
from kaio_spec.executor.state import State, journal_path

KAIO = str(Path(sys.executable).parent / "kaio")
FINAL = ("Completed", "Failed", "Stopped")

# The job: reads its params, optionally sleeps, fails once per cell when FAIL_ONCE_DIR is set
# (the marker lives outside the package, so the retry finds it: in the tenant's HOME, which
# isolated jobs keep across a tenant's jobs, when it starts with ~), fails always for FAIL_CELLS, and
# with SAY_RUNNING and FAIL_ONCE_RUNNING, fails only once those cells run; and
# writes result.json plus a payload whose bytes derive from the cell (checked for integrity).
TRAIN = textwrap.dedent(
    """\
    import hashlib, json, os, sys, time
    p = json.load(open("params.json"))
    print("cell", p["i"], flush=True)
    fail_once = os.environ.get("FAIL_ONCE_DIR")
    if fail_once:
        os.makedirs(os.path.expanduser(fail_once), exist_ok=True)
        flag = os.path.join(os.path.expanduser(fail_once), f"cell-{p['i']}")
        if not os.path.exists(flag):
            open(flag, "w").close()
            print("failing on purpose, once", file=sys.stderr, flush=True)
            sys.exit(3)
    tag = os.environ.get("SAY_RUNNING")  # each cell listens on an abstract socket of this tag
    if tag:
        import socket
        me = socket.socket(socket.AF_UNIX)
        me.bind(f"\\0{tag}-{p['i']}")
        me.listen()
    if str(p["i"]) in os.environ.get("FAIL_CELLS", "").split(","):
        for other in filter(None, os.environ.get("FAIL_ONCE_RUNNING", "").split(",")):
            while True:  # fail only once these cells run
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(f"\\0{tag}-{other}")
                    break
                except OSError:
                    time.sleep(0.02)
        print("this cell always fails", file=sys.stderr, flush=True)
        sys.exit(4)
    time.sleep(float(p.get("sleep") or 0))
    json.dump({"i": p["i"]}, open("result.json", "w"))
    seed = hashlib.sha256(f"cell-{p['i']}".encode()).digest()
    open("payload.bin", "wb").write((seed * 2049)[:65536])
    """
)


def payload(i: object) -> bytes:
    """What the job writes to payload.bin for cell i."""
    seed = hashlib.sha256(f"cell-{i}".encode()).digest()
    return (seed * 2049)[:65536]


def write_project(
    folder: Path,
    *,
    name: str = "sweep",
    cells: int = 4,
    max_parallel: int = 4,
    retries: int = 0,
    fail_fast: bool = False,
    sleep: float = 0.0,
    env: dict[str, str] | None = None,
    poll_seconds: float = 0.3,
    extra_jobs: str = "",
    retry_delay_seconds: float = 0,
) -> Path:
    """A manifest (`kaio.yaml`) with one matrix job over `cells` cells, code in ./code."""
    code = folder / "code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "train.py").write_text(TRAIN)
    env_yaml = json.dumps(env or {})
    values = ", ".join(str(i) for i in range(cells))
    manifest = folder / "kaio.yaml"
    manifest.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            name: {name}
            settings:
              max_parallel: {max_parallel}
              fail_fast: {str(fail_fast).lower()}
              poll_seconds: {poll_seconds}
              retry_delay_seconds: {retry_delay_seconds}
            defaults:
              directory: ./code
            jobs:
              train:
                name: "train-{{{{ matrix.i }}}}"
                entrypoint: train.py
                retries: {retries}
                env: {env_yaml}
                params: {{i: "{{{{ matrix.i }}}}", sleep: {sleep}}}
                matrix:
                  i: [{values}]
            """
        )
        + extra_jobs
    )
    return manifest


def kaio_env(home: Path, api_key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIO_")}
    env.update(
        KAIO_API_KEY=api_key,
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("NO_COLOR", None)
    return env


def run_apply(
    manifest: Path,
    url: str,
    api_key: str,
    *args: str,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    home = manifest.parent / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [KAIO, "apply", str(manifest), "--api", url, *args],
        cwd=manifest.parent,
        env=kaio_env(home, api_key),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )


def run_kaio(manifest: Path, api_key: str, *args: str) -> subprocess.CompletedProcess:
    """`kaio ARGS` in the manifest's folder, as its user (pass --api where it talks to one)."""
    home = manifest.parent / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [KAIO, *args],
        cwd=manifest.parent,
        env=kaio_env(home, api_key),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_apply(manifest: Path, url: str, api_key: str, *args: str) -> subprocess.Popen:
    home = manifest.parent / "home"
    home.mkdir(exist_ok=True)
    log = open(manifest.parent / "apply.log", "ab")  # noqa: SIM115 - the process owns it
    return subprocess.Popen(
        [KAIO, "apply", str(manifest), "--api", url, "--yes", *args],
        cwd=manifest.parent,
        env=kaio_env(home, api_key),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def list_jobs(url: str, api_key: str) -> list[dict[str, Any]]:
    s = requests.Session()
    token = s.post(f"{url}/login", json={"api_key": api_key}, timeout=10).json()["access_token"]
    r = s.get(
        f"{url}/jobs",
        params={"include_archived": "true"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    r.raise_for_status()
    return r.json()["jobs"]


def ran(job: dict[str, Any]) -> bool:
    """The job got its package and ran (or is running): not an abandoned submission."""
    return job["status"] != "Stopped" or bool(job.get("start_time"))


def check_exactly_once(jobs: list[dict[str, Any]], expected_names: set[str]) -> None:
    """Every expected job_name ran exactly once and completed; nothing else of it is live; any
    other submission of it is an abandoned one (stopped before it ever ran)."""
    by_name: dict[str, list[dict]] = {}
    for j in jobs:
        by_name.setdefault(j["job_name"], []).append(j)
    assert set(by_name) == expected_names, sorted(set(by_name) ^ expected_names)
    counts = Counter()
    for name, attempts in by_name.items():
        that_ran = [j for j in attempts if ran(j)]
        counts[len(that_ran)] += 1
        assert len(that_ran) == 1, (name, [(j["unique_job_name"], j["status"]) for j in attempts])
        assert that_ran[0]["status"] == "Completed", that_ran[0]
        for other in attempts:
            if other is not that_ran[0]:
                assert other["status"] == "Stopped" and not other.get("start_time"), other


def check_outputs(manifest: Path, cells: int, name: str = "sweep") -> None:
    """Every cell's outputs are on disk, whole, with the marker naming the attempt."""
    root = manifest.parent / "outputs" / name
    for i in range(cells):
        folder = root / f"train-{i}"
        assert json.loads((folder / "result.json").read_text()) == {"i": i}, folder
        assert (folder / "payload.bin").read_bytes() == payload(i)
        marker = json.loads((folder / ".kaio-download.json").read_text())
        assert marker["unique_job_name"].endswith(marker["job_name"])
        assert f"cell {i}\n" in (folder / "logs" / "algo-1" / "stdout.log").read_text()
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".")] if root.exists() else []
    assert leftovers == [], leftovers


def state_file(manifest: Path) -> Path:
    return manifest.parent / ".kaio" / "state.json"


def check_state_valid(manifest: Path) -> dict[str, Any] | None:
    """The manifest's state as apply would read it (the snapshot, its journal replayed); the
    snapshot never half-written."""
    path = state_file(manifest)
    if path.exists():
        assert json.loads(path.read_text())["version"] == 1  # never half-written
    elif not journal_path(path).exists():
        return None
    data = State.load(path).to_json()
    assert data["version"] == 1
    return data


WAIT_S = 60.0  # a hang detector, never a timing assertion


def names(manifest: Path) -> set[str]:
    """The job_names the manifest plans."""
    return {j.job_name for j in kaio_spec.plan(manifest)}


def wait_for(predicate, what: str):
    """predicate()'s first truthy value, polled; AssertionError naming `what` after WAIT_S."""
    return support.wait_for(predicate, what, WAIT_S)
