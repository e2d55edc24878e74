"""apply's state journal under SIGKILL (issue 18): a `kaio apply` killed just after it committed
an intent to the journal and before its presign reached the server, or after the presign's
answer was committed and before the upload, is recovered by the next run from the journal alone
(the snapshot never had the intent), and every job runs exactly once. Killed during compaction:
tests/test_state.py. The moments are picked as tests/test_apply_reliability.py picks them: the
proxy holds the request in question, the test waits for the state to show the moment, then
kills."""

from __future__ import annotations

import json

import pytest
from apply_support import (
    check_exactly_once,
    check_outputs,
    check_state_valid,
    list_jobs,
    names,
    run_apply,
    start_apply,
    state_file,
    wait_for,
    write_project,
)
from faultproxy import FaultProxy


def _intents(manifest) -> dict:
    state = check_state_valid(manifest) or {"jobs": {}}
    return {name: rec["intent"] for name, rec in state["jobs"].items() if rec.get("intent")}


def _snapshot_intents(manifest) -> dict:
    data = json.loads(state_file(manifest).read_text())
    return {name: rec["intent"] for name, rec in data["jobs"].items() if rec.get("intent")}


@pytest.mark.parametrize(
    ("held", "moment"),
    [
        (("POST", "/jobs/presign"), "intent committed, presign not yet at the server"),
        (("PUT", "/objects/.*"), "presign answer committed, upload not yet at the server"),
    ],
)
def test_killed_between_journal_and_request_the_next_run_recovers(
    tmp_path, kaio_server, api_key, held, moment
):
    manifest = write_project(tmp_path, cells=3, max_parallel=3)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on(*held).delay(30, times=None)
        proc = start_apply(manifest, proxy.url, api_key)
        try:
            if held[0] == "POST":
                wait_for(lambda: len(_intents(manifest)) == 3, "three intents in the journal")
            else:
                wait_for(
                    lambda: (
                        len(_intents(manifest)) == 3
                        and all(i.get("upload_url") for i in _intents(manifest).values())
                    ),
                    "three intents with their upload URLs",
                )
            proc.kill()
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
        assert _snapshot_intents(manifest) == {}, f"{moment}: in the journal only"
        before = list_jobs(kaio_server.url, api_key)
        assert len(before) == (0 if held[0] == "POST" else 3), moment
        proxy.rules.clear()  # upload URLs name the proxy: it stays up, well-behaved now
        r = run_apply(manifest, proxy.url, api_key, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = list_jobs(kaio_server.url, api_key)
    check_exactly_once(jobs, names(manifest))
    if held[0] == "PUT":  # the same jobs got their packages: nothing abandoned
        assert {j["unique_job_name"] for j in jobs} == {j["unique_job_name"] for j in before}
    check_outputs(manifest, 3)
    state = check_state_valid(manifest)
    assert not state_file(manifest).with_name("state.journal").exists()  # compacted at the end
    assert not any(rec.get("intent") for rec in state["jobs"].values())


def test_killed_after_the_upload_before_its_result_was_committed_nothing_runs_twice(
    tmp_path, kaio_server, api_key
):
    """The upload's result is not fsynced on its own (the next commit carries it): a run killed
    in between leaves the intent with its URL, and the next run finds the job has its package
    and records it as the attempt, submitting nothing again."""
    manifest = write_project(tmp_path, cells=1, max_parallel=1)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on("GET", "/jobs/download/.*").delay(30, times=None)  # no commit after it
        proc = start_apply(manifest, proxy.url, api_key)
        try:
            wait_for(
                lambda: [j["status"] for j in list_jobs(kaio_server.url, api_key)] == ["Completed"],
                "the job uploaded and run to its end",
            )
            assert [i["upload_url"] is not None for i in _intents(manifest).values()] == [True]
            proc.kill()
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
        before = list_jobs(kaio_server.url, api_key)
        proxy.rules.clear()
        r = run_apply(manifest, proxy.url, api_key, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = list_jobs(kaio_server.url, api_key)
    check_exactly_once(jobs, names(manifest))
    assert [j["unique_job_name"] for j in jobs] == [j["unique_job_name"] for j in before]
    check_outputs(manifest, 1)
    state = check_state_valid(manifest)
    assert not any(rec.get("intent") for rec in state["jobs"].values())
