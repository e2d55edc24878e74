"""`kaio plan FILE`: what a manifest means, job by job, before anything is submitted."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, TextIO

import click

from kaio_spec.cli.common import api_option, connect

if TYPE_CHECKING:  # the planner loads when a command uses it, not for `kaio --help`
    from kaio_spec.planner import Plan, PlannedJob

_COLUMNS = ("KEY", "NAME", "INSTANCES", "VALUES", "ACTION")


@click.command("plan")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table: one row per job; json: the plan as JSON on stdout.",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Plan without asking the API what already exists (every job is 'create').",
)
@api_option
def plan_command(file: str, output: str, offline: bool, api: str | None) -> None:
    """Show the jobs FILE means: matrices and sweeps expanded, templates rendered, each job's
    name, job_name and what apply would do with it: compared with the API's jobs (one request),
    each is create, unchanged, retry or replace, and the manifest's jobs it no longer defines
    are listed as orphans (in -o json: "orphans").

    Invalid manifests exit 2 with every error as FILE:LINE:COLUMN: PATH: MESSAGE."""
    from kaio_spec.planner import plan

    result = plan(file)  # a ManifestError is reported by the kaio group, exit 2
    if offline:
        if output == "json":
            write_json(result, sys.stdout)
        else:
            click.echo(render_table(result))
        return
    from kaio_spec.executor import compare

    comparison = compare(connect(api), result)
    if output == "json":
        write_json(comparison.plan, sys.stdout, orphans=comparison.to_json()["orphans"])
    else:
        click.echo(render_comparison(comparison))


def write_json(result: Plan, out: TextIO, orphans: list | None = None) -> None:
    """Plan.to_json() as JSON, one job per line: readable, and written as it is made (a
    10,000-job plan never exists as one string). `orphans` (compared with the API) follow the
    jobs as a top-level "orphans" list."""
    head = json.dumps({"manifest": result.manifest.name, "file": result.manifest.file})
    out.write(head[:-1] + ', "jobs": [')
    for i, job in enumerate(result.jobs):
        out.write(("\n  " if i == 0 else ",\n  ") + json.dumps(job.to_json(), ensure_ascii=False))
    out.write("\n]" if result.jobs else "]")
    if orphans is not None:
        out.write(', "orphans": [')
        for i, orphan in enumerate(orphans):
            out.write(("\n  " if i == 0 else ",\n  ") + json.dumps(orphan, ensure_ascii=False))
        out.write("\n]" if orphans else "]")
    out.write("}\n")
    out.flush()


def _row(job: PlannedJob) -> tuple[str, ...]:
    spec = job.spec
    return (
        job.key,
        job.name,
        f"{spec['instance_type']} × {spec['instance_count']}",
        job.matrix_text or "-",
        job.action.value,
    )


def render_table(result: Plan) -> str:
    """The plan as aligned columns, then a one-line summary."""
    rows = [_COLUMNS, *(_row(job) for job in result.jobs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    counts: dict[str, int] = {}
    for job in result.jobs:
        counts[job.action.value] = counts.get(job.action.value, 0) + 1
    n = len(result.jobs)
    summary = ", ".join(f"{count} to {action}" for action, count in counts.items())
    lines.append("")
    lines.append(f"{result.manifest.name}: {n} job{'s' if n != 1 else ''} ({summary})")
    return "\n".join(lines)


def render_comparison(comparison, selected=None, *, prune: bool = False) -> str:
    """The plan compared with the API (`selected`: the jobs --only kept), then its orphans."""
    from kaio_spec.planner import Plan

    jobs = comparison.plan.jobs if selected is None else tuple(selected)
    lines = [render_table(Plan(comparison.plan.manifest, jobs))]
    if comparison.orphans:
        from kaio_spec.executor import status_of

        live = comparison.live_orphans()
        what = (
            "--prune stops the running ones"
            if not prune
            else f"--prune stops the {len(live)} running"
        )
        lines.append("")
        lines.append(
            f"orphans: jobs of {comparison.plan.manifest.name} this manifest no longer "
            f"defines ({what}):"
        )
        for j in comparison.orphans:
            lines.append(f"  {j.get('unique_job_name')}  {status_of(j)}")
    return "\n".join(lines)


def register(main: click.Group) -> None:
    main.add_command(plan_command)
