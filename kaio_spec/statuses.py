"""A job's status: SageMaker's six spellings as one enum, shared by the client, the executor and
the server (server/states.py adds which status may follow which).

A `JobStatus` is a `str`: it compares equal to its spelling ("Completed"), hashes like it, and
JSON, state files and the API carry it as that plain string, so a status read back from any of
them needs no conversion to be compared.
"""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    """SageMaker's spellings, as docs/protocol.md lists them."""

    PENDING = "Pending"  # accepted; waiting for its upload or for local capacity
    IN_PROGRESS = "InProgress"
    STOPPING = "Stopping"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"

    def __str__(self) -> str:  # "Completed" in messages and f-strings, not "JobStatus.COMPLETED"
        return self.value

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


# A job in one of these has ended; nothing changes it any more.
FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED})
# A job in one of these is still running, or about to (the executor follows it).
LIVE_STATUSES = frozenset({JobStatus.PENDING, JobStatus.IN_PROGRESS, JobStatus.STOPPING})

__all__ = ["FINAL_STATUSES", "LIVE_STATUSES", "JobStatus"]
