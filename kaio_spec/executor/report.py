"""What apply shows while it runs, and the summary at the end.

On a terminal: a live table (rich) of every job with its status, attempt and elapsed time, and a
bar of jobs submitted with the bytes uploaded; events scroll above it. Elsewhere: one plain,
timestamped line per event. rich honours NO_COLOR. `QuietReporter` (the Python API's default)
shows nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from kaio_spec.executor.results import SKIPPED, ApplyResult
from kaio_spec.planner import PlannedJob

__all__ = [
    "LiveReporter",
    "PlainReporter",
    "QuietReporter",
    "Reporter",
    "Row",
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
        job = self.api_job or {}
        start = _parse(job.get("start_time"))
        if start is None:
            return "-"
        end = _parse(job.get("end_time")) or now or datetime.now(timezone.utc)
        return _duration((end - start).total_seconds())


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Reporter:
    """Called by the executor's loop (events and updates) and its upload workers (uploaded)."""

    def begin(self, jobs: Sequence[PlannedJob]) -> None:
        pass

    def event(self, name: str, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def update(self, rows: Sequence[Row]) -> None:
        pass

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


_STYLES = {
    "Completed": "green",
    "Failed": "red",
    "Invalid": "red",
    "Stopped": "yellow",
    "Stopping": "yellow",
    "InProgress": "cyan",
    "Pending": "blue",
}
_ORDER = {"InProgress": 0, "Stopping": 1, "Pending": 2, "Submitting": 3}


class LiveReporter(Reporter):
    """A rich live table on a terminal (stderr unless told otherwise)."""

    def __init__(self, file: TextIO | None = None):
        from rich.console import Console

        self.console = Console(file=file or sys.stderr)
        self._rows: list[Row] = []
        self._bytes = 0
        self._total = 0
        self._lock = threading.Lock()
        self._live = None

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
            rows = list(self._rows)
            uploaded = self._bytes
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("JOB", "STATUS", "ATTEMPT", "ELAPSED"):
            table.add_column(col)
        height = max(5, self.console.size.height - 6)
        shown = sorted(rows, key=lambda r: _ORDER.get(r.status, 9))[:height]
        now = datetime.now(timezone.utc)
        for r in shown:
            table.add_row(
                r.name,
                Text(r.status, style=_STYLES.get(r.status, "")),
                f"{r.attempt}/{r.max_attempts}" if r.attempt else "-",
                r.elapsed(now),
            )
        if len(rows) > len(shown):
            table.add_row(f"... and {len(rows) - len(shown)} more", "", "", "")
        submitted = sum(1 for r in rows if r.status not in ("Waiting", "Submitting"))
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.status] = counts.get(r.status, 0) + 1
        line = Text(
            f"submitted {submitted}/{self._total} · {uploaded / 1e6:.1f} MB uploaded · "
            + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        )
        bar = ProgressBar(total=max(self._total, 1), completed=submitted, width=30)
        return Group(table, Text(""), bar, line)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def event(self, name: str, text: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} {name}: {text}", highlight=False)

    def note(self, text: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} {text}", highlight=False)

    def update(self, rows: Sequence[Row]) -> None:
        with self._lock:
            self._rows = list(rows)
        self._refresh()

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


_WORDS = {"InProgress": "running", "NotSubmitted": "not submitted"}


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
    not_done = [j for j in result.jobs if j.failure_reason and j.status == "Completed"]
    for j in not_done:
        lines.append(f"  {j.name}: {j.failure_reason}")
    running = sum(1 for j in result.jobs if j.status in ("Pending", "InProgress", "Stopping"))
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
