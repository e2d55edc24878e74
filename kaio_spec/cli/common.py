"""What the journey commands (jobs, status, download, stop, logs, login) share: the --api and -o
options, the FILE|UNIQUE_JOB_NAME argument, connecting, confirmation, and plain aligned tables.
Not a command itself."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from kaio_spec.errors import InvalidInput
from kaio_spec.times import format_duration, parse_time

if TYPE_CHECKING:  # loaded when a command runs, not for `kaio --help`
    from kaio_spec.cli.plan import Inputs
    from kaio_spec.client import Client
    from kaio_spec.planner import Plan

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


@dataclass(frozen=True)
class Chosen:
    """What a FILE|UNIQUE_JOB_NAME argument named: a manifest's plan, or one job of the API."""

    argument: str
    client: Client
    plan: Plan | None = None  # FILE: its plan
    job: dict[str, Any] | None = None  # UNIQUE_JOB_NAME: the job as the API gives it


def choose(argument: str, api: str | None, inputs: Inputs) -> Chosen:
    """FILE is planned before anything is started (an invalid manifest or --var fails first);
    a UNIQUE_JOB_NAME is looked up (InvalidInput naming it, and the job you may have meant)."""
    from kaio_spec import journey

    if journey.is_manifest_argument(argument):
        planned = inputs.plan(argument, reuse=True)
        return Chosen(argument, connect(api), plan=planned)
    client = connect(api)
    return Chosen(argument, client, job=journey.find_job(client, argument))


def file_or_job(f: Callable[..., Any]) -> Callable[..., Any]:
    """The FILE|UNIQUE_JOB_NAME argument of download, stop and logs, with --api and the input
    options (--var, --var-file, --env-file): the command gets one keyword, `chosen` (Chosen)."""
    from kaio_spec.cli.plan import input_options

    @functools.wraps(f)  # keeps the options declared below this decorator (__click_params__)
    def command(*args: Any, target: str, api: str | None, inputs: Inputs, **kwargs: Any) -> Any:
        return f(*args, chosen=choose(target, api, inputs), **kwargs)

    return click.argument("target", metavar="FILE|UNIQUE_JOB_NAME")(
        api_option(input_options(command))
    )


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


duration = format_duration


def local_time(iso: object) -> str:
    """An ISO 8601 time as local 'YYYY-MM-DD HH:MM:SS'; '-' if none."""
    t = parse_time(iso)
    if t is None:
        return iso if isinstance(iso, str) and iso else "-"
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")
