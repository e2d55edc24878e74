"""Job statuses and their lifecycle: the one place that says which status may follow which."""

from __future__ import annotations

from enum import Enum

from kaio_spec import catalog


class JobStatus(str, Enum):
    """SageMaker's spellings, as docs/protocol.md lists them."""

    PENDING = "Pending"  # accepted; waiting for its upload or for local capacity
    IN_PROGRESS = "InProgress"
    STOPPING = "Stopping"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"

    @property
    def is_final(self) -> bool:
        return self.value.lower() in catalog.FINAL_STATUSES

    def can_become(self, new: JobStatus) -> bool:
        return new in _NEXT[self]


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

# A status the platform cannot have been in when it died cleanly: these jobs were running.
RUNNING_STATUSES = frozenset({JobStatus.IN_PROGRESS, JobStatus.STOPPING})
