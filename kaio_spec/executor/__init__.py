"""The executor: a plan against reality (observe.py), and apply: submit what is missing, follow
what runs, retry what failed, download what ended; idempotent and resumable.

    from kaio_spec.executor import compare, observe
    comparison = compare(client, plan)      # one GET /jobs: actions set, orphans listed
"""

from __future__ import annotations

from kaio_spec.executor.observe import (
    LIVE_STATUSES,
    Comparison,
    Observed,
    compare,
    counts_as_attempt,
    find_orphans,
    list_jobs,
    manifest_prefix,
    observe,
    status_of,
)

__all__ = [
    "LIVE_STATUSES",
    "Comparison",
    "Observed",
    "compare",
    "counts_as_attempt",
    "find_orphans",
    "list_jobs",
    "manifest_prefix",
    "observe",
    "status_of",
]
