"""The apply loop's tallies, kept as jobs change rather than recounted over the whole sweep.

For each track (run.py): its situation, the status the live view shows for it, and whether its
outputs are still to be downloaded. From those: the tracks in each situation and with each shown
status (in the order they came to it), and the tracks that changed last. Every change to a track
goes through `refresh(track)`, which costs the same whatever the sweep's size, so that the loop's
questions (how many are in flight? which can be submitted? is everything done?) cost what they
return, not the number of cells: a 10,000-cell sweep is not 10,000 times a 1-cell one per event.

`view(limit)` is what a terminal can show: counts by status for every job, and at most `limit`
rows: the running, stopping, pending, submitting and failed jobs first, then the latest changed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

from kaio_spec.executor.report import SUBMITTING, WAITING, Row, View
from kaio_spec.executor.results import INVALID, SKIPPED
from kaio_spec.statuses import LIVE_STATUSES, JobStatus

# The order rows are shown in: what is happening now first, then what went wrong.
ROW_ORDER = (
    JobStatus.IN_PROGRESS,
    JobStatus.STOPPING,
    JobStatus.PENDING,
    SUBMITTING,
    JobStatus.FAILED,
    INVALID,
    SKIPPED,
)
RECENT = 256  # tracks remembered as the latest changed


class Situation(str, Enum):
    """Where a track stands in the apply loop (run.py's Track.situation)."""

    NEW = "new"  # to submit (never submitted, or stopped before it ran)
    BUSY = "busy"  # a worker is submitting it
    BLOCKED = "blocked"  # its submission's outcome is uncertain: settled from a later listing
    LIVE = "live"  # its latest attempt runs: followed
    RETRY = "retry"  # to submit again (attempts remain, or a rerun was asked for)
    COMPLETED = "completed"
    FAILED = "failed"  # for good: invalid, or no attempts left
    SKIPPED = "skipped"  # held back by its needs (needs.py)
    HALTED = "halted"  # would be submitted, but the run is halted

    def __str__(self) -> str:
        return self.value


def shown_status(track: Any, situation: Situation) -> str:
    """The status the live view shows for a track in `situation`."""
    if track.invalid:
        return INVALID
    if track.held is not None:  # needs: Skipped, or NotSubmitted (--detach)
        return track.held.status
    _, status = track.latest()
    if situation == Situation.BUSY and status not in LIVE_STATUSES:
        return SUBMITTING
    return status or WAITING


class Board:
    """Tallies of `tracks` (each with an `index`, its place in the plan). `halted()`: whether
    the run is halted (it changes situations: refresh_all() then); `wants_download(track)`:
    whether its outputs are still to be downloaded (or being downloaded: `download_busy`)."""

    def __init__(
        self,
        tracks: list[Any],
        halted: Callable[[], bool],
        wants_download: Callable[[Any], bool],
    ):
        self._tracks = tracks
        self._halted = halted
        self._wants_download = wants_download
        self._keys: list[tuple[str, str, str] | None] = [None] * len(tracks)
        self._by_situation: dict[Situation, dict[int, Any]] = {}
        self._by_shown: dict[str, dict[int, Any]] = {}
        # Outputs still to download: "waiting" for a worker to be given them, or "downloading".
        self._downloads: dict[str, dict[int, Any]] = {"waiting": {}, "downloading": {}}
        self._recent: deque[int] = deque(maxlen=RECENT)
        self.changes = 0  # refreshes that changed something (the view is due again)
        self.refresh_all()

    def refresh(self, track: Any) -> None:
        """Take a change to `track` into account."""
        situation = track.situation(self._halted())
        download = ""
        if self._wants_download(track):
            download = "downloading" if track.download_busy else "waiting"
        key = (situation, shown_status(track, situation), download)
        i = track.index
        old = self._keys[i]
        if old == key:
            return
        if old is not None:
            self._by_situation[old[0]].pop(i, None)
            self._by_shown[old[1]].pop(i, None)
            if old[2]:
                self._downloads[old[2]].pop(i, None)
        self._by_situation.setdefault(key[0], {})[i] = track
        self._by_shown.setdefault(key[1], {})[i] = track
        if key[2]:
            self._downloads[key[2]][i] = track
        self._keys[i] = key
        if old is None or old[1] != key[1]:
            self._recent.append(i)
        self.changes += 1

    def refresh_all(self, tracks: Iterable[Any] | None = None) -> None:
        for track in self._tracks if tracks is None else tracks:
            self.refresh(track)

    def count(self, *situations: Situation) -> int:
        return sum(len(self._by_situation.get(s, ())) for s in situations)

    def tracks(self, *situations: Situation) -> list[Any]:
        """The tracks in `situations`, each situation's in the order they came to it (a copy:
        refreshing them while going through it is safe)."""
        return [t for s in situations for t in self._by_situation.get(s, {}).values()]

    def pick(
        self, situations: tuple[Situation, ...], n: int, ok: Callable[[Any], bool]
    ) -> list[Any]:
        """The first `n` tracks in `situations` for which ok(track): what it goes through is
        what it returns (and the tracks `ok` turns down), not the whole situation."""
        picked: list[Any] = []
        for s in situations:
            for t in self._by_situation.get(s, {}).values():
                if len(picked) >= n:
                    return picked
                if ok(t):
                    picked.append(t)
        return picked

    def first(self, situation: Situation) -> Any | None:
        return next(iter(self._by_situation.get(situation, {}).values()), None)

    def downloads(self) -> int:
        """Tracks whose outputs are still to be downloaded, or being downloaded."""
        return sum(len(d) for d in self._downloads.values())

    def to_download(self) -> list[Any]:
        """Tracks whose outputs no worker has been given yet."""
        return list(self._downloads["waiting"].values())

    def view(self, limit: int) -> View:
        counts = {s: len(ts) for s, ts in self._by_shown.items() if ts}
        chosen: dict[int, Any] = {}
        for status in ROW_ORDER:
            for i, t in self._by_shown.get(status, {}).items():
                if len(chosen) >= limit:
                    break
                chosen[i] = t
        for i in reversed(self._recent):
            if len(chosen) >= limit:
                break
            chosen.setdefault(i, self._tracks[i])
        rows = tuple(_row(t, _shown(self._keys[i])) for i, t in chosen.items())
        return View(len(self._tracks), counts, rows)


def _shown(key: tuple[str, str, str] | None) -> str:
    assert key is not None  # set for every track counted, and only counted tracks are chosen
    return key[1]


def _row(track: Any, shown: str) -> Row:
    attempt = track.attempts[0] if track.attempts and not track.unseen else None
    return Row(track.job.name, shown, track.used(), track.allowed, attempt)
