"""The journey around `kaio apply`: kaio jobs, status FILE, download, stop and logs, as real
`kaio` subprocesses against a real server, each test its own tenant. Jobs are submitted the way
apply submits them (planned job_name, params.json, labels) through the client, so these tests
stand on their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support import run_kaio, wait_for_job

from kaio_spec import downloads, journey
from kaio_spec.packaging import build_package
from kaio_spec.planner import plan

WAIT_S = 60.0  # a hang detector, never a timing assertion

JOB = textwrap.dedent(
    """
    import json, os, sys, time
    params = json.load(open("params.json"))
    host = os.environ["SM_CURRENT_HOST"]
    print(f"hello from {host}", flush=True)
    print(f"warning from {host}", file=sys.stderr, flush=True)
    if params.get("go"):
        while not os.path.exists(params["go"]):
            time.sleep(0.05)
        print(f"go on {host}", flush=True)
    json.dump({"ok": 1}, open("metrics.json", "w"))
    open("result.txt", "w").write(host)
    """
)


class Project:
    """A manifest in tmp with three jobs: `quick`, `waits` (2 instances, until GO exists) and
    `never` (never submitted by these tests)."""

    def __init__(self, root: Path):
        self.root = root
        self.go = root / "GO"
        (root / "code").mkdir(parents=True)
        (root / "code" / "job.py").write_text(JOB)
        self.file = root / "kaio.yaml"
        self.file.write_text(
            textwrap.dedent(
                f"""\
                version: 1
                name: jrny
                defaults: {{directory: ./code, entrypoint: job.py}}
                jobs:
                  quick: {{params: {{mode: quick}}}}
                  waits: {{instance_count: 2, params: {{go: "{self.go}"}}}}
                  never: {{params: {{mode: never}}}}
                """
            )
        )
        self.jobs = {job.key: job for job in plan(self.file).jobs}


@pytest.fixture
def project(tmp_path):
    return Project(tmp_path / "project")


@pytest.fixture
def env(kaio_server, api_key, tmp_path):
    """`kaio` at the fixture server with this test's tenant, in a home of its own."""
    return {
        "KAIO_API_BASE": kaio_server.url,
        "KAIO_API_KEY": api_key,
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }


def kaio(*args: str, env: dict, cwd: Path | None = None, input: str | None = None):
    return run_kaio(*args, env=env, cwd=cwd, input=input or "")


def popen(*args: str, env: dict) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith("KAIO_")}
    full.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "kaio_spec.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=full,
    )


def submit(client, job) -> str:
    """Submit a planned job as apply does; its unique job name."""
    with build_package(job.directory, job.entrypoint) as package:
        with_params = package.with_files({"params.json": job.params_json()})
        return client.submit_package(with_params, **job.submit_arguments())["unique_job_name"]


wait = wait_for_job


def running(job) -> bool:
    return job["status"] == "InProgress"


def job_lines(text: str | bytes) -> list[str]:
    """The lines a job printed, without the platform's own ("kaio: requirements.txt is
    satisfied ...", with or without a job's prefix)."""
    if isinstance(text, bytes):
        text = text.decode()
    return [line for line in text.splitlines() if not line.split("| ")[-1].startswith("kaio: ")]


def no_traceback(result) -> None:
    assert "Traceback" not in result.stderr, result.stderr


# ---- kaio jobs -----------------------------------------------------------------------------------


def test_jobs_when_there_are_none(env):
    result = kaio("jobs", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "no jobs on" in result.stderr
    assert json.loads(kaio("jobs", "-o", "json", env=env).stdout) == {"jobs": [], "count": 0}


def test_jobs_newest_first_archived_with_all(env, client, project):
    first = submit(client, project.jobs["quick"])
    second = submit(client, project.jobs["never"])
    wait(client, first)
    wait(client, second)

    table = kaio("jobs", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["UNIQUE", "JOB", "NAME", "STATUS", "SUBMITTED", "RAN", "INSTANCES"]
    assert [line.split()[0] for line in lines[1:]] == [second, first]
    assert all("Completed" in line for line in lines[1:])

    doc = json.loads(kaio("jobs", "-o", "json", env=env).stdout)
    assert doc["count"] == 2
    assert [j["unique_job_name"] for j in doc["jobs"]] == [second, first]
    assert list(doc["jobs"][0]) == list(journey.JOB_FIELDS)
    quick = doc["jobs"][1]
    assert quick["job_name"] == project.jobs["quick"].job_name
    assert quick["status"] == "Completed"
    assert quick["labels"]["key"] == "quick"  # apply's labels, kept by the local platform
    assert quick["instance_count"] == 1 and quick["archived"] is False

    client.archive_job(first)
    shown = json.loads(kaio("jobs", "-o", "json", env=env).stdout)["jobs"]
    assert [j["unique_job_name"] for j in shown] == [second]
    everything = json.loads(kaio("jobs", "--all", "-o", "json", env=env).stdout)["jobs"]
    assert {j["unique_job_name"]: j["archived"] for j in everything} == {first: True, second: False}
    assert "(archived)" in kaio("jobs", "--all", env=env).stdout


# ---- kaio status FILE and kaio download FILE ------------------------------------------------------


@pytest.mark.slow
def test_status_and_download_of_a_manifest(env, client, project):
    quick = submit(client, project.jobs["quick"])
    waits = submit(client, project.jobs["waits"])
    # A job of this manifest that it no longer defines (an earlier version's job key).
    orphan = client.submit_job(
        directory=project.root / "code", entrypoint="job.py", job_name="jrny-gone-0123abcd"
    )["unique_job_name"]
    wait(client, quick)
    wait(client, waits, running)

    status = kaio("status", str(project.file), "-o", "json", env=env)
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["manifest"] == "jrny"
    by_key = {j["key"]: j for j in doc["jobs"]}
    assert list(by_key) == ["quick", "waits", "never"]
    assert by_key["quick"] == {
        "key": "quick",
        "name": "quick",
        "job_name": project.jobs["quick"].job_name,
        "status": "Completed",
        "unique_job_name": quick,
        "attempts": 1,
        "unique_job_names": [quick],
        "failure_reason": None,
        "outputs": str(project.root / "outputs" / "jrny" / "quick"),
        "downloaded": False,
        "action": "unchanged",
    }
    assert by_key["waits"]["status"] == "InProgress"
    assert by_key["never"]["status"] is None and by_key["never"]["action"] == "create"
    assert [o["unique_job_name"] for o in doc["orphans"]] == [orphan]

    table = kaio("status", str(project.file), env=env)
    assert table.returncode == 0, table.stderr
    assert "not submitted" in table.stdout
    assert "orphans" in table.stdout and orphan in table.stdout
    assert "jrny: 3 jobs (1 Completed, 1 InProgress, 1 not submitted)" in table.stdout

    # download FILE: what has ended goes to its outputs folder; the rest is listed.
    got = kaio("download", str(project.file), "-o", "json", env=env)
    assert got.returncode == 0, got.stderr
    outcomes = {d["name"]: d["outcome"] for d in json.loads(got.stdout)["downloads"]}
    assert outcomes == {"quick": "downloaded", "waits": "not_ended", "never": "not_submitted"}
    quick_out = project.jobs["quick"].outputs
    assert (quick_out / "result.txt").read_text() == "algo-1"
    assert job_lines((quick_out / "logs" / "algo-1" / "stdout.log").read_text()) == [
        "hello from algo-1"
    ]
    assert downloads.is_complete(quick_out, quick)
    assert not project.jobs["waits"].outputs.exists()

    again = kaio("download", str(project.file), env=env)
    assert again.returncode == 0, again.stderr
    assert "quick: already" in again.stdout
    assert "waits: not ended" in again.stdout

    project.go.touch()
    wait(client, waits)
    last = kaio("download", str(project.file), "--only", "wait*", "-o", "json", env=env)
    assert last.returncode == 0, last.stderr
    (only,) = json.loads(last.stdout)["downloads"]
    assert (only["name"], only["outcome"]) == ("waits", "downloaded")
    waits_out = project.jobs["waits"].outputs
    assert (waits_out / "algo-1" / "result.txt").read_text() == "algo-1"
    assert (waits_out / "algo-2" / "result.txt").read_text() == "algo-2"

    final = json.loads(kaio("status", str(project.file), "-o", "json", env=env).stdout)
    assert [j["downloaded"] for j in final["jobs"]] == [True, True, False]


def test_download_to_dest_and_never_over_something_else(env, client, project, tmp_path):
    unique = submit(client, project.jobs["quick"])
    wait(client, unique)
    cwd = tmp_path / "here"
    cwd.mkdir()

    first = kaio("download", unique, env=env, cwd=cwd)
    assert first.returncode == 0, first.stderr
    assert f"{unique}: downloaded: 4 files in {unique}" in first.stdout
    assert (cwd / unique / "result.txt").read_text() == "algo-1"
    assert not [p.name for p in cwd.iterdir() if p.name.startswith(".")]  # no partial left

    again = kaio("download", unique, env=env, cwd=cwd)
    assert again.returncode == 0
    assert "already" in again.stdout

    # A folder holding files kaio did not download is left alone, unless --force.
    mine = cwd / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = kaio("download", unique, "--dest", "mine", env=env, cwd=cwd)
    assert refused.returncode == 1
    assert "mine already holds files kaio did not download; left alone" in refused.stdout
    assert (mine / "notes.txt").read_text() == "keep me"
    assert not (mine / "result.txt").exists()

    forced = kaio("download", unique, "--dest", "mine", "--force", "-o", "json", env=env, cwd=cwd)
    assert forced.returncode == 0, forced.stderr
    (doc,) = json.loads(forced.stdout)["downloads"]
    assert doc["outcome"] == "downloaded" and doc["name"] is None
    assert sorted(doc["files"]) == [
        "logs/algo-1/stderr.log",
        "logs/algo-1/stdout.log",
        "metrics.json",
        "result.txt",
    ]
    assert not (mine / "notes.txt").exists()
    assert downloads.read_marker(mine)["unique_job_name"] == unique


def test_download_errors(env, client, project, tmp_path):
    waits = submit(client, project.jobs["waits"])
    wait(client, waits, running)
    try:
        early = kaio("download", waits, "--dest", str(tmp_path / "early"), env=env)
        assert early.returncode == 1
        assert "has not ended (status InProgress)" in early.stdout
        assert not (tmp_path / "early").exists()
    finally:
        project.go.touch()

    unknown = kaio("download", "20260101-000000000-nothing", env=env)
    assert unknown.returncode == 2
    assert "20260101-000000000-nothing: no such job of yours" in unknown.stderr
    no_traceback(unknown)

    # A job_name instead of its unique name: the error points at the latest attempt.
    by_name = kaio("download", project.jobs["waits"].job_name, env=env)
    assert by_name.returncode == 2
    assert f"did you mean {waits}?" in by_name.stderr

    missing = kaio("download", str(tmp_path / "nope.yaml"), env=env)
    assert missing.returncode == 2
    assert "nope.yaml: no such file" in missing.stderr

    folder = kaio("download", str(project.root) + "/", env=env)
    assert folder.returncode == 2
    assert "is a folder; give the manifest file" in folder.stderr

    bad = project.root / "bad.yaml"
    bad.write_text("version: 1\nname: Bad Name\njobs: {a: {}}\n")
    invalid = kaio("status", str(bad), env=env)
    assert invalid.returncode == 2
    assert "bad.yaml:2:7: name:" in invalid.stderr
    # Every command reports a bad manifest the same way: each error on its line, then a count.
    assert invalid.stderr.splitlines()[-1] == f"2 errors in {bad}"
    assert not invalid.stderr.startswith("error:")
    no_traceback(invalid)


def test_download_library_sweeps_partials_of_dead_runs(client, project, tmp_path):
    unique = submit(client, project.jobs["quick"])
    wait(client, unique)
    tmp_path = tmp_path / "downloads"
    tmp_path.mkdir()
    dest = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".out.kaio-partial-{dead.pid}-abcd"
    leftover.mkdir()
    (leftover / "half.bin").write_bytes(b"x")
    result = downloads.download(client, unique, dest)
    assert result.outcome == "downloaded" and result.ok
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert downloads.download(client, unique, dest).outcome == "already"
    (dest / "result.txt").unlink()  # no longer complete: the folder is someone's now
    assert downloads.download(client, unique, dest).outcome == "conflict"


# ---- kaio stop -----------------------------------------------------------------------------------


def test_stop_a_manifest_asks_first(env, client, project):
    quick = submit(client, project.jobs["quick"])
    waits = submit(client, project.jobs["waits"])
    wait(client, quick)
    wait(client, waits, running)

    refused = kaio("stop", str(project.file), env=env)
    assert refused.returncode == 2
    assert "no terminal to confirm on; add --yes" in refused.stderr
    assert client.get_job(waits)["status"] == "InProgress"

    stopped = kaio("stop", str(project.file), "--yes", "-o", "json", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout) == {
        "stopped": [
            {
                "unique_job_name": waits,
                "job_name": project.jobs["waits"].job_name,
                "outcome": "stopping",
                "status": "Stopping",
            }
        ]
    }
    assert wait(client, waits)["status"] == "Stopped"
    assert client.get_job(quick)["status"] == "Completed"

    nothing = kaio("stop", str(project.file), "--yes", env=env)
    assert nothing.returncode == 0
    assert "no job is running; nothing to stop" in nothing.stderr


def test_stop_one_job(env, client, project):
    waits = submit(client, project.jobs["waits"])
    wait(client, waits, running)
    result = kaio("stop", waits, env=env)
    assert result.returncode == 0, result.stderr
    assert f"{waits}: stopping" in result.stderr
    assert wait(client, waits)["status"] == "Stopped"

    again = kaio("stop", waits, env=env)
    assert again.returncode == 0
    assert "already ended (Stopped); nothing to stop" in again.stderr

    unknown = kaio("stop", "20260101-000000000-nothing", env=env)
    assert unknown.returncode == 2
    assert "no such job of yours" in unknown.stderr
    no_traceback(unknown)


# ---- kaio logs -----------------------------------------------------------------------------------


def read_until(proc: subprocess.Popen, text: bytes) -> bytes:
    """stdout of `proc` up to and including `text` (a hang detector guards it)."""
    seen = b""
    deadline = time.monotonic() + WAIT_S
    while text not in seen:
        assert time.monotonic() < deadline, seen
        chunk = proc.stdout.read1(4096) if hasattr(proc.stdout, "read1") else proc.stdout.read(1)
        if not chunk:
            raise AssertionError(f"output ended before {text!r}: {seen!r}")
        seen += chunk
    return seen


def test_logs_follow_a_job_to_its_end(env, client, project):
    waits = submit(client, project.jobs["waits"])
    wait(client, waits, running)
    proc = popen("logs", waits, "-f", env=env)
    try:
        # GO only once both lines written before it were shown: each round reads a job's
        # stdout, then its stderr, so a "go on" written before the round that shows "warning"
        # would be shown first.
        seen = read_until(proc, b"warning from algo-1\n")
        project.go.touch()
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        project.go.touch()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    # stdout and stderr interleaved, in the order the job wrote them (read while it runs).
    assert job_lines(seen + out) == ["hello from algo-1", "warning from algo-1", "go on algo-1"]
    only_out = kaio("logs", waits, "--stdout", env=env)
    assert job_lines(only_out.stdout) == ["hello from algo-1", "go on algo-1"]

    other = kaio("logs", waits, "--host", "algo-2", "--stderr", env=env)
    assert other.returncode == 0, other.stderr
    assert other.stdout == "warning from algo-2\n"

    bad_host = kaio("logs", waits, "--host", "algo-3", env=env)
    assert bad_host.returncode == 2
    assert "the job's hosts are algo-1 to algo-2" in bad_host.stderr

    unknown = kaio("logs", "20260101-000000000-nothing", "-f", env=env)
    assert unknown.returncode == 2
    assert "no such job of yours" in unknown.stderr


def test_logs_of_a_manifest_prefix_each_line(env, client, project):
    quick = submit(client, project.jobs["quick"])
    waits = submit(client, project.jobs["waits"])
    wait(client, quick)
    wait(client, waits, running)
    project.go.touch()
    result = kaio("logs", str(project.file), "-f", env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(job_lines(result.stdout)) == [
        "quick | hello from algo-1",
        "quick | warning from algo-1",
        "waits | go on algo-1",
        "waits | hello from algo-1",
        "waits | warning from algo-1",
    ]
    one = kaio("logs", str(project.file), "--only", "quick", env=env)
    assert job_lines(one.stdout) == ["hello from algo-1", "warning from algo-1"]

    nothing = kaio("logs", str(project.file), "--only", "never", env=env)
    assert nothing.returncode == 2
    assert "none of its jobs has been submitted yet" in nothing.stderr
    no_match = kaio("logs", str(project.file), "--only", "zzz*", env=env)
    assert no_match.returncode == 2
    assert "--only 'zzz*': matches no job of the manifest" in no_match.stderr


def test_ctrl_c_while_following_exits_130_and_leaves_the_job_running(env, client, project):
    waits = submit(client, project.jobs["waits"])
    wait(client, waits, running)
    proc = popen("logs", waits, "-f", env=env)
    try:
        read_until(proc, b"hello from algo-1\n")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 130
        assert b"Traceback" not in err
        assert client.get_job(waits)["status"] == "InProgress"
    finally:
        project.go.touch()
        if proc.poll() is None:
            proc.kill()
    wait(client, waits)


def test_logs_on_a_server_without_the_route(env, kaio_server, client, project):
    """The hosted API has no logs route: a 404 for a job that exists says where logs are."""
    from faultproxy import FaultProxy

    unique = submit(client, project.jobs["quick"])
    wait(client, unique)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on("GET", r"/jobs/[^/]+/logs").status(404, "no route", times=None)
        result = kaio("logs", unique, "--api", proxy.url, env=env)
        unknown = kaio("logs", "20260101-000000000-nothing", "--api", proxy.url, env=env)
    assert result.returncode == 1
    assert "does not serve logs while jobs run" in result.stderr
    assert f"`kaio download {unique}`" in result.stderr
    no_traceback(result)
    assert unknown.returncode == 2
    assert "no such job of yours" in unknown.stderr


@pytest.mark.slow
def test_lost_server_mid_command_is_one_line(env, server_factory, tmp_path):
    """A server that goes away between login and the next call: exit 1, no traceback."""
    from faultproxy import FaultProxy

    server = server_factory()
    key = server.add_user()
    with FaultProxy(server.url) as proxy:
        proxy.on("GET", "/jobs").reset(times=None)
        result = kaio("jobs", "--api", proxy.url, env={**env, "KAIO_API_KEY": key})
    assert result.returncode == 1
    assert "lost contact with" in result.stderr
    no_traceback(result)
