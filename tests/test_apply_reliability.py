"""apply under fire: SIGKILLed at any moment, through a misbehaving network, with the server
killed under it. Whatever happens, a re-run ends with every job run exactly once (a submission
abandoned before it ever ran aside: recover.py), every output whole, and state.json valid."""

from __future__ import annotations

import os
import random
import time

import pytest
from apply_support import (
    WAIT_S,
    check_exactly_once,
    check_outputs,
    check_state_valid,
    list_jobs,
    names,
    run_apply,
    start_apply,
    wait_for,
    write_project,
)
from faultproxy import FaultProxy

import kaio_spec
from kaio_spec import Client, PlatformError
from kaio_spec.executor import QuietReporter


def _with_data(manifest, megabytes: int = 4) -> None:
    """A data file in the job folder: packaging takes a moment (a window to be killed in)."""
    (manifest.parent / "code" / "data.bin").write_bytes(os.urandom(megabytes * 1024 * 1024))


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun(tmp_path, kaio_server, api_key):
    """A 10-job sweep whose `kaio apply` is SIGKILLed again and again (while packaging, between
    presign and upload — the PUTs are slowed down —, while polling, while downloading — the
    downloads too), then run to the end."""
    seed = int(os.environ.get("KAIO_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    manifest = write_project(tmp_path, cells=10, max_parallel=4, sleep=0.3, poll_seconds=0.2)
    _with_data(manifest)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on("PUT", "/objects/.*").delay(0.25, times=None)
        proxy.on("GET", "/objects/.*").delay(0.05, times=None)
        kills = 0
        for delay in [0.3, 0.9, *(rng.uniform(0.3, 3.0) for _ in range(4))]:
            proc = start_apply(manifest, proxy.url, api_key)
            time.sleep(delay)
            if proc.poll() is not None:
                break  # it finished before the kill
            proc.kill()
            proc.wait()
            kills += 1
            check_state_valid(manifest)
        r = run_apply(manifest, proxy.url, api_key, "--yes", timeout=120)
    assert r.returncode == 0, f"seed {seed}: {r.stdout}{r.stderr}"
    assert kills >= 2, f"seed {seed}: apply finished before it could be killed"
    check_exactly_once(list_jobs(kaio_server.url, api_key), names(manifest))
    check_outputs(manifest, 10)
    state = check_state_valid(manifest)
    assert not any(rec.get("intent") for rec in state["jobs"].values())


def test_killed_between_presign_and_upload_the_upload_is_sent_again(tmp_path, kaio_server, api_key):
    """The state file has the presign's answer: the next run PUTs the package to the same job
    (the server takes it once), so nothing is abandoned at all."""
    manifest = write_project(tmp_path, cells=1)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on("PUT", "/objects/.*").delay(30)
        proc = start_apply(manifest, proxy.url, api_key)
        try:
            wait_for(
                lambda: (
                    (check_state_valid(manifest) or {}).get("jobs")
                    and any(
                        (rec.get("intent") or {}).get("upload_url")
                        for rec in check_state_valid(manifest)["jobs"].values()
                    )
                ),
                "an intent with its upload URL",
            )
            proc.kill()
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
        (pending,) = list_jobs(kaio_server.url, api_key)
        assert pending["status"] == "Pending"
        proxy.rules.clear()  # the upload URL names the proxy: it stays up, well-behaved now
        r = run_apply(manifest, proxy.url, api_key, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    (job,) = list_jobs(kaio_server.url, api_key)
    assert (job["unique_job_name"], job["status"]) == (pending["unique_job_name"], "Completed")
    check_outputs(manifest, 1)


def test_killed_before_the_presign_answer_was_recorded(tmp_path, kaio_server, api_key):
    """The server made the job, the answer never reached the state file: the next run finds it
    by job_name, stops it (it can never get its package) and submits again as the same attempt."""
    manifest = write_project(tmp_path, cells=1)

    def hold(status, headers, body):
        time.sleep(30)  # the answer never comes back before the kill
        return status, headers, body

    with FaultProxy(kaio_server.url) as proxy:
        proxy.on("POST", "/jobs/presign").rewrite(hold)
        proc = start_apply(manifest, proxy.url, api_key)
        try:
            wait_for(lambda: list_jobs(kaio_server.url, api_key), "the presigned job")
            proc.kill()
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
    state = check_state_valid(manifest)
    (rec,) = state["jobs"].values()
    assert rec["intent"]["unique_job_name"] is None
    r = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = list_jobs(kaio_server.url, api_key)
    assert sorted(j["status"] for j in jobs) == ["Completed", "Stopped"]
    check_exactly_once(jobs, names(manifest))
    check_outputs(manifest, 1)
    result_state = check_state_valid(manifest)
    (rec,) = result_state["jobs"].values()
    assert "intent" not in rec and len(rec["unique_job_names"]) == 1


def test_a_dropped_presign_answer_is_settled_by_job_name(tmp_path, kaio_server, api_key):
    """The server acted on the presign, the answer was lost: apply looks the job up before
    submitting again, and never leaves two live jobs of one job_name."""
    manifest = write_project(tmp_path, cells=2)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on("POST", "/jobs/presign").drop_response(times=1)
        client = Client(proxy.url).login(api_key)
        result = kaio_spec.apply(manifest, client=client, uploads=2)
        assert proxy.count("POST", "/jobs/presign") == 3
    assert result.ok, result.to_json()
    jobs = list_jobs(kaio_server.url, api_key)
    check_exactly_once(jobs, names(manifest))
    abandoned = [j for j in jobs if j["status"] == "Stopped"]
    assert len(abandoned) == 1 and abandoned[0]["status_history"][-1]["status"] == "Stopped"
    assert {j.attempts for j in result.jobs} == {1}
    check_outputs(manifest, 2)


def test_through_resets_502_503_slow_answers_and_cut_downloads(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=6, max_parallel=3)
    with FaultProxy(kaio_server.url) as proxy:
        # Fewer than the client's tries: the first listing (before any loop) gets through.
        proxy.on("GET", "/jobs").status(503, times=2)
        proxy.on("GET", "/jobs").reset(times=1)
        proxy.on("GET", "/jobs").delay(0.3, times=3)
        proxy.on("POST", "/jobs/presign").status(502, times=1)  # never reached the server
        proxy.on("POST", "/jobs/presign").reset(times=1)  # nor this one
        proxy.on("POST", "/jobs/presign").drop_response(times=1)  # this one did
        proxy.on("POST", "/jobs/presign").delay(0.5, times=1)
        proxy.on("PUT", "/objects/.*").reset(times=2)
        proxy.on("PUT", "/objects/.*").status(503, times=1)
        proxy.on("PUT", "/objects/.*").drop_response(times=1)  # stored, answer lost
        proxy.on("GET", "/jobs/download/.*").status(502, times=2)
        proxy.on("GET", "/objects/.*").truncate(10, times=2)
        proxy.on("GET", "/objects/.*").reset(times=1)
        client = Client(proxy.url, backoff=0.05).login(api_key)
        result = kaio_spec.apply(manifest, client=client, uploads=3)  # concurrent submissions
        unused = [(r.method, r.path.pattern, r.action) for r in proxy.rules if r.hits < r.times]
    assert result.ok, result.to_json()
    assert unused == []  # every fault was met
    jobs = list_jobs(kaio_server.url, api_key)
    check_exactly_once(jobs, names(manifest))
    assert len(jobs) == 7  # six jobs, and the one whose presign answer was dropped
    check_outputs(manifest, 6)


class OutageAtStart(QuietReporter):
    """Makes the API unreachable (through the proxy) as soon as the run starts."""

    def __init__(self, proxy: FaultProxy, times: int):
        self.proxy, self.times, self.notes = proxy, times, []

    def begin(self, jobs):
        self.proxy.on("GET", "/jobs").reset(times=self.times)

    def note(self, text):
        self.notes.append(text)


def test_apply_waits_for_an_unreachable_api_and_carries_on(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=2, poll_seconds=0.1)
    with FaultProxy(kaio_server.url) as proxy:
        client = Client(proxy.url, retries=0).login(api_key)  # every reset reaches apply
        reporter = OutageAtStart(proxy, times=3)
        result = kaio_spec.apply(manifest, client=client, reporter=reporter)
    assert result.ok, result.to_json()
    assert reporter.notes[0].startswith("cannot reach the API")
    assert "reconnected to the API; reconciling" in reporter.notes
    check_exactly_once(list_jobs(kaio_server.url, api_key), names(manifest))
    check_outputs(manifest, 2)


def test_an_api_that_refuses_to_list_jobs_stops_apply_with_a_platform_error(
    tmp_path, kaio_server, api_key
):
    # The refusal used to escape apply as requests.HTTPError (a traceback from `kaio apply`);
    # transport.platform_errors makes it the PlatformError the CLI prints in one line (exit 1).
    manifest = write_project(tmp_path, cells=1, poll_seconds=0.1)
    with FaultProxy(kaio_server.url) as proxy:
        client = Client(proxy.url, retries=0).login(api_key)
        proxy.on("GET", "/jobs").status(403, error="this key may not list jobs")
        with pytest.raises(PlatformError) as e:
            kaio_spec.apply(manifest, client=client, reporter=QuietReporter())
    assert (e.value.status, e.value.transient, e.value.cause) == (403, False, "HTTP 403")
    assert proxy.url in str(e.value) and "this key may not list jobs" in str(e.value)
    assert list_jobs(kaio_server.url, api_key) == []  # nothing was submitted


@pytest.mark.slow
@pytest.mark.parametrize("retries", [1])
def test_server_killed_and_restarted_mid_run(tmp_path, server_factory, retries):
    server = server_factory(max_instances=8)
    key = server.add_user()
    manifest = write_project(tmp_path, cells=4, max_parallel=4, sleep=3, retries=retries)
    proc = start_apply(manifest, server.url, key)
    try:
        wait_for(
            lambda: sum(j["status"] == "InProgress" for j in list_jobs(server.url, key)) >= 2,
            "jobs running",
        )
        server.kill()
        time.sleep(1.5)  # apply finds the API gone and waits
        server.start()
        assert proc.wait(WAIT_S * 2) == 0, (tmp_path / "apply.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "apply.log").read_text()
    assert "platform restarted" in log  # in the attempt's status line and the summary
    jobs = list_jobs(server.url, key)
    restarted = [j for j in jobs if "platform restarted" in (j["failure_reason"] or "")]
    assert restarted  # those counted as failed attempts and were retried
    by_name: dict[str, list] = {}
    for j in jobs:
        by_name.setdefault(j["job_name"], []).append(j["status"])
    assert set(by_name) == names(manifest)
    for statuses in by_name.values():
        assert statuses.count("Completed") == 1
        assert sum(s in ("Pending", "InProgress") for s in statuses) == 0
    check_outputs(manifest, 4)
