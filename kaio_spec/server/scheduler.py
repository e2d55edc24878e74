"""The queue and the capacity: which job runs when; recovery after a restart; the retention sweep.

Tenants take turns (round robin among those with queued jobs, so one tenant's 1,000-job sweep
does not starve the others), and each tenant's jobs go first come, first served by upload time:
the job whose turn it is starts when all its instances (and GPUs) fit, and nothing overtakes it,
so a large job is never starved. A job larger than the whole platform runs alone once its turn
comes and nothing else runs. `--max-instances-per-user` caps what one tenant runs at once (a
tenant at its cap passes its turn; a job larger than the cap runs once nothing else of its
tenant does).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from kaio_spec import catalog
from kaio_spec.server import backends, gpu, leftovers, limits, prestart, storage
from kaio_spec.server.config import ServerConfig
from kaio_spec.server.runner import SHUTDOWN_REASON, end_job
from kaio_spec.server.sandbox import Sandbox
from kaio_spec.server.states import RUNNING_STATUSES, JobStatus
from kaio_spec.server.store import NotFound, Store, iso, now

log = logging.getLogger("kaio.server")

# Output listings kept of the jobs that ended last (GET /jobs/download comes right after the end).
LISTINGS_KEPT = 512
RESTART_REASON = "platform restarted while the job ran"
NO_UPLOAD_REASON = "no package was uploaded within the retention period"
UNPACK_CUT_REASON = "platform restarted before the job's package was unpacked; submit it again"


class Scheduler:
    def __init__(self, config: ServerConfig, store: Store, layout: storage.Layout):
        self.config = config
        self.store = store
        self.layout = layout
        self.sandbox = Sandbox(
            layout.data_dir, config.sandbox, config.isolation, config.job_network != "none"
        )
        self.sandbox.prepare_home()
        self.platform = leftovers.platform_id(layout.data_dir)
        parts = backends.Parts(config, store, layout, self.sandbox, self.platform)
        self.backend = backends.make(parts)
        self.machine_gpus = self.backend.machine_gpus
        self._cond = threading.Condition()
        self._queue: list[str] = []
        self._owner: dict[str, str] = {}  # queued job -> its tenant (user id)
        self._used_by: dict[str, int] = {}  # tenant -> instances running
        self._last_tenant: str | None = None  # whose job started last
        self._running: dict[str, backends.Run] = {}
        self._used = 0
        self._free_gpus = list(self.machine_gpus)
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listings: dict[str, list] = {}  # oldest first
        self._listings_lock = threading.Lock()
        # Set when a job ends: what it left behind is looked for then.
        self._leftovers_due = threading.Event()

    # ---- life --------------------------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        loops = (
            (self._schedule_loop, "scheduler"),
            (self._sweep_loop, "sweeper"),
            (self._leftovers_loop, "leftovers"),
        )
        for target, name in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def shutdown(self, grace_s: float = 2.0) -> None:
        """Stop running jobs (they end Failed: the platform went away under them)."""
        self._closing.set()
        with self._cond:
            runs = list(self._running.values())
            self._cond.notify_all()
        for run in runs:
            run.stop(SHUTDOWN_REASON, grace_s)
        for run in runs:
            run.thread.join(grace_s + 5)
        self._kill_leftovers(set)  # what they left behind goes with them
        prestart.close(self.platform)
        self.backend.close()

    def recover(self) -> None:
        """After a crash: jobs that were running failed (all their processes killed first,
        found by their mark: no job runs yet), unless their run had ended (outcome.json) and
        only its outputs were being collected; uploaded Pending jobs queue again (or fail, where
        the crash cut the unpacking of a package taken with its job short)."""
        self.layout.remove_partial_uploads()
        self._kill_leftovers(set)
        for job in self.store.jobs_with_status(*RUNNING_STATUSES):
            if (run := self.backend.reattach(job)) is not None:
                self._track(run)  # still running where it runs (a Ray cluster)
                continue
            files = self.layout.job(job["unique_job_name"])
            with contextlib.suppress(OSError):
                files.forget_env()
                storage.collect_outputs(files, storage.hosts_of(job))
            # A run that had ended (its outputs being collected) ends as it did.
            status, reason = files.read_outcome() or (JobStatus.FAILED, RESTART_REASON)
            if status is JobStatus.STOPPED:  # the way there from InProgress
                self.store.transition(job["unique_job_name"], JobStatus.STOPPING)
            end_job(self.store, job["unique_job_name"], status, reason)
        for job in self.store.jobs_with_status(JobStatus.PENDING):
            if not job["uploaded_at"]:
                continue  # its upload may still come
            if self.layout.job(job["unique_job_name"]).pkg.is_dir():
                self._queue.append(job["unique_job_name"])
                self._owner[job["unique_job_name"]] = job["user_id"]
            else:  # made with its package (POST /jobs/submit), which a crash cut short
                end_job(self.store, job["unique_job_name"], JobStatus.FAILED, UNPACK_CUT_REASON)

    # ---- queue -------------------------------------------------------------------------------

    def enqueue(self, unique: str) -> None:
        """Queue an uploaded job, its run prepared first (storage.prepare_run)."""
        owner = ""
        try:
            job = self.store.get_job(unique)
            owner = job["user_id"]
            storage.prepare_run(self.layout.job(unique), storage.hosts_of(job))
        except Exception:  # the runner makes what is missing, and fails the job if it cannot
            log.exception("job %s: preparing its run", unique)
        with self._cond:
            self._queue.append(unique)
            self._owner[unique] = owner
            if self._used < self.config.max_instances:  # else a release starts it
                self._cond.notify_all()

    def live_samples(self, unique: str) -> dict[str, list[list]] | None:
        """A running job's instances' use over time so far; None if it is not running."""
        with self._cond:
            run = self._running.get(unique)
        return run.samples() if run is not None else None

    def request_stop(self, unique: str) -> None:
        """The job is already Stopping in the store; make it so."""
        with self._cond:
            run = self._running.get(unique)
            if run is None:
                # Queued or waiting for its upload: nothing runs, so it is stopped at once.
                if unique in self._queue:
                    self._dequeue(unique)
                self.layout.job(unique).forget_env()
                end_job(self.store, unique, JobStatus.STOPPED, None)
                self._cond.notify_all()
                return
        run.stop("user")

    def request_stops(self, uniques: list[str]) -> None:
        """request_stop for many jobs at once (POST /jobs/stop): the queue is walked once and
        the jobs that were not running end Stopped in one transaction."""
        with self._cond:
            running = [self._running[u] for u in uniques if u in self._running]
            idle = [u for u in uniques if u not in self._running]
            if idle:
                gone = set(idle)
                self._queue[:] = [u for u in self._queue if u not in gone]
                for unique in idle:
                    self._owner.pop(unique, None)
                    self.layout.job(unique).forget_env()
                self.store.transition_all(idle, JobStatus.STOPPED)
                self._cond.notify_all()
        for run in running:
            run.stop("user")

    def _schedule_loop(self) -> None:
        while not self._closing.is_set():
            with self._cond:
                self._start_next()
                self._cond.wait(timeout=1.0)

    def _start_next(self) -> None:
        try:
            self._start_what_fits()
        except Exception:
            log.exception("scheduler")

    def _start_what_fits(self) -> None:
        # A full platform starts nothing, whatever the head of the queue is: no need to read it.
        while self._queue and self._used < self.config.max_instances and not self._closing.is_set():
            unique = self._whose_turn()
            if unique is None:
                return  # every tenant with queued jobs is at its cap
            try:
                job = self.store.get_job(unique)
            except NotFound:
                self._dequeue(unique)
                continue
            if job["status"] != JobStatus.PENDING.value:
                self._dequeue(unique)
                continue
            itype = catalog.INSTANCE_TYPES[job["instance_type"]]
            count = job["instance_count"]
            need_gpus = gpu.gpus_needed(itype, count, len(self.machine_gpus))
            too_big = count > self.config.max_instances or need_gpus > len(self.machine_gpus)
            if too_big:
                if self._running:
                    return  # it waits at the head for the platform to empty
                gpus = gpu.assign_gpus(itype, count, self._free_gpus, self.machine_gpus)
            else:
                if self._used + count > self.config.max_instances:
                    return
                gpus = gpu.assign_gpus(itype, count, self._free_gpus, self.machine_gpus)
                if gpus is None:
                    return
            assert gpus is not None
            self._dequeue(unique)
            self._last_tenant = job["user_id"]
            self._begin(job, gpus, too_big)

    def _whose_turn(self) -> str | None:
        """The oldest queued job of the next tenant in turn (after the one that started a job
        last) that is not at its cap; None if all are."""
        firsts: dict[str, str] = {}  # tenant -> its oldest queued job, tenants in queue order
        for unique in self._queue:
            firsts.setdefault(self._owner.get(unique, ""), unique)
        tenants = list(firsts)
        if self._last_tenant in firsts:
            after = tenants.index(self._last_tenant) + 1
            tenants = tenants[after:] + tenants[:after]
        cap = self.config.max_instances_per_user
        for tenant in tenants:
            used = self._used_by.get(tenant, 0)
            if cap is None or used == 0:
                return firsts[tenant]
            try:
                count = self.store.get_job(firsts[tenant])["instance_count"]
            except NotFound:
                return firsts[tenant]  # dropped from the queue by the caller
            if used + count <= cap:
                return firsts[tenant]
        return None

    def _dequeue(self, unique: str) -> None:
        self._queue.remove(unique)
        self._owner.pop(unique, None)

    def _begin(self, job: dict, gpus: list[list[int]], alone: bool) -> None:
        self._track(self.backend.run(job, gpus, alone))

    def _track(self, run: backends.Run) -> None:
        """Count a run's instances and GPUs as used, and start it."""
        self._used += len(run.instances)
        tenant = run.job["user_id"]
        self._used_by[tenant] = self._used_by.get(tenant, 0) + len(run.instances)
        taken = {g for i in run.instances for g in i.gpus}
        self._free_gpus = [g for g in self._free_gpus if g not in taken]
        self._running[run.unique] = run
        run.start(self._released, self._ended)

    def _released(self, run: backends.Run) -> None:
        with self._cond:
            self._used -= len(run.instances)
            tenant = run.job["user_id"]
            self._used_by[tenant] -= len(run.instances)
            if not self._used_by[tenant]:
                del self._used_by[tenant]
            taken = {g for i in run.instances for g in i.gpus}
            self._free_gpus = [g for g in self.machine_gpus if g in taken or g in self._free_gpus]
            # The next job starts from this thread, without waiting for the scheduler's to wake.
            self._start_next()
            self._cond.notify_all()

    def _ended(self, run: backends.Run) -> None:
        if run.listing is not None:
            with self._listings_lock:
                self._listings[run.unique] = run.listing
                if len(self._listings) > LISTINGS_KEPT:
                    del self._listings[next(iter(self._listings))]
        with self._cond:
            self._running.pop(run.unique, None)
            self._start_next()  # a job larger than the platform waits for it to be empty
        self._leftovers_due.set()

    def listing(self, unique: str) -> list | None:
        """storage.list_outputs of a job that ended lately, without touching the disk; None
        when it is not known here (list the folder then)."""
        with self._listings_lock:
            return self._listings.get(unique)

    # ---- data retention ----------------------------------------------------------------------

    def delete_data(self, unique: str) -> None:
        with self._listings_lock:
            self._listings.pop(unique, None)
        root = self.layout.job(unique).root
        storage.remove_tree(root)
        if root.exists():
            log.warning("job %s: some of its data could not be deleted", unique)
        self.store.update_job(unique, data_deleted=1)

    def sweep(self) -> None:
        """Delete the data of jobs that ended longer than the retention period ago (their row
        and telemetry stay), give up on uploads that never came, and delete base packages
        nobody used (uploaded, or presigned or uploaded against) for that long."""
        cutoff = now() - timedelta(seconds=self.config.retention_s)
        for job in self.store.jobs_ended_before(cutoff):
            self.delete_data(job["unique_job_name"])
        for job in self.store.jobs_with_status(JobStatus.PENDING):
            if not job["uploaded_at"] and job["submitted_at"] < iso(cutoff):
                self.layout.job(job["unique_job_name"]).forget_env()
                end_job(self.store, job["unique_job_name"], JobStatus.FAILED, NO_UPLOAD_REASON)
        self._sweep_base_packages(time.time() - self.config.retention_s)
        leftovers.sweep_homes(
            self.layout.data_dir / "homes",
            time.time() - self.config.retention_s,
            self._busy_tenants(),
            storage.remove_tree,
        )

    def _busy_tenants(self) -> set[str]:
        with self._cond:
            return {run.job["user_id"] for run in self._running.values()} | set(
                self._owner.values()
            )

    def _sweep_base_packages(self, cutoff_s: float) -> None:
        for base in self.layout.base_packages():
            try:
                unused = base.meta().last_used < cutoff_s
            except storage.BaseGone:
                unused = True  # no readable meta.json: no presign can use it either
            if unused:
                storage.remove_base(base)

    # ---- processes jobs left behind -----------------------------------------------------------

    def running_jobs(self) -> set[str]:
        with self._cond:
            return set(self._running)

    def _leftovers_loop(self) -> None:
        # Only after a job ended: with nothing ending, no process can have become a leftover.
        while not self._closing.wait(leftovers.SCAN_INTERVAL_S):
            if not self._leftovers_due.is_set():
                continue
            self._leftovers_due.clear()
            if self._kill_leftovers(self.running_jobs):
                self._leftovers_due.set()  # once more: what they were starting as they died

    def _kill_leftovers(self, running: Callable[[], set[str]]) -> int:
        """leftovers.kill_leftovers for this platform, then the cgroups of ended jobs that are
        empty now removed; a failure is logged, not raised."""
        try:
            killed = leftovers.kill_leftovers(self.platform, running)
            limits.instance_cgroups(self.platform).sweep(running())
            return killed
        except Exception:
            log.exception("killing what jobs left behind")
            return 0

    def _sweep_loop(self) -> None:
        while not self._closing.wait(self.config.effective_sweep_interval_s):
            try:
                self.sweep()
            except Exception:
                log.exception("retention sweep")
