"""`kaio apply FILE` and `kaio plan FILE` against the API, as subprocesses on a real platform."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest
from apply_support import (
    KAIO,
    WAIT_S,
    check_exactly_once,
    check_outputs,
    check_state_valid,
    kaio_env,
    list_jobs,
    names,
    run_apply,
    start_apply,
    wait_for,
    write_project,
)


def test_without_a_terminal_and_without_yes_it_refuses(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=2)
    r = run_apply(manifest, kaio_server.url, api_key)
    assert r.returncode == 2
    assert "--yes" in r.stderr and "Traceback" not in r.stderr
    assert list_jobs(kaio_server.url, api_key) == []


def test_apply_yes_runs_the_sweep_and_prints_plain_lines_and_a_summary(
    tmp_path, kaio_server, api_key
):
    manifest = write_project(tmp_path, cells=3)
    r = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert re.search(r"^KEY\s+NAME\s+INSTANCES\s+VALUES\s+ACTION$", out, re.M)
    assert "sweep: 3 jobs (3 to create)" in out
    # Plain, timestamped lines (no terminal): no escape codes.
    assert re.search(r"^\d\d:\d\d:\d\d train-0: submitted \d{8}-\d{9}-sweep-train-0-", out, re.M)
    assert "\x1b[" not in out
    assert "sweep: 3 jobs: 3 completed" in out
    assert re.search(r"^outputs: outputs/sweep$", out, re.M)
    check_outputs(manifest, 3)
    check_exactly_once(list_jobs(kaio_server.url, api_key), names(manifest))

    # Planned against the API now: every job unchanged, in the table and in JSON.
    env = kaio_env(tmp_path / "home", api_key)
    plan = subprocess.run(
        [KAIO, "plan", "kaio.yaml", "--api", kaio_server.url, "-o", "json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert list(doc) == ["manifest", "file", "jobs", "orphans"]
    assert [j["action"] for j in doc["jobs"]] == ["unchanged"] * 3 and doc["orphans"] == []
    again = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert again.returncode == 0 and "submitted" not in again.stdout
    assert "3 to unchanged" in again.stdout or "unchanged" in again.stdout


def test_plan_lists_orphans_and_apply_exits_1_with_the_failure_reason(
    tmp_path, kaio_server, api_key
):
    manifest = write_project(tmp_path, cells=2, env={"FAIL_CELLS": "1"})
    r = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert r.returncode == 1
    assert "sweep: 2 jobs: 1 completed, 1 failed" in r.stdout
    assert re.search(r"^  train-1 \(sweep-train-1-[0-9a-f]{8}\): Failed: ", r.stdout, re.M)
    assert "log: outputs/sweep/train-1/logs/algo-1/stderr.log" in r.stdout
    manifest.write_text(manifest.read_text().replace("i: [0, 1]", "i: [0]"))
    env = kaio_env(tmp_path / "home", api_key)
    plan = subprocess.run(
        [KAIO, "plan", str(manifest), "--api", kaio_server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    # Mentioned once, as a count with the command that clears them (not one line each).
    assert (
        f"1 orphaned job (of sweep, no longer in {manifest}): `kaio forget {manifest}` "
        "archives it" in plan.stdout
    )
    assert "sweep-train-1-" not in plan.stdout


def test_an_invalid_manifest_exits_2(tmp_path, kaio_server, api_key):
    (tmp_path / "kaio.yaml").write_text("version: 1\nname: bad\njobs:\n  t:\n    retries: -1\n")
    r = run_apply(tmp_path / "kaio.yaml", kaio_server.url, api_key, "--yes")
    assert r.returncode == 2 and "kaio.yaml:5:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_ctrl_c_leaves_jobs_running_exits_130_and_apply_resumes(tmp_path, kaio_server, api_key):
    # Six seconds a job: long enough that a loaded machine still sees the first two running
    # after the interrupt (at three, they had once ended and a third was submitted).
    manifest = write_project(tmp_path, cells=4, max_parallel=2, sleep=6)
    proc = start_apply(manifest, kaio_server.url, api_key)
    try:
        wait_for(
            lambda: any(j["status"] == "InProgress" for j in list_jobs(kaio_server.url, api_key)),
            "a job running",
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT_S) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "apply.log").read_text()
    assert "interrupted" in log and "Traceback" not in log
    assert f"kaio apply {manifest}" in log and f"kaio stop {manifest}" in log
    jobs = list_jobs(kaio_server.url, api_key)
    assert len(jobs) < 4  # nothing more was submitted
    assert any(j["status"] in ("Pending", "InProgress") for j in jobs)  # left running
    check_state_valid(manifest)
    r = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    check_exactly_once(list_jobs(kaio_server.url, api_key), names(manifest))
    check_outputs(manifest, 4)


def test_detach_returns_once_everything_is_submitted(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=2, sleep=2)
    r = run_apply(manifest, kaio_server.url, api_key, "--yes", "--detach")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "detached: " in r.stdout
    jobs = list_jobs(kaio_server.url, api_key)
    assert len(jobs) == 2 and not (tmp_path / "outputs").exists()
    r = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert r.returncode == 0 and "submitted" not in r.stdout
    check_outputs(manifest, 2)


def test_on_a_terminal_it_asks_and_shows_a_live_table(tmp_path, kaio_server, api_key):
    import pty

    manifest = write_project(tmp_path, cells=2)
    env = kaio_env(tmp_path, api_key)
    env.update(NO_COLOR="1", COLUMNS="100", LINES="30")
    pid, fd = pty.fork()
    if pid == 0:  # the child: kaio apply on a terminal
        os.chdir(tmp_path)
        os.execve(KAIO, [KAIO, "apply", "kaio.yaml", "--api", kaio_server.url], env)
    out = b""
    answered = False
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if not answered and b"Apply this plan?" in out:
            os.write(fd, b"y\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert answered
    assert "JOB" in text and "STATUS" in text and "ELAPSED" in text  # the live table
    assert "Completed" in text and "sweep: 2 jobs: 2 completed" in text
    assert not re.search(r"\x1b\[[0-9;]*3\dm", text)  # NO_COLOR: no foreground colours
    check_outputs(manifest, 2)


@pytest.mark.slow
def test_an_unreachable_api_exits_1_without_a_traceback(tmp_path):
    manifest = write_project(tmp_path, cells=1)
    for command in (["apply", "--yes"], ["plan"]):
        r = subprocess.run(
            [KAIO, *command, str(manifest), "--api", "http://127.0.0.1:9"],
            env=kaio_env(tmp_path, "some-key"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
