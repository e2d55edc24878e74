"""executor/state.py: the local cache of what apply did; atomic, private, and ignored when unreadable."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time

from kaio_spec.executor.state import State, StateLock, state_path


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
    from kaio_spec.executor.state import State
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
    from kaio_spec.executor.state import StateLock
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


def _expected_jobs(n: int) -> dict:
    return {
        f"job-{i}": {"unique_job_names": [f"u{i}"], "downloaded": {f"u{i}": f"/out/{i}"}}
        for i in range(n)
    }


def test_commit_appends_only_the_changes_and_load_replays_them(tmp_path):
    """A commit costs what changed: the snapshot is left alone, the journal grows by the changes;
    a reader (another State.load) sees them; compaction folds them into the snapshot."""
    path = tmp_path / ".kaio" / "state.json"
    state = State.load(path)
    state.add_attempt("old", "u0")
    state.save()
    snapshot = path.read_bytes()
    state.set_intent("job-a", {"known": [], "unique_job_name": None, "upload_url": None})
    state.commit()
    state.update_intent("job-a", unique_job_name="u1", upload_url="http://x/y?sig=1")
    state.commit()
    assert path.read_bytes() == snapshot  # not rewritten
    journal = path.with_name("state.journal")
    assert len(journal.read_text().splitlines()) == 3  # its generation, then one line a change
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600  # an upload URL is a credential
    assert State.load(path).intent("job-a")["upload_url"] == "http://x/y?sig=1"
    state.add_attempt("job-a", "u1")
    state.clear_intent("job-a")
    state.commit()
    again = State.load(path)
    assert again.intent("job-a") is None and again.unique_job_names("job-a") == ["u1"]
    again.save()  # compaction
    assert not journal.exists()
    assert json.loads(path.read_text())["jobs"]["job-a"]["unique_job_names"] == ["u1"]


def test_a_torn_last_journal_line_is_ignored(tmp_path):
    """A run killed while appending leaves half a line: that change was never committed."""
    path = tmp_path / ".kaio" / "state.json"
    state = State.load(path)
    state.add_attempt("job-a", "u1")
    state.commit()
    state.close()
    with open(path.with_name("state.journal"), "ab") as f:
        f.write(b'{"op":"attempt","job":"job-b","uni')
    again = State.load(path)
    assert again.problem is None and again.job_names() == ["job-a"]


def test_a_journal_older_than_the_snapshot_is_not_applied_again(tmp_path):
    """What a run killed during compaction leaves after the new snapshot is in place: the old
    generation's journal, whose changes the snapshot holds already."""
    path = tmp_path / ".kaio" / "state.json"
    state = State.load(path)
    state.set_intent("job-a", {"known": [], "unique_job_name": None, "upload_url": None})
    state.commit()
    journal = path.with_name("state.journal")
    stale = journal.read_bytes()
    state.clear_intent("job-a")
    state.add_attempt("job-a", "u1")
    state.save()
    journal.write_bytes(stale)  # as if the kill came before its removal
    again = State.load(path)
    assert again.intent("job-a") is None and again.unique_job_names("job-a") == ["u1"]
    again.set_intent("job-b", {"known": []})
    again.commit()  # a new journal for the new generation, the stale one dropped
    assert State.load(path).intents() == {"job-b": {"known": []}}


COMPACTOR = textwrap.dedent(
    """
    import sys
    from kaio_spec.executor.state import State
    n = int(sys.argv[2])
    state = State.load(sys.argv[1])
    if not state.job_names():
        for i in range(n):
            state.add_attempt(f"job-{i}", f"u{i}")
            state.mark_downloaded(f"job-{i}", f"u{i}", f"/out/{i}")
        state.save()
    print("ready", flush=True)
    k = len(state.job_names())
    while True:
        state.add_attempt(f"job-{k}", f"u{k}")
        state.mark_downloaded(f"job-{k}", f"u{k}", f"/out/{k}")
        state.commit()
        print(k, flush=True)  # committed: it must survive whatever comes next
        k += 1
        state.save()  # compaction: most of the loop's time, so the kill mostly lands in one
    """
)


def test_a_process_killed_while_compacting_loses_nothing(tmp_path):
    """SIGKILL at random moments of compaction (writing the snapshot, replacing it, removing
    the journal, starting the next one): every committed change is still there after, and
    nothing else."""
    path = tmp_path / ".kaio" / "state.json"
    rng = random.Random(int(os.environ.get("KAIO_TEST_SEED", "18")))
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", COMPACTOR, str(path), "5000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        committed = int(proc.stdout.read().split()[-1])
        state = State.load(path)
        assert state.problem is None, state.problem
        jobs = state.to_json()["jobs"]
        lost = [k for k, v in _expected_jobs(committed + 1).items() if jobs.get(k) != v]
        assert not lost, f"committed, then lost: {lost[:5]}"
        assert len(jobs) in (committed + 1, committed + 2)  # the next one, if committed
