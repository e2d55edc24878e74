"""The executor: a plan against reality, and apply: submit what is missing, follow what runs,
retry what failed, download what ended; idempotent and resumable.

    observe.py   each planned job matched by job_name to its attempts in GET /jobs; orphans
    apply.py     apply() = prepare() (plan + one GET /jobs) then execute()
    run.py       the loop: one GET /jobs per round; submissions, retries, fail_fast, downloads
    submit.py    packaging once per folder, intent → presign → upload
    recover.py   settling an uncertain presign or upload by job_name
    state.py     .kaio/state.json: what apply did here (intents, attempts, downloads)
    versions.py  what each job was last submitted with (its spec, its folder's files)
    explain.py   why a job is retried, rerun or replaced: words and a field-level diff
    report.py    live table / plain lines, and the summary
    results.py   ApplyResult and JobResult

    from kaio_spec.executor import compare, observe
    comparison = compare(client, plan)      # one GET /jobs: actions set, orphans listed
"""

from __future__ import annotations

from kaio_spec.executor.apply import Prepared, apply, execute, next_round, prepare, select
from kaio_spec.executor.explain import Explanation, explain
from kaio_spec.executor.observe import (
    LIVE_STATUSES,
    Comparison,
    Observed,
    compare,
    counts_as_attempt,
    fetch_jobs,
    find_orphans,
    list_jobs,
    manifest_prefix,
    observe,
    status_of,
)
from kaio_spec.executor.report import (
    LiveReporter,
    PlainReporter,
    QuietReporter,
    Reporter,
    render_summary,
)
from kaio_spec.executor.results import NOT_SUBMITTED, ApplyResult, JobResult

__all__ = [
    "LIVE_STATUSES",
    "NOT_SUBMITTED",
    "ApplyResult",
    "Comparison",
    "Explanation",
    "JobResult",
    "LiveReporter",
    "Observed",
    "PlainReporter",
    "Prepared",
    "QuietReporter",
    "Reporter",
    "apply",
    "compare",
    "counts_as_attempt",
    "execute",
    "explain",
    "fetch_jobs",
    "find_orphans",
    "list_jobs",
    "manifest_prefix",
    "next_round",
    "observe",
    "prepare",
    "render_summary",
    "select",
    "status_of",
]
