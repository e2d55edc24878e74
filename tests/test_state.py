"""state.py: the local cache of what apply did; atomic, private, and ignored when unreadable."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

from kaio_spec.state import State, StateLock, state_path


def test_a_missing_file_is_an_empty_state(tmp_path):
    state = State.load(tmp_path / ".kaio" / "state.json")
    assert state.problem is None and state.job_names() == [] and state.intents() == {}


def test_round_trip_of_attempts_intents_and_downloads(tmp_path):
    path = tmp_path / ".kaio" / "state.json"
    state = State.load(path)
    state.set_manifest("demo", "kaio.yaml")
    state.set_intent("demo-a-1", {"known": ["u0"], "unique_job_name": None, "upload_url": None})
    state.update_intent("demo-a-1", unique_job_name="u1", upload_url="http://x/y?sig=1")
    state.save()
    again = State.load(path)
    assert again.intent("demo-a-1") == {
        "known": ["u0"],
        "unique_job_name": "u1",
        "upload_url": "http://x/y?sig=1",
    }
    again.add_attempt("demo-a-1", "u1")
    again.add_attempt("demo-a-1", "u1")  # once
    again.clear_intent("demo-a-1")
    again.mark_downloaded("demo-a-1", "u1", "/out/a")
    again.save()
    data = json.loads(path.read_text())
    assert data["manifest"] == "demo" and data["version"] == 1
    assert data["jobs"]["demo-a-1"] == {"unique_job_names": ["u1"], "downloaded": {"u1": "/out/a"}}


def test_the_file_is_private_and_no_temporary_file_is_left(tmp_path):
    path = tmp_path / ".kaio" / "state.json"
    state = State.load(path)
    state.add_attempt("j", "u")
    state.save()
    state.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_an_unreadable_file_is_ignored_with_a_reason(tmp_path):
    path = tmp_path / "state.json"
    for text, reason in [
        ("{not json", "is not valid JSON"),
        ('{"version": 99, "jobs": {}}', "is not a version 1 state"),
        ('{"version": 1, "jobs": []}', "is not a version 1 state"),
        ('{"version": 1, "jobs": {"a": {"unique_job_names": 3}}}', "is not a version 1 state"),
        ("[]", "is not a version 1 state"),
    ]:
        path.write_text(text)
        state = State.load(path)
        assert reason in state.problem and state.job_names() == [], text
        state.save()  # replaced by a good one
        assert State.load(path).problem is None


def test_state_path_is_beside_the_manifest(tmp_path):
    assert state_path(tmp_path / "sub" / "kaio.yaml") == tmp_path / "sub" / ".kaio" / "state.json"
    other = tmp_path / "sub" / ".kaio" / "state-prep.kaio.yaml.json"
    assert state_path(tmp_path / "sub" / "prep.kaio.yaml") == other


WRITER = textwrap.dedent(
    """
    import sys
    from kaio_spec.state import State
    state = State.load(sys.argv[1])
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        state.add_attempt(f"job-{i % 50}", "u" * (i % 3000))
        state.save()
    """
)


def test_a_process_killed_while_saving_leaves_a_whole_file(tmp_path):
    path = tmp_path / ".kaio" / "state.json"
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline() == "ready\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = State.load(path)
        assert state.problem is None, state.problem
        json.loads(path.read_text())


LOCKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kaio_spec.state import StateLock
    lock = StateLock(Path(sys.argv[1]))
    print(lock.acquire(), flush=True)
    time.sleep(60)
    """
)


def test_one_apply_per_manifest_and_a_killed_holder_frees_it(tmp_path):
    path = tmp_path / ".kaio" / "state.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "True\n"
        assert StateLock(path).acquire() is False
        assert StateLock(path).holder() == str(holder.pid)
        other = StateLock(state_path(tmp_path / "other.kaio.yaml"))  # another manifest
        assert other.acquire() is True
        other.release()
    finally:
        holder.kill()
        holder.wait()
    lock = StateLock(path)
    assert lock.acquire() is True
    lock.release()
    assert os.path.exists(path.parent / "state.lock")
