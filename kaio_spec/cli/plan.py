"""`kaio plan FILE`: what a manifest means, job by job, before anything is submitted."""

from __future__ import annotations

import json
import sys
from typing import TextIO

import click

from kaio_spec.cli.common import api_option, connect
from kaio_spec.manifest import load_manifest
from kaio_spec.planner import Plan, PlannedJob, plan
from kaio_spec.planner.variables import read_variables
from kaio_spec.secrets import sources as secret_sources

_COLUMNS = ("KEY", "NAME", "INSTANCES", "VALUES", "ACTION")


def input_options(f):
    """--var, --var-file and --env-file: values from outside the manifest (plan and apply)."""
    f = click.option(
        "--env-file",
        metavar="FILE",
        help="A dotenv file with the values of the manifest's secrets, for those the "
        "environment does not set (never packaged, stored or printed).",
    )(f)
    f = click.option(
        "--var-file",
        "var_files",
        metavar="FILE",
        multiple=True,
        help="A YAML mapping of values for the manifest's vars (repeatable).",
    )(f)
    return click.option(
        "--var",
        "var_pairs",
        metavar="NAME=VALUE",
        multiple=True,
        help="Set the manifest's var NAME (repeatable; after --var-file, the last wins).",
    )(f)


def plan_with_inputs(
    file: str, var_pairs: tuple[str, ...], var_files: tuple[str, ...], env_file: str | None
) -> Plan:
    """The plan of FILE with --var and --var-file applied, the --env-file never packaged."""
    manifest = load_manifest(file)
    variables = read_variables(manifest, var_pairs, var_files)
    return plan(manifest, variables=variables, never_packaged=[env_file] if env_file else [])


def render_secrets(jobs, env_file: str | None) -> str:
    """One line per secret the jobs get, saying where its value comes from (never the value)."""
    lines = []
    for name, source in secret_sources(jobs, env_file).items():
        where = f"from {source}" if source else "not set: kaio apply refuses to start"
        lines.append(f"secret {name} ({where})")
    return "\n".join(lines)


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
@input_options
def plan_command(
    file: str,
    output: str,
    offline: bool,
    api: str | None,
    var_pairs: tuple[str, ...],
    var_files: tuple[str, ...],
    env_file: str | None,
) -> None:
    """Show the jobs FILE means: matrices and sweeps expanded, templates rendered, each job's
    name, job_name and what apply would do with it: compared with the API's jobs (one request),
    each is create, unchanged, retry or replace, and the manifest's jobs it no longer defines
    are listed as orphans (in -o json: "orphans").

    Secrets are listed by name with where their values would come from, never the values.
    Invalid manifests exit 2 with every error as FILE:LINE:COLUMN: PATH: MESSAGE."""
    # A ManifestError is reported by the kaio group, exit 2.
    result = plan_with_inputs(file, var_pairs, var_files, env_file)
    secrets = render_secrets(result.jobs, env_file) if output != "json" else ""
    if offline:
        if output == "json":
            write_json(result, sys.stdout)
        else:
            click.echo(render_table(result))
            if secrets:
                click.echo(secrets)
        return
    from kaio_spec.executor import compare

    comparison = compare(connect(api), result)
    if output == "json":
        write_json(comparison.plan, sys.stdout, orphans=comparison.to_json()["orphans"])
    else:
        click.echo(render_comparison(comparison))
        if secrets:
            click.echo(secrets)


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
