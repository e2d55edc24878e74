"""`kaio forget FILE [--only PATTERN]`: archive a manifest's orphans, the jobs it no longer
defines, so that plans and `kaio status` stop listing them."""

from __future__ import annotations

import fnmatch

import click

from kaio_spec.cli.common import api_option, connect, echo_err, output_option
from kaio_spec.cli.common import write_json as _write_json
from kaio_spec.cli.plan import Inputs, input_options
from kaio_spec.errors import InvalidInput


@click.command("forget")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--only",
    metavar="PATTERN",
    help="Only the orphans whose job_name or unique_job_name matches PATTERN (fnmatch).",
)
@api_option
@output_option
@input_options
def forget_command(
    file: str,
    only: str | None,
    api: str | None,
    output: str,
    inputs: Inputs,
) -> None:
    """Archive the orphans of FILE: jobs of its manifest that it no longer defines (a cell taken
    out of a matrix, a job renamed). Archiving only hides a job from the job list (the API's
    archive route; `Client.restore_job` shows it again): its outputs, logs and job_name stay,
    and a job of that job_name defined again is still found (never submitted twice). A running
    orphan is left alone: stop it first (`kaio apply FILE --prune`). Exits 0, 2 for an invalid
    FILE or a PATTERN that matches no orphan.

    \b
    -o json prints {"archived": [UNIQUE_JOB_NAME, ...], "running": [UNIQUE_JOB_NAME, ...]}"""
    from kaio_spec import journey
    from kaio_spec.executor import LIVE_STATUSES, status_of

    planned = inputs.plan(file, reuse=True)
    client = connect(api)
    orphans = list(journey.manifest_status(client, planned).orphans)
    if only:
        orphans = [j for j in orphans if _matches(j, only)]
        if not orphans:
            raise InvalidInput(f"--only {only!r} matches no orphaned job of {file}")
    running = [str(j["unique_job_name"]) for j in orphans if status_of(j) in LIVE_STATUSES]
    archived = []
    with journey.api_errors(client.api_base):
        for j in orphans:
            unique = str(j["unique_job_name"])
            if unique not in running:
                client.archive_job(unique)
                archived.append(unique)
                echo_err(f"{unique}: archived")
    for unique in running:
        echo_err(f"{unique}: still running; stop it first (`kaio apply {file} --prune`)")
    if output == "json":
        _write_json({"archived": archived, "running": running})
    n = len(archived)
    click.echo(
        f"{planned.manifest.name}: {n} orphaned job{'s' if n != 1 else ''} archived"
        + (f", {len(running)} running left alone" if running else "")
        if archived or running
        else f"{planned.manifest.name}: no orphaned jobs",
        err=output == "json",
    )


def _matches(api_job: dict, pattern: str) -> bool:
    return any(
        fnmatch.fnmatchcase(str(api_job.get(field) or ""), pattern)
        for field in ("job_name", "unique_job_name")
    )


def register(main: click.Group) -> None:
    main.add_command(forget_command)
