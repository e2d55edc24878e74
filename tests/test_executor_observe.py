"""observe / find_orphans / compare: a plan against what GET /jobs says, without a server (the
listing is data; tests/test_executor.py does the same against a real platform)."""

from __future__ import annotations

import pytest
from apply_support import write_project

import kaio_spec
from kaio_spec import Action
from kaio_spec.executor import counts_as_attempt, find_orphans, observe
from kaio_spec.executor.observe import platform_failure


@pytest.fixture
def plan(tmp_path):
    return kaio_spec.plan(write_project(tmp_path, cells=2, retries=1))


_clock = iter(range(100000, 999999))


def api_job(job_name: str, status: str, *, started: bool = True, **extra) -> dict:
    unique = f"20261128-{next(_clock):06d}000-{job_name}"
    history = [{"status": "Pending", "at": "t"}]
    if started:
        history.append({"status": "InProgress", "at": "t"})
    if status not in ("Pending", "InProgress"):
        history.append({"status": status, "at": "t"})
    return {
        "unique_job_name": unique,
        "job_name": job_name,
        "status": status,
        "start_time": "2026-11-28T00:00:00+00:00" if started else None,
        "status_history": history,
        "labels": {},
        **extra,
    }


def actions(plan, jobs) -> list[Action]:
    return [o.action for o in observe(plan, jobs)]


def test_nothing_on_the_api_means_create(plan):
    assert actions(plan, []) == [Action.CREATE, Action.CREATE]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["Pending"], Action.UNCHANGED),
        (["InProgress"], Action.UNCHANGED),
        (["Stopping"], Action.UNCHANGED),
        (["Completed"], Action.UNCHANGED),
        (["Failed"], Action.RETRY),  # retries: 1
        (["Stopped"], Action.RETRY),
        (["Failed", "Failed"], Action.UNCHANGED),  # no retries left: it stays failed
        (["Failed", "Completed"], Action.UNCHANGED),
        (["Failed", "InProgress"], Action.UNCHANGED),
        (["RUNNING"], Action.UNCHANGED),  # the hosted API's spellings
        (["TIMED_OUT"], Action.RETRY),
    ],
)
def test_actions_follow_the_latest_attempt_and_the_retries_left(plan, statuses, expected):
    job = plan.jobs[0]
    jobs = [api_job(job.job_name, s) for s in statuses][::-1]  # newest first, as the API lists
    (first, second) = observe(plan, jobs)
    assert first.action is expected
    assert second.action is Action.CREATE
    assert first.unique_job_names == [j["unique_job_name"] for j in reversed(jobs)]
    assert first.attempts_used == len(statuses)


def test_a_submission_stopped_before_it_ran_is_not_an_attempt(plan):
    job = plan.jobs[0]
    abandoned = api_job(job.job_name, "Stopped", started=False)
    assert not counts_as_attempt(abandoned)
    (o, _) = observe(plan, [abandoned])
    assert o.action is Action.RETRY and o.attempts_used == 0 and o.attempts_left == 2
    failed = api_job(job.job_name, "Failed")
    (o, _) = observe(plan, [abandoned, failed])  # the abandoned one is newer
    assert o.action is Action.RETRY and o.attempts_used == 1


def test_order_of_the_listing_does_not_matter(plan):
    job = plan.jobs[0]
    old, new = api_job(job.job_name, "Failed"), api_job(job.job_name, "Completed")
    assert observe(plan, [old, new])[0].latest is new
    assert observe(plan, [new, old])[0].latest is new


def test_replace_when_the_same_key_and_name_has_another_job_name(plan):
    job = plan.jobs[0]
    older = api_job(job.job_name[:-8] + "0badc0de", "Completed")
    older["labels"] = {"manifest": "sweep", "key": "train", "name": job.name}
    (o, second) = observe(plan, [older])
    assert o.action is Action.REPLACE and o.replaced == (older,)
    assert second.action is Action.CREATE
    assert find_orphans(plan, [older]) == []  # left alone, never pruned


def test_orphans_are_this_manifests_jobs_the_plan_no_longer_defines(plan):
    gone = api_job("sweep-train-9-12345678", "InProgress")
    unlabeled = api_job("sweep-prep-87654678", "Completed", labels=None)
    other_manifest = api_job(
        "sweep-x-train-0-12345678", "InProgress", labels={"manifest": "sweep-x"}
    )
    not_ours = api_job("other-train-0-12345678", "InProgress")
    planned = api_job(plan.jobs[0].job_name, "Completed")
    orphans = find_orphans(plan, [gone, unlabeled, other_manifest, not_ours, planned])
    assert {o["job_name"] for o in orphans} == {gone["job_name"], unlabeled["job_name"]}


def test_comparison_json_is_the_plan_shape_plus_orphans(tmp_path, plan):
    from kaio_spec.executor import compare

    class Listing:  # compare() asks the client once; here the listing is given
        def get_jobs(self, include_archived=False):
            assert include_archived
            return {"jobs": [api_job("sweep-gone-12345678", "Failed")]}

    comparison = compare(Listing(), plan)
    doc = comparison.to_json()
    assert list(doc) == ["manifest", "file", "jobs", "orphans"]
    assert [j["action"] for j in doc["jobs"]] == ["create", "create"]
    assert doc["orphans"] == [
        {
            "job_name": "sweep-gone-12345678",
            "unique_job_name": comparison.orphans[0]["unique_job_name"],
            "status": "Failed",
            "action": "orphan",
        }
    ]
    assert comparison.live_orphans() == []


@pytest.mark.parametrize(
    ("reason", "platform"),
    [
        ("platform restarted while the job ran", True),
        ("the platform shut down while the job ran", True),
        ("CapacityError: Unable to provision requested ML compute capacity", True),
        ("InternalServerError: We encountered an internal error", True),
        ("MaxRuntimeExceeded", False),
        ("algo-1 exited with code 1; last lines of its stderr:\nKeyError: 'lr'", False),
    ],
)
def test_retry_on_platform_retries_only_the_platforms_failures(tmp_path, reason, platform):
    manifest = write_project(tmp_path, cells=1, retries=1)
    any_plan = kaio_spec.plan(manifest)
    manifest.write_text(
        manifest.read_text().replace("settings:", "settings:\n  retry_on: platform")
    )
    platform_plan = kaio_spec.plan(manifest)
    job_name = any_plan.jobs[0].job_name  # retry_on is no part of a job's identity
    failed = api_job(job_name, "Failed", failure_reason=reason)
    assert platform_failure(failed) is platform
    assert actions(platform_plan, [failed]) == [Action.RETRY if platform else Action.UNCHANGED]
    assert actions(any_plan, [failed]) == [Action.RETRY]  # the default retries every failure


def test_retry_delay_doubles_is_capped_and_jittered():
    from kaio_spec.executor.run import MAX_RETRY_DELAY_S, retry_delay

    assert retry_delay(0, 3) == 0 and retry_delay(10, 0) == 0
    for failures, full in ((1, 10), (2, 20), (3, 40), (20, MAX_RETRY_DELAY_S)):
        draws = [retry_delay(10, failures) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in draws), (failures, min(draws), max(draws))
        assert len(set(draws)) > 100  # jittered, not one fixed wait
