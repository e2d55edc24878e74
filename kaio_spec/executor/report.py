"""What apply shows while it runs, and the summary at the end.

On a terminal: a live table (rich) of the jobs that matter now (running, pending, submitting,
failed, then the latest changed: as many as the terminal has lines) with their status, attempt
and elapsed time, and a bar of jobs submitted with counts by status and the bytes uploaded;
events scroll above it (in a sweep of more than SCROLLED_EVENTS jobs, the latest few are shown
under the bar instead: thousands of lines scrolling by are read by no one). The executor
rebuilds the view a few times a second at most (board.py), whatever the sweep's size.
Elsewhere: one plain, timestamped line per event. rich honours NO_COLOR. `QuietReporter` (the
Python API's default) shows nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from kaio_spec.executor.results import INVALID, NOT_SUBMITTED, SKIPPED, ApplyResult
from kaio_spec.planner import PlannedJob
from kaio_spec.statuses import LIVE_STATUSES, JobStatus
from kaio_spec.times import elapsed, format_duration

if TYPE_CHECKING:
    from rich.live import Live

__all__ = [
    "LiveReporter",
    "PlainReporter",
    "QuietReporter",
    "Reporter",
    "Row",
    "View",
    "render_summary",
]


@dataclass(frozen=True)
class Row:
    name: str
    status: str
    attempt: int
    max_attempts: int
    api_job: dict[str, Any] | None = None

    def elapsed(self, now: datetime | None = None) -> str:
        return format_duration(elapsed(self.api_job or {}, now))


@dataclass(frozen=True)
class View:
    """The live view's contents: `counts` by shown status over all `total` jobs, and the few
    `rows` to show (ROW_ORDER first, then the latest changed)."""

    total: int
    counts: dict[str, int]
    rows: tuple[Row, ...]

    @property
    def submitted(self) -> int:
        return sum(n for s, n in self.counts.items() if s not in (WAITING, SUBMITTING))


class Reporter:
    """Called by the executor's loop (events and updates) and its upload workers (uploaded)."""

    def begin(self, jobs: Sequence[PlannedJob]) -> None:
        pass

    def event(self, name: str, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def update(self, view: View) -> None:
        """The live view's new contents (counts of every job, and rows_shown() rows)."""

    def rows_shown(self) -> int:
        """How many rows update()'s view should carry."""
        return 0

    def uploaded(self, nbytes: int) -> None:
        pass

    def end(self) -> None:
        pass


class QuietReporter(Reporter):
    """Shows nothing."""


class PlainReporter(Reporter):
    """One timestamped line per event: `12:03:04 train-lr0.1: Completed`."""

    def __init__(self, out: TextIO | None = None):
        self.out = out
        self._lock = threading.Lock()

    def _line(self, text: str) -> None:
        out = self.out or sys.stdout
        with self._lock:
            out.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            out.flush()

    def begin(self, jobs: Sequence[PlannedJob]) -> None:
        self._line(f"applying {len(jobs)} job{'s' if len(jobs) != 1 else ''}")

    def event(self, name: str, text: str) -> None:
        self._line(f"{name}: {text}")

    def note(self, text: str) -> None:
        self._line(text)


# The live view's own row statuses, beside SageMaker's and results.py's.
SUBMITTING = "Submitting"  # being packaged, presigned or uploaded
WAITING = "Waiting"  # not submitted yet

_STYLES = {
    JobStatus.COMPLETED: "green",
    JobStatus.FAILED: "red",
    INVALID: "red",
    JobStatus.STOPPED: "yellow",
    JobStatus.STOPPING: "yellow",
    JobStatus.IN_PROGRESS: "cyan",
    JobStatus.PENDING: "blue",
}
SCROLLED_EVENTS = 200  # sweeps of more jobs show their latest events under the bar instead
RECENT_EVENTS = 5


class LiveReporter(Reporter):
    """A rich live table on a terminal (stderr unless told otherwise)."""

    def __init__(self, file: TextIO | None = None):
        from rich.console import Console

        self.console = Console(file=file or sys.stderr)
        self._view = View(0, {}, ())
        self._events: deque[str] = deque(maxlen=RECENT_EVENTS)
        self._bytes = 0
        self._total = 0
        self._lock = threading.Lock()
        self._live: Live | None = None

    def begin(self, jobs: Sequence[PlannedJob]) -> None:
        from rich.live import Live

        self._total = len(jobs)
        self._live = Live(
            self._render(), console=self.console, refresh_per_second=4, transient=False
        )
        self._live.__enter__()

    def _render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            view = self._view
            uploaded = self._bytes
            events = list(self._events)
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("JOB", "STATUS", "ATTEMPT", "ELAPSED"):
            table.add_column(col)
        now = datetime.now(timezone.utc)
        for r in view.rows:
            table.add_row(
                r.name,
                Text(r.status, style=_STYLES.get(r.status, "")),
                f"{r.attempt}/{r.max_attempts}" if r.attempt else "-",
                r.elapsed(now),
            )
        more = self._total - len(view.rows)
        if more > 0:
            table.add_row(f"... and {more} more", "", "", "")
        submitted = view.submitted
        line = Text(
            f"submitted {submitted}/{self._total} · {uploaded / 1e6:.1f} MB uploaded · "
            + ", ".join(f"{n} {s.lower()}" for s, n in sorted(view.counts.items()))
        )
        bar = ProgressBar(total=max(self._total, 1), completed=submitted, width=30)
        return Group(table, Text(""), bar, line, *(Text(e, style="dim") for e in events))

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def event(self, name: str, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {name}: {text}"
        if self._total <= SCROLLED_EVENTS:
            self.console.print(line, highlight=False)
            return
        with self._lock:
            self._events.append(line)

    def note(self, text: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} {text}", highlight=False)

    def update(self, view: View) -> None:
        with self._lock:
            self._view = view
        self._refresh()

    def rows_shown(self) -> int:
        # The terminal's lines, less the header, the bar, its line and the latest events.
        return max(5, self.console.size.height - 6 - RECENT_EVENTS)

    def uploaded(self, nbytes: int) -> None:
        with self._lock:
            self._bytes += nbytes

    def end(self) -> None:
        if self._live is not None:
            self._refresh()
            self._live.__exit__(None, None, None)
            self._live = None


def _shown(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def _outputs_root(result: ApplyResult) -> Path | None:
    folders = [j.outputs for j in result.jobs if j.outputs is not None]
    if not folders:
        return None
    if len(folders) == 1:
        return folders[0]
    return Path(os.path.commonpath([str(f) for f in folders]))


_WORDS = {JobStatus.IN_PROGRESS: "running", NOT_SUBMITTED: "not submitted"}


FAILED_NAMES = 4  # job names shown for a failure many jobs share
REASON_LINES = 12  # lines of a failure reason shown (its first and the last lines of stderr)


def _failures(failed: list) -> list[str]:
    """Each distinct failure once (status and reason), with the jobs it hit and the first one's
    log: a sweep whose twelve cells fail the same way shows one traceback, not twelve."""
    groups: dict[tuple[str, str], list] = {}
    for j in failed:
        reason = (j.failure_reason or "no reason given").strip()
        groups.setdefault((j.status, reason), []).append(j)
    lines = []
    for (status, reason), jobs in groups.items():
        text = reason.splitlines() or [""]
        if len(jobs) == 1:
            who = f"{jobs[0].name} ({jobs[0].job_name})"
        else:
            who = ", ".join(j.name for j in jobs[:FAILED_NAMES])
            more = len(jobs) - FAILED_NAMES
            who += f" and {more} more" if more > 0 else ""
            who += f" ({len(jobs)} jobs)"
        label = "skipped" if status == SKIPPED else status  # "skipped: needs prep, which failed"
        lines.append(f"  {who}: {label}: {text[0]}")
        lines.extend(f"      {line}" for line in text[1:REASON_LINES])
        log = next((j.log_path for j in jobs if j.log_path is not None), None)
        if log is not None:
            lines.append(f"      log: {_shown(log)}" + (" (the first's)" if len(jobs) > 1 else ""))
    return lines


def render_summary(result: ApplyResult, file: str = "kaio.yaml") -> str:
    """Counts by status, where the outputs are, each failed job's reason and log; what to do
    next after Ctrl-C or --detach."""
    n = len(result.jobs)
    counts = ", ".join(
        f"{c} {_WORDS.get(s, s.lower())}" for s, c in sorted(result.counts().items())
    )
    lines = [f"{result.manifest}: {n} job{'s' if n != 1 else ''}: {counts or 'nothing to do'}"]
    if result.restarts:
        lines.append(
            f"  {result.restarts} attempt{'s' if result.restarts != 1 else ''} failed because "
            "the platform restarted while they ran; each counts as an attempt and was retried "
            "while the job's retries allowed"
        )
    if result.stopped_orphans:
        lines.append(f"  stopped {len(result.stopped_orphans)} orphaned job(s) (--prune)")
    if result.pruned_outputs:
        where = _shown(Path(result.pruned_outputs[0]).parent)
        lines.append(
            f"  moved the outputs of {len(result.pruned_outputs)} cell(s) no longer defined to "
            f"{where} (--prune)"
        )
    root = _outputs_root(result)
    if root is not None:
        lines.append(f"outputs: {_shown(root)}")
    if result.halted:
        lines.append(f"halted: {result.halted}")
    lines.extend(_failures(result.failed))
    not_done = [j for j in result.jobs if j.failure_reason and j.status == JobStatus.COMPLETED]
    for j in not_done:
        lines.append(f"  {j.name}: {j.failure_reason}")
    running = sum(1 for j in result.jobs if j.status in LIVE_STATUSES)
    if result.interrupted:
        lines.append(
            f"interrupted: nothing more was submitted; {running} job(s) still running. "
            f"Resume with `kaio apply {file}`, or stop them with `kaio stop {file}`."
        )
    elif result.detached:
        lines.append(
            f"detached: {running} job(s) running. `kaio apply {file}` again follows them and "
            f"downloads their outputs; `kaio status {file}` shows them."
        )
    return "\n".join(lines)
