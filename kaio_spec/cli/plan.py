"""`kaio plan FILE`: what a manifest means, job by job, before anything is submitted."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TextIO

import click

from kaio_spec.cli.common import api_option, connect

if TYPE_CHECKING:  # the planner loads when a command uses it, not for `kaio --help`
    from kaio_spec.planner import Plan, PlannedJob

_COLUMNS = ("KEY", "NAME", "INSTANCES", "VALUES", "ACTION")
# The summary's words for each action's count: "2 to create, 1 unchanged".
_ACTION_WORDS = {
    "create": "to create",
    "unchanged": "unchanged",
    "retry": "to retry",
    "replace": "to replace",
    "rerun": "to rerun (--rerun-failed)",
    "replace-requested": "to rerun (--replace)",
}


def rerun_options(f):
    """--rerun-failed and --replace, shared by plan and apply."""
    f = click.option(
        "--replace",
        metavar="PATTERN",
        help="Submit a new attempt of the jobs whose key or name matches PATTERN (fnmatch), "
        "even if they completed (Terraform's -replace).",
    )(f)
    return click.option(
        "--rerun-failed",
        is_flag=True,
        help="Submit a new attempt of every job whose last attempt failed or was stopped and "
        "that has no retries left (same job_name; attempts go on counting).",
    )(f)


@dataclass(frozen=True)
class Inputs:
    """--var, --var-file and --env-file, as one value: what a command plans its FILE with."""

    var_pairs: tuple[str, ...] = ()
    var_files: tuple[str, ...] = ()
    env_file: str | None = None

    def plan(self, file: str, reuse: bool = False, keep: bool = True) -> Plan:
        """The plan of FILE with --var and --var-file applied, the --env-file never packaged;
        kept for the next command (`keep`, planner/cache.py), and taken from there when
        `reuse`: the commands that only read a sweep (status, stop, download...) reuse it,
        apply plans afresh and keeps it, `kaio plan` neither reuses nor keeps."""
        from kaio_spec.planner.cache import cached_plan

        return cached_plan(file, self.var_pairs, self.var_files, self.env_file, reuse, keep)


def input_options(f):
    """--var, --var-file and --env-file: values from outside the manifest, for every command
    that plans a manifest FILE (vars are part of each job's identity, so status, stop, download...
    find the jobs apply submitted only with the values it was given). The command gets them as
    one keyword, `inputs` (Inputs)."""

    @functools.wraps(f)  # keeps the options declared below this decorator (__click_params__)
    def command(*args, var_pairs, var_files, env_file, **kwargs):
        return f(*args, inputs=Inputs(var_pairs, var_files, env_file), **kwargs)

    command = click.option(
        "--env-file",
        metavar="FILE",
        help="A dotenv file with the values of the manifest's secrets, for those the "
        "environment does not set (never packaged, stored or printed).",
    )(command)
    command = click.option(
        "--var-file",
        "var_files",
        metavar="FILE",
        multiple=True,
        help="A YAML mapping of values for the manifest's vars (repeatable).",
    )(command)
    return click.option(
        "--var",
        "var_pairs",
        metavar="NAME=VALUE",
        multiple=True,
        help="Set the manifest's var NAME (repeatable; after --var-file, the last wins).",
    )(command)


def render_secrets(jobs, env_file: str | None) -> str:
    """One line per secret the jobs get, saying where its value comes from (never the value)."""
    from kaio_spec.secrets import sources as secret_sources

    lines = []
    for name, source in secret_sources(jobs, env_file).items():
        where = f"from {source}" if source else "not set: kaio apply refuses to start"
        lines.append(f"secret {name} ({where})")
    return "\n".join(lines)


def render_inputs(jobs, stored: bool | None) -> str:
    """One line per input the jobs read: its size and how it travels (docs/inputs.md): stored
    once per content where the platform offers it (`stored`; None: not asked), else packaged with
    each job that reads it."""
    readers: dict[tuple[str, str], list] = {}
    for job in jobs:
        for dataset in job.inputs:
            readers.setdefault((dataset.name, dataset.source), [dataset, 0])[1] += 1
    how = {
        True: "uploaded once per content (the platform stores input files)",
        False: "packaged with each job that reads it (the platform stores no input files)",
        None: "uploaded once where the platform stores input files, else packaged with each job",
    }[stored]
    lines = []
    for (name, source), (dataset, count) in readers.items():
        size = f"{len(dataset.files)} files, {dataset.size / 1e6:,.1f} MB"
        lines.append(f"input {name} ({source}): {size}, read by {count} job(s); {how}")
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
@rerun_options
def plan_command(
    file: str,
    output: str,
    offline: bool,
    api: str | None,
    inputs: Inputs,
    rerun_failed: bool,
    replace: str | None,
) -> None:
    """Show the jobs FILE means: matrices and sweeps expanded, templates rendered, each job's
    name, job_name and what apply would do with it: compared with the API's jobs (one request),
    each is create, unchanged, retry or replace (rerun and replace-requested with
    --rerun-failed and --replace, as `kaio apply` would take them), and why, job by job: the
    fields and files that changed since the job was last submitted, or how many attempts
    failed (in -o json: each job's "why", null for create and unchanged). The manifest's jobs
    it no longer defines are counted as orphans (in -o json: listed in "orphans").

    Secrets are listed by name with where their values would come from, never the values.
    Invalid manifests exit 2 with every error as FILE:LINE:COLUMN: PATH: MESSAGE."""
    # A ManifestError is reported by the kaio group, exit 2.
    result = inputs.plan(file, keep=False)
    secrets = render_secrets(result.jobs, inputs.env_file) if output != "json" else ""
    if offline:
        if output == "json":
            write_json(result, sys.stdout)
        else:
            click.echo(render_table(result))
            for text in (secrets, render_inputs(result.jobs, None)):
                if text:
                    click.echo(text)
        return
    from kaio_spec.client import INPUTS
    from kaio_spec.executor import compare
    from kaio_spec.executor.explain import explain

    client = connect(api)
    comparison = compare(client, result)
    if rerun_failed or replace:
        from kaio_spec.executor.observe import request

        comparison = request(comparison, rerun_failed=rerun_failed, replace=replace)
    why = explain(comparison)
    if output == "json":
        orphans = comparison.to_json()["orphans"]
        write_json(comparison.plan, sys.stdout, orphans=orphans, why=why)
    else:
        click.echo(render_comparison(comparison, why=why))
        reads = any(job.inputs for job in result.jobs)
        stored = client.offers(INPUTS) if reads else None
        for text in (secrets, render_inputs(result.jobs, stored)):
            if text:
                click.echo(text)


def write_json(
    result: Plan, out: TextIO, orphans: list | None = None, why: dict | None = None
) -> None:
    """Plan.to_json() as JSON, one job per line: readable, and written as it is made (a
    10,000-job plan never exists as one string). `orphans` (compared with the API) follow the
    jobs as a top-level "orphans" list; `why` (explain.explain's, compared with the API) gives
    each job a "why": why it is retried, rerun or replaced (null for the others)."""
    head = json.dumps({"manifest": result.manifest.name, "file": result.manifest.file})
    out.write(head[:-1] + ', "jobs": [')
    for i, job in enumerate(result.jobs):
        doc = job.to_json()
        if why is not None:
            reason = why.get(job.job_name)
            doc["why"] = reason.to_json() if reason is not None else None
        out.write(("\n  " if i == 0 else ",\n  ") + json.dumps(doc, ensure_ascii=False))
    out.write("\n]" if result.jobs else "]")
    if result.waiting:
        out.write(', "waiting": ' + json.dumps([w.to_json() for w in result.waiting]))
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
    """The plan as aligned columns, then a one-line summary; a plan whose jobs need others is
    shown stage by stage, in the order they run ("stage 2, after prep")."""
    rows = [_COLUMNS, *(_row(job) for job in result.jobs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    if result.waiting or any(job.needs for job in result.jobs):
        lines = _with_stage_headings(result, lines)
    counts: dict[str, int] = {}
    for job in result.jobs:
        counts[job.action.value] = counts.get(job.action.value, 0) + 1
    n = len(result.jobs)
    summary = ", ".join(
        f"{count} {_ACTION_WORDS.get(action, action)}" for action, count in counts.items()
    )
    lines.append("")
    lines.append(f"{result.manifest.name}: {n} job{'s' if n != 1 else ''} ({summary})")
    return "\n".join(lines)


def _with_stage_headings(result: Plan, lines: list[str]) -> list[str]:
    """The table's lines (header first, then one per job) with a heading before each stage, and
    the jobs that wait for a need's outputs (planner/needs.py) in theirs."""
    from kaio_spec.stages import stage_of

    jobs = result.manifest.jobs
    stages = stage_of({key: job.needs for key, job in jobs.items()})
    rows: dict[int, list[str]] = {}
    for job, line in zip(result.jobs, lines[1:], strict=True):
        rows.setdefault(stages[job.key], []).append("  " + line)
    for w in result.waiting:
        them = "it has" if len(w.waits_for) == 1 else "they have"
        waits = ", ".join(w.waits_for)
        rows.setdefault(stages[w.key], []).append(
            f"  {w.key}  waits for {waits}: planned once {them} completed"
        )
    out = ["  " + lines[0]]
    for stage in sorted(rows):
        after = dict.fromkeys(n for key in jobs if stages[key] == stage for n in jobs[key].needs)
        out.append(f"stage {stage + 1}{', after ' + ', '.join(after) if after else ''}:")
        out.extend(rows[stage])
    return out


def render_comparison(comparison, selected=None, *, prune: bool = False, why=None) -> str:
    """The plan compared with the API (`selected`: the jobs --only kept), why each job is
    retried, rerun or replaced (`why`: explain.explain's), then a count of its orphans."""
    jobs = comparison.plan.jobs if selected is None else tuple(selected)
    manifest = comparison.plan.manifest
    lines = [render_table(replace(comparison.plan, jobs=jobs))]
    lines += render_why(jobs, why or {})
    if comparison.orphans:
        n, live = len(comparison.orphans), len(comparison.live_orphans())
        running = f", {live} of them running" if live else ""
        stop = (
            f" `kaio apply {manifest.file} --prune` stops the running ones;"
            if live and not prune
            else ""
        )
        lines.append("")
        lines.append(
            f"{n} orphaned job{'s' if n != 1 else ''} (of {manifest.name}, no longer in "
            f"{manifest.file}{running}):{stop} `kaio forget {manifest.file}` archives "
            f"{'them' if n != 1 else 'it'}"
        )
    return "\n".join(lines)


WHY_NAMES = 4  # job names shown for a reason many jobs share


def render_why(jobs, why: dict) -> list[str]:
    """Each distinct reason once, with the jobs it concerns (Terraform's plan, grouped: a code
    change that replaces 100 cells is one paragraph, not 100)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for job in jobs:
        reason = why.get(job.job_name)
        if reason is not None:
            groups.setdefault((reason.action, *reason.lines()), []).append(job.name)
    lines = []
    for (action, summary, *rest), names in groups.items():
        shown = ", ".join(names[:WHY_NAMES])
        if len(names) > WHY_NAMES:
            shown += f" and {len(names) - WHY_NAMES} more"
        lines.append("")
        lines.append(f"{shown} ({action}): {summary}")
        lines.extend(f"    {line}" for line in rest)
    return lines


def register(main: click.Group) -> None:
    main.add_command(plan_command)
