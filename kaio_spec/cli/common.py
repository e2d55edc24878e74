"""What the journey commands (jobs, status, download, stop, logs, login) share: the --api and -o
options, connecting, confirmation, and plain aligned tables. Not a command itself."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from kaio_spec.errors import InvalidInput

API_HELP = (
    "the Kaio API's address [default: $KAIO_API_BASE, else the one `kaio login` saved, else the "
    "local platform, started in the background if need be]; the key comes from $KAIO_API_KEY or "
    "`kaio login`"
)


def api_option(f):
    return click.option("--api", "api", metavar="URL", help=API_HELP)(f)


def output_option(f):
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="table for people; json for scripts (the shape is described above).",
    )(f)


def echo_err(line: str) -> None:
    click.echo(line, err=True)


def connect(api: str | None):
    """A logged-in Client for --api (targets.connect), its notices on stderr."""
    from kaio_spec import targets

    return targets.connect(api, echo=echo_err)


def write_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))


def confirm(question: str, yes: bool) -> bool:
    """True with --yes; asks on a terminal; without one, InvalidInput saying to add --yes."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise InvalidInput(f"{question.rstrip('?')}: no terminal to confirm on; add --yes")
    return click.confirm(question, default=False, err=True)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns, the last one left ragged."""
    everything = [tuple(columns), *(tuple(r) for r in rows)]
    widths = [max(len(r[i]) for r in everything) for i in range(len(columns) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in everything
    ).rstrip()


def duration(seconds: float | None) -> str:
    from kaio_spec.journey import format_duration

    return format_duration(seconds)


def local_time(iso: object) -> str:
    """An ISO 8601 time as local 'YYYY-MM-DD HH:MM:SS'; '-' if none."""
    if not isinstance(iso, str) or not iso:
        return "-"
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")
