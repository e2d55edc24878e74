"""Times as the API sends them and durations as people read them (core; standard library only)."""

from __future__ import annotations

from datetime import datetime, timezone


def parse_time(text: object) -> datetime | None:
    """An ISO 8601 time from the API ('Z' or an offset; none means UTC); None if not one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def elapsed(job: dict, now: datetime | None = None) -> float | None:
    """Seconds the job ran (start to end, or to now while it runs); None before it started."""
    start = parse_time(job.get("start_time"))
    if start is None:
        return None
    end = parse_time(job.get("end_time")) or now or datetime.now(timezone.utc)
    return max(0.0, (end - start).total_seconds())


def format_duration(seconds: float | None) -> str:
    """Seconds for people: 42s, 3m05s, 2h07m; '-' for None."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
