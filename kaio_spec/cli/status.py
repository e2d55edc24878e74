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

# A table longer than this shows the jobs that most need a look (failed, stopped, running,
# waiting, the most recent first) and counts the rest: 10,000 rows on a terminal help no one.
TABLE_ROWS = 40
# Which statuses come first in a shortened table (a status not listed comes before Completed).
# None: never submitted.
_FIRST: tuple[JobStatus | None, ...] = (
    JobStatus.FAILED,
    JobStatus.STOPPED,
    JobStatus.IN_PROGRESS,
    JobStatus.STOPPING,
    JobStatus.PENDING,
    None,
)


@click.command("status")
@click.argument("file", type=click.Path(dir_okay=False))
@api_option
@output_option
@input_options
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help=f"A row for every job (a manifest of more than {TABLE_ROWS} jobs shows the "
    f"{TABLE_ROWS} that most need a look, and counts the others).",
)
def status_command(
    file: str,
    api: str | None,
    output: str,
    inputs: Inputs,
    show_all: bool,
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
    shown = doc["jobs"] if show_all else _most_needing_a_look(doc["jobs"], TABLE_ROWS)
    rows = [
        (
            j["name"],
            j["status"] or "not submitted",
            str(j["attempts"]) if j["attempts"] else "-",
            j["unique_job_name"] or "-",
            "downloaded" if j["downloaded"] else "-",
        )
        for j in shown
    ]
    click.echo(table(("NAME", "STATUS", "ATTEMPTS", "UNIQUE JOB NAME", "OUTPUTS"), rows))
    if len(shown) < len(doc["jobs"]):
        ids = {id(j) for j in shown}
        left = Counter(j["status"] or "not submitted" for j in doc["jobs"] if id(j) not in ids)
        hidden = ", ".join(f"{n} {status}" for status, n in left.items())
        click.echo(
            f"… and {sum(left.values())} more ({hidden}): `kaio status {file} --all` lists "
            "every job, `-o json` prints them as data"
        )
    for j in shown:
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


def _most_needing_a_look(jobs: list[dict], rows: int) -> list[dict]:
    """At most `rows` of `jobs`, in their order: the failed, stopped, running and waiting ones
    before the others, the most recently submitted first within each status."""
    if len(jobs) <= rows:
        return jobs
    rank = {status: i for i, status in enumerate(_FIRST)}
    rank[JobStatus.COMPLETED] = len(_FIRST) + 1  # any other status: len(_FIRST)
    by_need = sorted(jobs, key=lambda j: j["unique_job_name"] or "", reverse=True)
    by_need.sort(key=lambda j: rank.get(j["status"], len(_FIRST)))  # stable: recent first
    chosen = {id(j) for j in by_need[:rows]}
    return [j for j in jobs if id(j) in chosen]


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
