"""The apply loop: one GET /jobs per round, then submit, settle, retry, stop and download.

Every round starts from the API's list (the truth) and derives each job's situation from it:

    new / retry   → submitted when fewer than max_parallel jobs are in flight (and not halted)
    busy          → a worker is presigning, uploading, settling or stopping for it
    blocked       → an uncertain submission, settled (recover.py) from a later listing
    live          → Pending, InProgress or Stopping: followed
    completed     → downloaded once
    failed        → no retries left (or halted): its logs downloaded once; fail_fast halts

Workers (daemon threads) do the slow parts; what they come to goes back to the loop through a
queue, and the loop wakes for it without an extra request. The interval between rounds starts at
0.5 s, grows by half each quiet round up to settings.poll_seconds, and drops back when anything
changes (and stays above five times what the last listing and round took, so that a big
sweep's listing takes a bounded share of the run). Where the server has GET /jobs filters, the
round lists this manifest's jobs only (observe.manifest_filter). When the API cannot be reached
the loop waits with backoff and carries on where it was.

Each round is linear in the listing; everything else costs what changed: the tracks' situations
are tallied as they change (board.py), so counting jobs in flight, finding what to submit or
download and knowing when the run is done do not go over the sweep, and the live view is
rebuilt at most every VIEW_EVERY_S with the few rows a terminal shows.
"""

from __future__ import annotations

import functools
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from kaio_spec import downloads
from kaio_spec.errors import PlatformError
from kaio_spec.executor.board import Board, Situation
from kaio_spec.executor.needs import Held, NeedsGate
from kaio_spec.executor.observe import (
    LIVE_STATUSES,
    _stem,
    counts_as_attempt,
    fetch_jobs,
    manifest_filter,
    retryable,
    same_key_and_name,
    status_of,
)
from kaio_spec.executor.recover import settle
from kaio_spec.executor.report import Reporter
from kaio_spec.executor.results import INVALID, NOT_SUBMITTED, ApplyResult, JobResult
from kaio_spec.executor.state import State
from kaio_spec.executor.submit import Outcome, Submitter
from kaio_spec.executor.versions import DIGEST_CHARS, Versions
from kaio_spec.planner import Action, PlannedJob
from kaio_spec.statuses import JobStatus
from kaio_spec.transport import platform_errors

FIRST_INTERVAL_S = 0.5
MAX_RETRY_DELAY_S = 600.0  # a retry's back-off never grows past this
DOWNLOAD_TRIES = 5
RESTART_MARK = "platform restarted"
VIEW_EVERY_S = 0.25  # the live view is rebuilt at most this often (and once at the end)
POLL_SHARE = 0.2  # a round's listing takes at most this share of the loop's time (big sweeps)
MAX_POLL_GAP_S = 30.0


@dataclass
class Track:
    """The loop's view of one planned job (main thread only)."""

    job: PlannedJob
    attempts: list[dict[str, Any]]  # its jobs in the latest listing, newest first
    unseen: list[str]  # submitted by this run, not in a listing yet (Pending meanwhile)
    busy: bool = False
    blocked_since: float | None = None  # settle with a listing started after this
    invalid: str | None = None
    downloaded: str | None = None  # the unique_job_name whose outputs are on disk
    download_busy: bool = False
    download_tries: int = 0
    download_error: str | None = None
    last_seen: tuple[str | None, str | None] = (None, None)
    allowed: int = 1  # attempts in all: retries + 1, and as many more after a requested rerun
    force_from: str | None = None  # --rerun-failed / --replace: one new attempt after this one
    retry_on: str = "any"  # settings.retry_on
    retry_at: float = 0.0  # monotonic: a retry is not submitted before (back-off)
    held: Held | None = None  # not submitted in this run, because of its needs (needs.py)
    index: int = 0  # its place in the plan (board.py keys its tallies by it)

    def latest(self) -> tuple[str | None, str | None]:
        """(unique_job_name, status) of the newest attempt; (None, None) if never submitted."""
        if self.unseen:
            return self.unseen[-1], JobStatus.PENDING
        if self.attempts:
            a = self.attempts[0]
            return a.get("unique_job_name"), status_of(a)
        return None, None

    def used(self) -> int:
        return sum(1 for a in self.attempts if counts_as_attempt(a)) + len(self.unseen)

    def situation(self, halted: bool) -> Situation:
        if self.invalid:
            return Situation.FAILED
        if self.held is not None:
            return Situation.SKIPPED
        if self.busy:
            return Situation.BUSY
        if self.blocked_since is not None:
            return Situation.BLOCKED
        unique, status = self.latest()
        if unique is None:
            return Situation.HALTED if halted else Situation.NEW
        if status in LIVE_STATUSES:
            return Situation.LIVE
        if unique == self.force_from:
            return (
                Situation.HALTED if halted else Situation.RETRY
            )  # asked for: once, whatever its end
        if status == JobStatus.COMPLETED:
            return Situation.COMPLETED
        if not self.unseen and not counts_as_attempt(self.attempts[0]):
            return (
                Situation.HALTED if halted else Situation.NEW
            )  # stopped before it ran: submit it again
        if self.used() < self.allowed and (
            self.unseen or retryable(self.attempts[0], self.retry_on)
        ):
            return Situation.HALTED if halted else Situation.RETRY
        return Situation.FAILED


def _refused_listing(e: requests.HTTPError) -> PlatformError | None:
    code = e.response.status_code if e.response is not None else 0
    return PlatformError(f"the API refused to list jobs: {e}") if code < 500 else None


# Jobs submitted in one POST /jobs/submit at most (the server takes catalog.MAX_SUBMIT_JOBS):
# enough that the
# request's own cost is small beside its jobs', few enough that workers share a large sweep.
BULK_JOBS = 50


def upload_workers(api_base: str) -> int:
    """How many submissions run at once. Against a remote API the uploads wait on the network, so
    several overlap well. Against the platform on this machine each job's upload is only its
    params.json over a base package (submit.py), so what overlaps is the server's handling of one
    request with the next: measured on two cores (benchmarks/apply.py, 100 cells), four workers
    submitted in 3.1-4.1 s where one took 4.2-5.3 s. (Before base packages, when every upload
    was the whole folder and the server's ingest was the bottleneck, one was best.)"""
    host = (urlsplit(api_base).hostname or "").lower()
    if host in ("localhost", "::1") or host.startswith("127."):
        return 4
    return 8


class _Workers:
    """A few daemon threads running tasks; each result goes to `results` and sets `wake`.
    Daemon: an interrupted run exits without waiting for an upload or download in progress
    (state.json and the output markers make both safe to redo)."""

    def __init__(self, n: int, results: queue.Queue, wake: threading.Event, name: str):
        self._tasks: queue.Queue = queue.Queue()
        self._results = results
        self._wake = wake
        for i in range(n):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()

    def submit(self, kind: str, track: Track | list[Track], fn: Callable[[], Any]) -> None:
        self._tasks.put((kind, track, fn))

    def drop_queued(self) -> None:
        while True:
            try:
                self._tasks.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        self.drop_queued()
        for _ in range(64):
            self._tasks.put(None)

    def _work(self) -> None:
        while True:
            item = self._tasks.get()
            if item is None:
                return
            kind, track, fn = item
            try:
                result: Any = fn()
            except BaseException as e:
                result = e
            self._results.put((kind, track, result))
            self._wake.set()


def _track(job: PlannedJob, by_name: dict[str, list[dict]], retry_on: str) -> Track:
    """A job's track, with what --rerun-failed or --replace asked for it (its action): one new
    attempt after its latest one, and then its retries again. `by_name`: the listing's jobs by
    job_name."""
    track = Track(job, [], [], allowed=job.retries + 1, retry_on=retry_on)
    if job.action in (Action.RERUN, Action.REPLACE_REQUESTED):
        mine = sorted(
            by_name.get(job.job_name, []),
            key=lambda j: str(j.get("unique_job_name") or ""),
            reverse=True,
        )
        if mine:
            track.force_from = mine[0].get("unique_job_name")
            track.allowed = sum(1 for a in mine if counts_as_attempt(a)) + job.retries + 1
    return track


def retry_delay(base_s: float, failures: int) -> float:
    """The wait before the retry that follows `failures` failed attempts: base_s doubled after
    each, at most MAX_RETRY_DELAY_S, then a random half of it taken off (jitter, so that cells
    that failed together do not all come back at once)."""
    if base_s <= 0 or failures <= 0:
        return 0.0
    delay = min(MAX_RETRY_DELAY_S, base_s * 2 ** (failures - 1))
    return delay * random.uniform(0.5, 1.0)


class Engine:
    """One apply run over `jobs` (the plan's, already filtered by --only)."""

    def __init__(
        self,
        client,
        jobs: list[PlannedJob],
        listing: list[dict[str, Any]],
        *,
        state: State,
        submitter: Submitter,
        reporter: Reporter,
        max_parallel: int,
        fail_fast: bool,
        poll_seconds: float,
        detach: bool = False,
        unreachable_timeout_s: float = 900.0,
        uploads: int | None = None,
        retry_delay_s: float = 0.0,
        retry_on: str = "any",
        versions: Versions | None = None,
    ):
        self.client = client
        self.state = state
        self.submitter = submitter
        self.reporter = reporter
        self.max_parallel = max(1, max_parallel)
        self.fail_fast = fail_fast
        self.poll_seconds = max(poll_seconds, 0.05)
        self.detach = detach
        self.unreachable_timeout_s = unreachable_timeout_s
        self.retry_delay_s = max(0.0, retry_delay_s)
        self.versions = versions
        by_name: dict[str, list[dict]] = {}
        for j in listing:
            by_name.setdefault(str(j.get("job_name")), []).append(j)
        self.tracks = [_track(job, by_name, retry_on) for job in jobs]
        for i, track in enumerate(self.tracks):
            track.index = i
        # needs: hook for jobs that run after others (needs.py decides; _submit_more asks).
        self.needs = NeedsGate(
            self.tracks, detach=detach, not_submitted=NOT_SUBMITTED, on_held=reporter.event
        )
        self.halted: str | None = None
        self.interrupted = False
        self.cancel = threading.Event()
        self.wake = threading.Event()
        self.results: queue.Queue = queue.Queue()
        uploaders = uploads or upload_workers(getattr(client, "api_base", ""))
        uploaders = max(1, min(uploaders, self.max_parallel))
        self.submit_pool = _Workers(uploaders, self.results, self.wake, "submit")
        self._uploaders = uploaders
        self._bulk: bool | None = None  # whether jobs go several to a request (asked once)
        self.download_pool = _Workers(4, self.results, self.wake, "download")
        self._listing = listing
        # Each round lists this manifest's jobs only, where the server can (observe.py).
        self._filters = manifest_filter(client, jobs, listing) or {}
        self._listing_started = 0.0  # monotonic: the initial listing settles killed runs' intents
        self.rounds = 0
        self.polls = 1  # the listing it starts from
        self._round_cost = 0.0  # seconds the last listing and round took (POLL_SHARE)
        self._view_at = 0.0  # monotonic: when the live view was last rebuilt
        self._view_changes = -1  # board.changes then
        intents = state.intents()
        for track in self.tracks:
            if track.job.job_name in intents:
                track.blocked_since = -1.0
            self._find_download(track)
        # Earlier versions' job_names in the state, by stem (_record_version): found once.
        self._stems: dict[str, list[str]] = {}
        for name in state.job_names():
            self._stems.setdefault(_stem(name), []).append(name)
        self.board = Board(self.tracks, lambda: self.halted is not None, self._wants_download)

    # ---- the loop -------------------------------------------------------------------------

    def run(self) -> ApplyResult:
        self.reporter.begin([t.job for t in self.tracks])
        try:
            self._loop()
        except KeyboardInterrupt:
            self.interrupted = True
            self._halt_for_interrupt()
        finally:
            self.submit_pool.close()
            self.download_pool.close()
            self.state.save()  # compacted: the journal folded into the snapshot
            self._save_versions()
            self._show(force=True)
            self.reporter.end()
        return self._result()

    def _loop(self) -> None:
        interval = FIRST_INTERVAL_S
        while True:
            changed = self._round()
            if self._finished():
                return
            interval = FIRST_INTERVAL_S if changed else min(self.poll_seconds, interval * 1.5)
            # A big sweep's listing is long to fetch and go through: poll less often then.
            interval = max(interval, min(self._round_cost / POLL_SHARE, MAX_POLL_GAP_S))
            self._wait(min(interval, self._until_next_retry()))
            if self._finished():  # the last downloads ended while waiting
                return
            self._listing = self._poll()

    def _round(self) -> bool:
        """Apply the latest listing; settle, submit and download what it allows. Whether
        anything changed."""
        started = time.monotonic()
        changed = self._drain()
        by_name: dict[str, list[dict]] = {}
        for j in self._listing:
            by_name.setdefault(str(j.get("job_name")), []).append(j)
        for track in self.tracks:
            attempts = by_name.get(track.job.job_name, [])
            attempts.sort(key=lambda j: str(j.get("unique_job_name") or ""), reverse=True)
            track.attempts = attempts
            if track.unseen:
                listed = {a.get("unique_job_name") for a in attempts}
                track.unseen = [u for u in track.unseen if u not in listed]
            changed |= self._note_status(track)
            self.board.refresh(track)
        self._settle_blocked()
        changed |= self._check_failures()
        changed |= self._submit_more()
        self._start_downloads()
        self._show()
        self.rounds += 1
        self._round_cost += time.monotonic() - started
        return changed

    def _until_next_retry(self) -> float:
        """Seconds until the first back-off ends (a retry to submit then), or infinity."""
        now = time.monotonic()
        waits = [t.retry_at - now for t in self.board.tracks(Situation.RETRY) if t.retry_at > now]
        return max(0.05, min(waits)) if waits else float("inf")

    def _finished(self) -> bool:
        if self.board.count(Situation.BUSY, Situation.BLOCKED, Situation.NEW, Situation.RETRY):
            return False
        return self.detach or not (self.board.count(Situation.LIVE) or self.board.downloads())

    def _wait(self, seconds: float) -> None:
        """Sleep until the next round, handling workers' results (and submitting what they
        free up) as they come, without polling."""
        deadline = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                return
            if self._view_changes != self.board.changes:  # a change not shown yet
                left = min(left, max(0.0, self._view_at + VIEW_EVERY_S - now))
            if self.wake.wait(left):
                self.wake.clear()
                if self._drain():
                    self._submit_more()
                    self._start_downloads()
                if self._finished():
                    return
            self._show()

    def _poll(self) -> list[dict[str, Any]]:
        """ONE GET /jobs; while the API cannot be reached, wait with backoff (and keep handling
        workers' results)."""
        lost_at: float | None = None
        delay = 0.5
        while True:
            started = time.monotonic()
            try:
                where = getattr(self.client, "api_base", "the API")
                with platform_errors(where, refused=_refused_listing):
                    listing = fetch_jobs(self.client, **self._filters)
            except PlatformError as e:
                if not e.transient:  # refused (4xx), or a request that can never work
                    raise
                problem = e.cause  # no connection, a timeout, a 5xx: wait for the API
            else:
                if lost_at is not None:
                    self.reporter.note("reconnected to the API; reconciling")
                self._listing_started = started
                self._round_cost = time.monotonic() - started
                self.polls += 1
                return listing
            now = time.monotonic()
            if lost_at is None:
                lost_at = now
                self.reporter.note(f"cannot reach the API ({problem}); waiting for it")
            elif now - lost_at > self.unreachable_timeout_s:
                raise PlatformError(
                    f"the API has been unreachable for {now - lost_at:.0f} s ({problem}); "
                    "run kaio apply again once it is back: nothing is submitted twice"
                )
            self._wait(delay)
            delay = min(delay * 2, 10.0)

    # ---- workers' results ---------------------------------------------------------------------

    def _drain(self) -> bool:
        changed = False
        while True:
            try:
                kind, track, result = self.results.get_nowait()
            except queue.Empty:
                return changed
            changed = True
            if kind == "download":
                self._download_done(track, result)
            elif kind == "submit-many":  # `track` is the request's tracks, `result` theirs
                for one, outcome in zip(track, _per_job(result, len(track)), strict=True):
                    self._submitted(one, outcome)
                    self.board.refresh(one)
                continue
            else:
                self._submitted(track, result)
            self.board.refresh(track)

    def _submitted(self, track: Track, result: Any) -> None:
        track.busy = False
        if _refused(result):
            raise PlatformError(f"the API refused the key: {result}")
        if isinstance(result, BaseException):
            # Unexpected: treat it as uncertain; recover.py settles by job_name.
            result = Outcome("uncertain", error=f"{type(result).__name__}: {result}")
            result.since = time.monotonic()
        name = track.job.name
        if result.kind == "uploaded":
            self._record_version(track.job)
            listed = {a.get("unique_job_name") for a in track.attempts}
            if result.unique_job_name not in set(track.unseen) | listed:
                track.unseen.append(result.unique_job_name)
            self.reporter.event(
                name, f"submitted {result.unique_job_name} (attempt {track.used()})"
            )
        elif result.kind in ("uncertain", "unuploaded"):
            track.blocked_since = result.since or time.monotonic()
            self.reporter.event(name, f"{result.error}; checking by job_name before going on")
        elif result.kind == "invalid":
            track.invalid = result.error
            self.reporter.event(name, f"cannot be submitted: {result.error}")
        # "settled": submit again when the loop next can; "cancelled": nothing happened

    def _record_version(self, job: PlannedJob) -> None:
        """What the job was submitted with, for `kaio plan` to say what changed when it is
        replaced (versions.py): its spec, and its folder's files once per folder."""
        if self.versions is None:
            return
        files = None
        if self.versions.folder_files(job.content_hash) is None:
            try:  # the package this run built to submit the job (cached: nothing is read again)
                package = self.submitter.packages.folder_package(job)
                files = {f.path: f.digest[:DIGEST_CHARS] for f in package.files}
            except (OSError, ValueError):
                files = None  # the plan then says the folder changed, without naming files
        older = [
            n
            for n in self._stems.get(_stem(job.job_name), ())
            if n != job.job_name and same_key_and_name(job, n)
        ]
        self.versions.record(job.job_name, job.described_spec(), job.content_hash, files, older)

    def _save_versions(self) -> None:
        if self.versions is None:
            return
        try:
            self.versions.save()
        except OSError as e:  # only explanations depend on it: say so, and go on
            self.reporter.note(f"could not record the jobs' versions in {self.versions.path}: {e}")

    # ---- submitting -------------------------------------------------------------------------

    def _in_flight(self) -> int:
        return self.board.count(Situation.BUSY, Situation.BLOCKED, Situation.LIVE)

    def _submit_more(self) -> bool:
        if self.halted or self.cancel.is_set():
            return False
        room = self.max_parallel - self._in_flight()
        if room <= 0:
            return False
        submitted = False
        now = time.monotonic()
        held: list[Track] = []

        def may_submit(track: Track) -> bool:
            if track.retry_at > now:
                return False
            if not self.needs.ready(track):  # needs: waits for (or skipped after) its needs
                if track.held is not None:
                    held.append(track)
                return False
            return True

        picked = self.board.pick((Situation.NEW, Situation.RETRY), room, may_submit)
        self.board.refresh_all(held)  # skipped now: refreshed once the board is not walked
        for track in picked:
            track.busy = True
            self.board.refresh(track)
        for chunk in self._chunks(picked):
            entries = [(track.job, self._known(track)) for track in chunk]
            if len(chunk) == 1:
                one = functools.partial(self.submitter.submit, *entries[0], self.cancel.is_set)
                self.submit_pool.submit("submit", chunk[0], one)
            else:
                many = functools.partial(self.submitter.submit_many, entries, self.cancel.is_set)
                self.submit_pool.submit("submit-many", chunk, many)
            submitted = True
        return submitted

    def _known(self, track: Track) -> list[str]:
        """The job's unique_job_names seen before its submission: one made after is its own."""
        seen = {a.get("unique_job_name") for a in track.attempts} | set(track.unseen)
        seen |= set(self.state.unique_job_names(track.job.job_name))
        return sorted(str(k) for k in seen if k)

    def _chunks(self, picked: list[Track]) -> list[list[Track]]:
        """The picked jobs in the requests that submit them: one each, or where the server
        takes many at once (POST /jobs/submit), up to BULK_JOBS to a request, spread over the
        workers so that the server makes one request's jobs while the next is prepared."""
        if self._bulk is None:
            self._bulk = self.submitter.bulk()
        if not self._bulk or len(picked) < 2:
            return [[track] for track in picked]
        size = min(BULK_JOBS, -(-len(picked) // self._uploaders))
        return [picked[i : i + size] for i in range(0, len(picked), size)]

    def _settle_blocked(self) -> None:
        for track in self.board.tracks(Situation.BLOCKED):
            since = track.blocked_since
            if since is None or track.busy or self._listing_started <= since:
                continue
            track.blocked_since = None
            track.busy = True
            attempts = list(track.attempts)
            self.submit_pool.submit(
                "settle",
                track,
                functools.partial(settle, self.submitter, track.job, attempts, since),
            )
            self.board.refresh(track)

    # ---- ends: failures, fail_fast, downloads ---------------------------------------------------

    def _note_status(self, track: Track) -> bool:
        unique, status = track.latest()
        if unique is None or (unique, status) == track.last_seen:
            return False
        track.last_seen = (unique, status)
        if status == JobStatus.PENDING and unique in track.unseen:
            return True
        text = status or ""
        if (
            status == JobStatus.STOPPED
            and track.attempts
            and not counts_as_attempt(track.attempts[0])
        ):
            text = "Stopped before it ran (a submission that never got its package): not an attempt"
        elif status in (JobStatus.FAILED, JobStatus.STOPPED):
            reason = track.attempts[0].get("failure_reason") if track.attempts else None
            text += f": {reason}" if reason else ""
        self.reporter.event(track.job.name, text)
        if status in (JobStatus.FAILED, JobStatus.STOPPED) and unique != track.force_from:
            self._back_off(track)
        return True

    def _back_off(self, track: Track) -> None:
        """A failed attempt that will be retried: not before its back-off has passed."""
        if track.situation(False) != Situation.RETRY:
            return
        failures = track.used() - (track.allowed - track.job.retries - 1)
        delay = retry_delay(self.retry_delay_s, failures)
        track.retry_at = time.monotonic() + delay
        wait = f" in {delay:.0f} s" if delay >= 0.5 else ""
        self.reporter.event(
            track.job.name, f"retrying{wait} (attempt {track.used() + 1} of {track.allowed})"
        )

    def _check_failures(self) -> bool:
        if not self.fail_fast or self.halted:
            return False
        track = self.board.first(Situation.FAILED)
        if track is not None:
            self._halt(f"{track.job.name} failed and fail_fast is set")
            return True
        return False

    def _halt(self, why: str) -> None:
        self.halted = why
        self.submit_pool.drop_queued()
        self.reporter.note(f"{why}: stopping the jobs still running; submitting nothing more")
        self.board.refresh_all()  # new and retry are halted now
        for track in self.board.tracks(Situation.LIVE):
            unique, status = track.latest()
            if unique and status in (JobStatus.PENDING, JobStatus.IN_PROGRESS):
                try:
                    self.client.stop_job(unique)
                except requests.RequestException as e:
                    self.reporter.note(f"could not stop {unique}: {e}")

    def _halt_for_interrupt(self) -> None:
        self.halted = "interrupted"
        self.cancel.set()
        self.submit_pool.drop_queued()
        self.download_pool.drop_queued()
        self.board.refresh_all()

    def _find_download(self, track: Track) -> None:
        marker = downloads.read_marker(track.job.outputs) or {}
        unique = marker.get("unique_job_name")
        if isinstance(unique, str) and downloads.is_complete(track.job.outputs, unique):
            track.downloaded = unique

    def _wants_download(self, track: Track) -> bool:
        """Whether the run has yet to download the track's outputs (or is downloading them)."""
        return not self.detach and (track.download_busy or self._needs_download(track))

    def _needs_download(self, track: Track) -> bool:
        if track.download_error is not None:
            return False
        s = track.situation(self.halted is not None)
        if s not in (Situation.COMPLETED, Situation.FAILED, Situation.HALTED):
            return False
        unique, status = track.latest()
        if unique is None or status in LIVE_STATUSES or track.unseen:
            return False
        return track.downloaded != unique

    def _start_downloads(self) -> None:
        if self.detach or self.cancel.is_set():
            return
        for track in self.board.to_download():
            unique, _ = track.latest()
            track.download_busy = True
            job = track.job
            self.download_pool.submit(
                "download",
                track,
                functools.partial(downloads.download_planned, self.client, job, unique),
            )
            self.board.refresh(track)

    def _download_done(self, track: Track, result: Any) -> None:
        track.download_busy = False
        if isinstance(result, BaseException):
            track.download_tries += 1
            if track.download_tries >= DOWNLOAD_TRIES:
                track.download_error = f"{type(result).__name__}: {result}"
                self.reporter.event(track.job.name, f"download failed: {track.download_error}")
            return
        if not result.ok:  # "conflict": the folder holds files kaio did not write
            track.download_error = result.message
            self.reporter.event(track.job.name, f"outputs not downloaded: {result.message}")
            return
        track.downloaded = result.unique_job_name
        self.state.mark_downloaded(track.job.job_name, result.unique_job_name, str(result.dest))
        self.state.commit()
        if result.outcome == "downloaded":
            self.reporter.event(track.job.name, f"outputs: {result.message}")

    # ---- reporting --------------------------------------------------------------------------

    def _show(self, force: bool = False) -> None:
        """The live view, rebuilt from the board's tallies: at most every VIEW_EVERY_S, only
        when something changed, and with only the rows a terminal can show."""
        now = time.monotonic()
        if not force and (
            self._view_changes == self.board.changes or now - self._view_at < VIEW_EVERY_S
        ):
            return
        self._view_at, self._view_changes = now, self.board.changes
        self.reporter.update(self.board.view(self.reporter.rows_shown()))

    def _result(self) -> ApplyResult:
        jobs = []
        restarts = 0
        for t in self.tracks:
            unique, status = t.latest()
            restarts += sum(
                1 for a in t.attempts if RESTART_MARK in str(a.get("failure_reason") or "")
            )
            reason = t.invalid or (t.attempts[0].get("failure_reason") if t.attempts else None)
            if t.download_error and status == JobStatus.COMPLETED:
                reason = f"outputs not downloaded: {t.download_error}"
            outputs = t.job.outputs if t.downloaded and t.downloaded == unique else None
            log = None
            if outputs is not None and status != JobStatus.COMPLETED:
                log = _log_path(outputs)
            uniques = [str(a.get("unique_job_name")) for a in reversed(t.attempts)] + t.unseen
            if t.held is not None and not t.invalid:  # needs: not submitted, and why
                status, reason = t.held.status, t.held.reason
            jobs.append(
                JobResult(
                    key=t.job.key,
                    name=t.job.name,
                    job_name=t.job.job_name,
                    status=INVALID if t.invalid else (status or NOT_SUBMITTED),
                    attempts=t.used(),
                    unique_job_names=tuple(uniques),
                    outputs=outputs,
                    failure_reason=reason
                    if status != JobStatus.COMPLETED or t.download_error
                    else None,
                    log_path=log,
                )
            )
        return ApplyResult(
            manifest="",
            jobs=tuple(jobs),
            interrupted=self.interrupted,
            detached=self.detach and not self.interrupted,
            halted=self.halted if self.halted != "interrupted" else None,
            restarts=restarts,
            polls=self.polls,
        )


def _per_job(result: Any, n: int) -> list[Any]:
    """A bulk submission's outcomes, one per job; an exception it raised is each job's."""
    return result if isinstance(result, list) else [result] * n


def _refused(result: Any) -> bool:
    return (
        isinstance(result, requests.HTTPError)
        and result.response is not None
        and result.response.status_code in (401, 403)
    )


def _log_path(outputs: Path) -> Path | None:
    for name in ("stderr.log", "stdout.log"):
        candidate = outputs / "logs" / "algo-1" / name
        if candidate.is_file():
            return candidate
    return None
