"""What becomes of a job's package once its bytes are in, and the rules it is held to: a job
takes an upload only while it waits for one; its package (counted with its base package, if it
has one) fits in half its volume, the rule the client checks too (validation.py); it is checked
and unpacked in one read, so nothing of a bad package reaches pkg/; and a package refused fails
its job with the reason. No web framework here: routes/packages.py streams the bytes in and
calls these."""

from __future__ import annotations

import asyncio
import errno
import logging
import weakref
from typing import TYPE_CHECKING

from kaio_spec import validation
from kaio_spec.server import ingest, storage
from kaio_spec.server.errors import ApiError
from kaio_spec.server.states import JobStatus
from kaio_spec.server.store import Store, iso, now

if TYPE_CHECKING:
    from kaio_spec.server.scheduler import Scheduler

log = logging.getLogger("kaio.server")


def check_fits_volume(job: dict, size: int, counting: str = "") -> None:
    """PackageError unless `size` bytes fit in half the job's volume (they are unpacked beside
    themselves, on the volume)."""
    if not validation.package_fits_volume(size, job["volume_size_gb"]):
        raise storage.PackageError(
            f"package: {size} bytes{counting} is more than half the job's "
            f"{job['volume_size_gb']} GB volume"
        )


def check_takes_upload(job: dict) -> None:
    """409 unless the job still waits for its package (a first upload, not a retried one)."""
    if job["status"] != JobStatus.PENDING.value or job["data_deleted"]:
        raise ApiError(409, f"status: the job no longer takes an upload ({job['status']})")


def unpack_failure(e: OSError) -> tuple[int, str]:
    """The status and reason answered when the platform itself could not unpack a package (a
    full disk): not the package's fault, and no 500."""
    full = e.errno in (errno.ENOSPC, errno.EDQUOT)
    return (
        507 if full else 503,
        f"package: the platform could not unpack it ({e.strerror or type(e).__name__})",
    )


class Uploads:
    """A job's received package unpacked and the job queued, or the job failed with the reason."""

    def __init__(
        self, store: Store, layout: storage.Layout, scheduler: Scheduler, touch_fresh_s: float
    ):
        self.store = store
        self.layout = layout
        self.scheduler = scheduler
        # How stale a base package's last-used mark may get: far below the retention period.
        self.touch_fresh_s = touch_fresh_s
        # One upload at a time of a job's package, and of a tenant's base package. Weak: a lock
        # lives while a request holds it (and the requests queued behind it), so the maps do not
        # grow by one lock per upload for the server's whole life.
        self._job_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._base_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()  # (user id, sha256)
        )

    def job_lock(self, unique: str) -> asyncio.Lock:
        return self._job_locks.setdefault(unique, asyncio.Lock())

    def base_lock(self, user_id: str, sha256: str) -> asyncio.Lock:
        return self._base_locks.setdefault((user_id, sha256), asyncio.Lock())

    def base_of(self, job: dict) -> storage.BaseFiles:
        return self.layout.base(job["user_id"], job["base_package"])

    def use_base(self, user_id: str, sha256: str) -> bool:
        """Mark the tenant's base package used, so that the retention sweep spares it; whether
        it exists."""
        return self.layout.base(user_id, sha256).touch(self.touch_fresh_s) is not None

    def base_gone(self, job: dict) -> bool:
        """Whether the job takes an overlay on a base package that no longer exists."""
        return bool(job["base_package"]) and not self.base_of(job).meta_file.is_file()

    def accept(
        self,
        job: dict,
        files: storage.JobFiles,
        size: int,
        etag: str,
        package: ingest.PackageIngest,
    ) -> None:
        """Take the job's package, unpacked as it arrived (`package`), and queue the job;
        ApiError and the job failed when the package is refused or the platform cannot unpack it."""
        try:
            self._check_size(job, size)
            package.finish(files.package)
        except storage.BaseGone as e:
            self.fail(job, files, 409, e)
        except storage.PackageError as e:
            self.fail(job, files, 400, e)
        except OSError as e:  # the platform's own trouble (a full disk): the job fails, not hangs
            log.exception("job %s: unpacking its package", job["unique_job_name"])
            status, reason = unpack_failure(e)
            self.fail(job, files, status, RuntimeError(reason))
        if job["base_package"]:  # used by an upload too (and a sweep now would be harmless)
            self.base_of(job).touch(self.touch_fresh_s)
        if not job["uploaded_at"]:  # POST /jobs/submit makes its jobs as uploaded
            self.store.update_job(
                job["unique_job_name"], uploaded_at=iso(now()), etag=etag, package_bytes=size
            )
        self.scheduler.enqueue(job["unique_job_name"])

    def _check_size(self, job: dict, size: int) -> None:
        if not job["base_package"]:
            check_fits_volume(job, size)
            return
        # Counted with its base, so that a job is taken or refused alike whether or not its
        # client could use a base package.
        check_fits_volume(job, size + self.base_of(job).meta().size, " with its base package")

    def fail(self, job: dict, files: storage.JobFiles, status: int, error: Exception) -> None:
        """The job fails with the reason its upload is refused for, which ApiError answers."""
        files.forget_env()
        self.store.transition(job["unique_job_name"], JobStatus.FAILED, failure_reason=str(error))
        raise ApiError(status, str(error))
