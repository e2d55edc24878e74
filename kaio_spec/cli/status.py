"""`kaio status FILE`: the manifest's jobs and their latest attempts on the target."""

from __future__ import annotations

import os
import shutil
import textwrap
from collections import Counter

import click

from kaio_spec.cli.common import api_option, connect, output_option, table, write_json
from kaio_spec.cli.plan import Inputs, input_options
from kaio_spec.statuses import JobStatus


@click.command("status")
@click.argument("file", type=click.Path(dir_okay=False))
@api_option
@output_option
@input_options
def status_command(
    file: str,
    api: str | None,
    output: str,
    inputs: Inputs,
) -> None:
    """Show each job FILE defines with its latest attempt's status (one GET /jobs), and the
    orphans: jobs of this manifest that it no longer defines. Exits 0 whatever the statuses
    (read them from -o json in scripts); 2 for an invalid FILE.

    \b
    -o json prints
      {"manifest", "file", "jobs": [JOB, ...], "orphans": [ORPHAN, ...]}
    JOB: {"key", "name", "job_name", "status" (null: never submitted),
          "unique_job_name" (its latest attempt), "attempts", "unique_job_names"
          (oldest first), "failure_reason", "outputs" (the folder its outputs go to),
          "downloaded" (true once they are there), "action" (what apply would do)}
    ORPHAN: {"job_name", "unique_job_name", "status", "action": "orphan"}
    "stale_outputs": outputs folders of cells FILE no longer defines (`kaio apply --prune`
    moves them into .pruned/)."""
    from kaio_spec import journey

    # an invalid manifest (or --var) fails before anything is started
    planned = inputs.plan(file, reuse=True)
    client = connect(api)
    comparison = journey.manifest_status(client, planned)
    doc = journey.status_json(comparison)
    if output == "json":
        write_json(doc)
        return
    rows = [
        (
            j["name"],
            j["status"] or "not submitted",
            str(j["attempts"]) if j["attempts"] else "-",
            j["unique_job_name"] or "-",
            "downloaded" if j["downloaded"] else "-",
        )
        for j in doc["jobs"]
    ]
    click.echo(table(("NAME", "STATUS", "ATTEMPTS", "UNIQUE JOB NAME", "OUTPUTS"), rows))
    for j in doc["jobs"]:
        if j["status"] in (JobStatus.FAILED, JobStatus.STOPPED) and j["failure_reason"]:
            click.echo(_wrapped(j["name"], j["failure_reason"]))
    if doc["orphans"]:
        click.echo("")
        click.echo("orphans (jobs of this manifest it no longer defines):")
        orphans = [(o["unique_job_name"] or "-", o["status"]) for o in doc["orphans"]]
        click.echo(table(("UNIQUE JOB NAME", "STATUS"), orphans))
    if doc["stale_outputs"]:
        click.echo("")
        click.echo(
            f"stale outputs (cells {file} no longer defines; `kaio apply {file} --prune` moves "
            "them into .pruned/):"
        )
        for folder in doc["stale_outputs"]:
            click.echo(f"  {_relative(folder)}")
    counts = Counter(j["status"] or "not submitted" for j in doc["jobs"])
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    n = len(doc["jobs"])
    click.echo("")
    click.echo(
        f"{doc['manifest']}: {n} job{'s' if n != 1 else ''} ({summary}) on {client.api_base}"
    )


def _wrapped(name: str, reason: str) -> str:
    """The whole failure reason, each of its lines wrapped to the terminal, under the job's
    name."""
    width = max(40, shutil.get_terminal_size((100, 24)).columns - 6)
    lines = [f"  {name}:"]
    for line in reason.strip().splitlines():
        wrapped = textwrap.wrap(line, width, drop_whitespace=False) or [""]
        lines.extend(f"      {part}" for part in wrapped)
    return "\n".join(lines)


def _relative(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def register(main: click.Group) -> None:
    main.add_command(status_command)
