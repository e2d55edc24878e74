"""kaio_spec.apply on a real local platform: sweeps, idempotence, replace, retries, fail_fast,
max_parallel, downloads, --only and --prune. Each test is its own tenant on the shared server."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import datetime

import pytest
from apply_support import check_exactly_once, check_outputs, list_jobs, write_project

import kaio_spec
from kaio_spec import Action, ApplyResult, Client
from kaio_spec.executor import compare, prepare
from kaio_spec.executor.state import State


def names(plan_path) -> set[str]:
    return {j.job_name for j in kaio_spec.plan(plan_path)}


def test_a_sweep_runs_every_cell_once_and_downloads_everything(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=6, max_parallel=3)
    client = Client(kaio_server.url).login(api_key)
    result = kaio_spec.apply(manifest, client=client)
    assert isinstance(result, ApplyResult)
    assert result.ok and result.exit_code == 0, result.to_json()
    assert result.counts() == {"Completed": 6}
    for job in result.jobs:
        assert job.attempts == 1 and len(job.unique_job_names) == 1
        assert job.outputs == tmp_path / "outputs" / "sweep" / job.name
        assert job.failure_reason is None
    check_exactly_once(list_jobs(kaio_server.url, api_key), names(manifest))
    check_outputs(manifest, 6)
    state = json.loads((tmp_path / ".kaio" / "state.json").read_text())
    for job in result.jobs:
        rec = state["jobs"][job.job_name]
        assert rec["unique_job_names"] == list(job.unique_job_names)
        assert list(rec["downloaded"]) == list(job.unique_job_names)
        assert "intent" not in rec


def test_labels_tell_the_server_which_manifest_key_and_cell(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=2)
    client = Client(kaio_server.url).login(api_key)
    assert kaio_spec.apply(manifest, client=client).ok
    labels = sorted((j["labels"]["key"], j["labels"]["name"]) for j in client.get_jobs()["jobs"])
    assert labels == [("train", "train-0"), ("train", "train-1")]
    assert {j["labels"]["manifest"] for j in client.get_jobs()["jobs"]} == {"sweep"}


def test_applying_twice_submits_nothing_the_second_time_even_without_state(
    tmp_path, kaio_server, api_key
):
    manifest = write_project(tmp_path, cells=3)
    client = Client(kaio_server.url).login(api_key)
    first = kaio_spec.apply(manifest, client=client)
    assert first.ok
    before = list_jobs(kaio_server.url, api_key)
    marker_times = {
        j.name: (j.outputs / ".kaio-download.json").stat().st_mtime_ns for j in first.jobs
    }
    prepared = prepare(manifest, client)
    assert [j.action for j in prepared.selected] == [Action.UNCHANGED] * 3

    second = kaio_spec.apply(manifest, client=client)
    assert second.ok and [j.unique_job_names for j in second.jobs] == [
        j.unique_job_names for j in first.jobs
    ]
    # A fresh clone: no state file, no outputs. Still nothing submitted; outputs fetched again.
    shutil.rmtree(tmp_path / ".kaio")
    third = kaio_spec.apply(manifest, client=client)
    assert third.ok
    assert list_jobs(kaio_server.url, api_key) == before
    # Downloads were never repeated: the markers are the first run's.
    for j in third.jobs:
        assert (j.outputs / ".kaio-download.json").stat().st_mtime_ns == marker_times[j.name]
    shutil.rmtree(tmp_path / "outputs")
    fourth = kaio_spec.apply(manifest, client=client)
    assert fourth.ok and list_jobs(kaio_server.url, api_key) == before
    check_outputs(manifest, 3)


def test_changed_code_replaces_the_jobs_and_leaves_the_old_ones_alone(
    tmp_path, kaio_server, api_key
):
    manifest = write_project(tmp_path, cells=2)
    client = Client(kaio_server.url).login(api_key)
    first = kaio_spec.apply(manifest, client=client)
    assert first.ok
    old = {j.job_name for j in first.jobs}
    (tmp_path / "code" / "helper.py").write_text("X = 1\n")
    comparison = compare(client, kaio_spec.plan(manifest))
    assert [o.action for o in comparison] == [Action.REPLACE] * 2
    assert {r["job_name"] for o in comparison for r in o.replaced} == old
    assert comparison.orphans == ()  # older versions are not orphans: --prune leaves them
    second = kaio_spec.apply(manifest, client=client)
    assert second.ok
    new = {j.job_name for j in second.jobs}
    assert new.isdisjoint(old)
    jobs = list_jobs(kaio_server.url, api_key)
    assert {j["job_name"] for j in jobs} == old | new
    assert all(j["status"] == "Completed" for j in jobs)
    for j in second.jobs:  # the new outputs replaced the old ones in the same folder
        marker = json.loads((j.outputs / ".kaio-download.json").read_text())
        assert marker["unique_job_name"] == j.unique_job_names[-1]


def test_a_failing_job_is_retried_and_counted_from_the_api(tmp_path, kaio_server, api_key):
    flags = f"~/.kaio-test-fail-once-{uuid.uuid4().hex}"  # isolated jobs write only their HOME
    manifest = write_project(tmp_path, cells=2, retries=1, env={"FAIL_ONCE_DIR": flags})
    client = Client(kaio_server.url).login(api_key)
    result = kaio_spec.apply(manifest, client=client)
    assert result.ok, result.to_json()
    for job in result.jobs:
        assert job.attempts == 2 and len(job.unique_job_names) == 2
    for job in result.jobs:  # oldest first: the failed attempt, then the completed one
        statuses = [client.get_job(u)["status"] for u in job.unique_job_names]
        assert statuses == ["Failed", "Completed"]
    check_outputs(manifest, 2)  # the completed attempt's outputs replaced the failed one's logs


def test_retries_are_counted_from_the_api_not_the_state_file(tmp_path, kaio_server, api_key):
    """A job that failed once, with retries: 1, applied from a fresh clone: it is retried once,
    and after a second failure it stays failed (no third attempt), state file or not."""
    manifest = write_project(tmp_path, cells=1, retries=1, env={"FAIL_CELLS": "0"})
    client = Client(kaio_server.url).login(api_key)
    result = kaio_spec.apply(manifest, client=client)
    assert not result.ok and result.exit_code == 1
    (job,) = result.jobs
    assert (job.status, job.attempts) == ("Failed", 2)
    assert "exit code 4" in job.failure_reason or "4" in job.failure_reason
    assert job.log_path is not None and "always fails" in job.log_path.read_text()
    shutil.rmtree(tmp_path / ".kaio")
    assert [o.action for o in compare(client, kaio_spec.plan(manifest))] == [Action.UNCHANGED]
    again = kaio_spec.apply(manifest, client=client)
    assert again.jobs[0].attempts == 2 and len(list_jobs(kaio_server.url, api_key)) == 2


def test_fail_fast_stops_running_jobs_and_submits_nothing_more(tmp_path, kaio_server, api_key):
    # Cell 0 fails once cells 1-2 run (before, a loaded machine could see it fail before they
    # were submitted); cells 1-2 sleep; cells 3-5 wait for room that never comes.
    env = {"FAIL_CELLS": "0", "SAY_RUNNING": f"kaio-test-{uuid.uuid4().hex}"}
    env["FAIL_ONCE_RUNNING"] = "1,2"
    manifest = write_project(tmp_path, cells=6, max_parallel=3, fail_fast=True, sleep=20, env=env)
    client = Client(kaio_server.url).login(api_key)
    result = kaio_spec.apply(manifest, client=client)
    assert not result.ok and result.halted and "fail_fast" in result.halted
    by_name = {j.name: j for j in result.jobs}
    assert by_name["train-0"].status == "Failed"
    assert {by_name[f"train-{i}"].status for i in (1, 2)} == {"Stopped"}
    assert {by_name[f"train-{i}"].status for i in (3, 4, 5)} == {"NotSubmitted"}
    assert len(list_jobs(kaio_server.url, api_key)) == 3
    # Failed and stopped jobs' logs are downloaded too.
    assert by_name["train-0"].log_path and by_name["train-0"].log_path.is_file()
    assert (by_name["train-1"].outputs / "logs" / "algo-1" / "stdout.log").is_file()


def _max_overlap(jobs: list[dict]) -> int:
    events = []
    for j in jobs:
        events.append((datetime.fromisoformat(j["timestamp"]), 1))
        events.append((datetime.fromisoformat(j["end_time"]), -1))
    events.sort(key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_max_parallel_bounds_the_jobs_in_flight(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=7, max_parallel=2, sleep=0.3)
    client = Client(kaio_server.url).login(api_key)
    assert kaio_spec.apply(manifest, client=client).ok
    jobs = list_jobs(kaio_server.url, api_key)
    assert len(jobs) == 7
    # From each submission to its end, as the server recorded them.
    assert _max_overlap(jobs) <= 2


def test_only_applies_the_matching_jobs(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=3)
    client = Client(kaio_server.url).login(api_key)
    result = kaio_spec.apply(manifest, client=client, only="train-1")
    assert [j.name for j in result.jobs] == ["train-1"] and result.ok
    assert [j["labels"]["name"] for j in list_jobs(kaio_server.url, api_key)] == ["train-1"]
    with pytest.raises(kaio_spec.InvalidInput, match="matches no job"):
        kaio_spec.apply(manifest, client=client, only="nope*")


def test_prune_stops_live_orphans(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=2, sleep=60)
    client = Client(kaio_server.url).login(api_key)
    first = kaio_spec.apply(manifest, client=client, detach=True)
    assert first.detached and first.exit_code == 0
    # The manifest drops cell 1: its job is an orphan now.
    manifest.write_text(manifest.read_text().replace("i: [0, 1]", "i: [0]"))
    comparison = compare(client, kaio_spec.plan(manifest))
    assert [o["job_name"] for o in comparison.orphans] == [first.jobs[1].job_name]
    assert comparison.to_json()["orphans"][0]["action"] == "orphan"
    result = kaio_spec.apply(manifest, client=client, prune=True, detach=True)
    assert result.stopped_orphans == (first.jobs[1].unique_job_names[0],)
    orphan = client.get_job(first.jobs[1].unique_job_names[0])
    assert orphan["status"] in ("Stopping", "Stopped")
    client.stop_job(first.jobs[0].unique_job_names[0])


def test_a_declined_confirmation_does_nothing(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=2)
    client = Client(kaio_server.url).login(api_key)
    seen = []
    result = kaio_spec.apply(
        manifest, client=client, yes=False, confirm=lambda p: seen.append(p) or False
    )
    assert result.declined and result.exit_code == 1
    assert [j.action for j in seen[0].selected] == [Action.CREATE] * 2
    assert list_jobs(kaio_server.url, api_key) == []


def test_a_corrupt_state_file_is_ignored_and_replaced(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=1)
    (tmp_path / ".kaio").mkdir()
    (tmp_path / ".kaio" / "state.json").write_text('{"version": 1, "jobs": ')
    client = Client(kaio_server.url).login(api_key)
    assert kaio_spec.apply(manifest, client=client).ok
    assert State.load(tmp_path / ".kaio" / "state.json").problem is None


def test_outputs_inside_the_job_folder_change_nothing(tmp_path, kaio_server, api_key):
    """The default layout: code beside the manifest (directory "."), outputs under ./outputs/.
    Downloads land inside the job's folder, yet they are never packaged, so the jobs stay
    unchanged on the next apply and no package carries earlier outputs."""
    write_project(tmp_path, cells=2)
    (tmp_path / "train.py").write_text((tmp_path / "code" / "train.py").read_text())
    manifest = tmp_path / "kaio.yaml"
    manifest.write_text(manifest.read_text().replace("  directory: ./code\n", "  directory: .\n"))
    client = Client(kaio_server.url).login(api_key)
    first = kaio_spec.apply(manifest, client=client)
    assert first.ok and (tmp_path / "outputs" / "sweep" / "train-0" / "result.json").is_file()
    (job,) = kaio_spec.plan(manifest).jobs[:1]
    # The outputs root covers every job's folder under it: one exclusion, whatever the sweep size
    # (besides the manifest and .env, never packaged either).
    assert job.package_exclude == (".env", "kaio.yaml", "outputs")
    assert [o.action for o in compare(client, kaio_spec.plan(manifest))] == [Action.UNCHANGED] * 2
    again = kaio_spec.apply(manifest, client=client)
    assert [j.unique_job_names for j in again.jobs] == [j.unique_job_names for j in first.jobs]
    from kaio_spec.packaging import build_package

    with build_package(tmp_path, "train.py", exclude=job.package_exclude) as package:
        assert package.content_hash == job.content_hash
        assert not [p for p in package.paths() if p.startswith(("outputs", ".kaio"))]
