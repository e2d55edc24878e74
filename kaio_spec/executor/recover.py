"""Settling an uncertain submission by job_name, from a GET /jobs made after it.

An intent (state.py) is written before every presign. It is settled when the presign's outcome
was not seen (a dropped connection, a timeout, a 502/503/504), when the upload failed, and on the
next run after a run was killed between the two. `known` lists the job's unique_job_names that
existed before the presign, so the jobs of that job_name NOT in it are the ones this intent made.

- The intent has the presign's answer (unique_job_name and upload URL) and that job is still
  Pending: the package is PUT again. The server takes the same bytes twice (200) and answers 409 if
  it already has a package; either way the job has its package. A URL refused (403: expired, 404)
  or failing three times: the job is stopped and the job submitted again.
- The intent's job has left Pending: it had its package. Recorded as an attempt.
- No answer was seen (the presign's response was lost, or the run died before recording it): no
  upload can have started, since the URL was never known. Every new job of that job_name still
  live is such a never-uploaded job: it can never start (docs/protocol.md has no way to ask for its
  upload URL again), so it is stopped (Pending jobs stop at once), and the job is submitted again.
  A job Stopped before it ever started does not count as an attempt (observe.counts_as_attempt),
  so the new submission is the same attempt, and there are never two live jobs of one job_name.

- A bulk intent (`bulk`: submitted with others by POST /jobs/submit, its package in the same
  request) whose answer was not seen: the new job of that job_name was made with its package,
  so it is kept as the attempt, whatever its status (a server that crashed before unpacking it
  fails it when it starts again: the attempt failed, and is retried as any other).

With no state file at all (a fresh clone), a never-uploaded job looks like any Pending job; apply
waits for it, and the platform fails it at the end of its retention period (7 days), after which
it is retried. That is the one case state.json exists to shorten.
"""

from __future__ import annotations

from typing import Any

import requests

from kaio_spec.executor.observe import LIVE_STATUSES, status_of
from kaio_spec.executor.submit import Outcome, Submitter
from kaio_spec.planner import PlannedJob
from kaio_spec.statuses import JobStatus

MAX_REUPLOADS = 3


def settle(
    submitter: Submitter, job: PlannedJob, attempts: list[dict[str, Any]], since: float
) -> Outcome:
    """Resolve `job`'s intent against `attempts` (its jobs in a listing made after the intent's
    uncertain moment). Returns "uploaded" (the intent's job has its package), "settled" (nothing
    live remains of it: submit again), or "uncertain"/"unuploaded" (try again next round)."""
    state = submitter.state
    intent = state.intent(job.job_name)
    if intent is None:
        return Outcome("settled")
    known = set(intent.get("known") or [])
    new = [a for a in attempts if a.get("unique_job_name") not in known]
    ours_name = intent.get("unique_job_name")
    url = intent.get("upload_url")
    ours = next((a for a in new if a.get("unique_job_name") == ours_name), None)
    others = [a for a in new if a is not ours]
    if ours is not None and url:
        ours_name = ours["unique_job_name"]  # the same name, as the API gives it
        if status_of(ours) != JobStatus.PENDING:
            return _keep(submitter, job, ours_name, others)
        if int(intent.get("reuploads") or 0) < MAX_REUPLOADS:
            outcome = submitter.upload(job, ours_name, url)
            if outcome.kind == "uploaded":
                return _keep(submitter, job, ours_name, others)
            if outcome.kind == "unuploaded" and outcome.code not in (403, 404):
                state.update_intent(job.job_name, reuploads=int(intent.get("reuploads") or 0) + 1)
                state.commit()
                return outcome
        others = new  # give it up: stop it with the rest
    elif intent.get("bulk") and new:
        # Made by POST /jobs/submit with its package: it is the attempt, whatever its status.
        # (The newest, should there be others: unique names begin with their creation time.)
        ours = max(new, key=lambda a: str(a.get("unique_job_name")))
        return _keep(submitter, job, ours["unique_job_name"], [a for a in new if a is not ours])
    try:
        _stop_live(submitter.client, others)
    except requests.RequestException as e:
        return Outcome("uncertain", error=f"could not stop a never-uploaded job: {e}")
    state.clear_intent(job.job_name)
    state.commit()
    return Outcome("settled")


def _keep(submitter: Submitter, job: PlannedJob, unique: str, others: list[dict]) -> Outcome:
    """`unique` has its package; any other new job of the name never got one: stop those."""
    try:
        _stop_live(submitter.client, others)
    except requests.RequestException as e:
        return Outcome("uncertain", error=f"could not stop a never-uploaded job: {e}")
    submitter.state.add_attempt(job.job_name, unique)
    submitter.state.clear_intent(job.job_name)
    submitter.state.commit()
    return Outcome("uploaded", unique)


def _stop_live(client, jobs: list[dict[str, Any]]) -> None:
    for j in jobs:
        if status_of(j) not in LIVE_STATUSES:
            continue
        try:
            client.stop_job(j["unique_job_name"])
        except requests.HTTPError as e:
            if e.response is None or e.response.status_code not in (404, 409):
                raise  # 409: it ended meanwhile; 404: it is gone. Anything else: try again
