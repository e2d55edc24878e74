"""Job statuses' lifecycle on the platform: the one place that says which status may follow
which. The statuses themselves are the core's (kaio_spec/statuses.py)."""

from __future__ import annotations

from kaio_spec.statuses import JobStatus

__all__ = ["RUNNING_STATUSES", "JobStatus", "can_become"]

_NEXT: dict[JobStatus, frozenset[JobStatus]] = {
    # Pending -> Failed: a bad package, or a platform restart that lost it.
    JobStatus.PENDING: frozenset({JobStatus.IN_PROGRESS, JobStatus.STOPPING, JobStatus.FAILED}),
    JobStatus.IN_PROGRESS: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPING}),
    # Stopping -> Failed only when the platform restarts in the middle of a stop.
    JobStatus.STOPPING: frozenset({JobStatus.STOPPED, JobStatus.FAILED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.STOPPED: frozenset(),
}


def can_become(old: JobStatus, new: JobStatus) -> bool:
    """Whether a job in `old` may move to `new`."""
    return new in _NEXT[old]


# A status the platform cannot have been in when it died cleanly: these jobs were running.
RUNNING_STATUSES = frozenset({JobStatus.IN_PROGRESS, JobStatus.STOPPING})
