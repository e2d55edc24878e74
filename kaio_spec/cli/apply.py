"""`kaio apply FILE`: submit what the API lacks, follow it to the end, download the outputs."""

from __future__ import annotations

import sys

import click

from kaio_spec.cli.common import api_option, confirm, connect
from kaio_spec.cli.plan import (
    Inputs,
    input_options,
    render_comparison,
    render_secrets,
    rerun_options,
)
from kaio_spec.errors import EXIT_INVALID


@click.command("apply")
@click.argument("file", type=click.Path(dir_okay=False))
@api_option
@click.option("-y", "--yes", is_flag=True, help="Apply without asking for confirmation.")
@click.option(
    "--detach", is_flag=True, help="Return once every job is submitted; don't wait for them."
)
@click.option(
    "--prune",
    is_flag=True,
    help="Stop running jobs of this manifest that it no longer defines (orphans), and move "
    "the outputs of cells it no longer defines into .pruned/ beside them (never deleted).",
)
@click.option(
    "--only",
    metavar="PATTERN",
    help="Apply only the jobs whose key or name matches PATTERN (fnmatch: 'train-lr*').",
)
@input_options
@rerun_options
def apply_command(
    file: str,
    api: str | None,
    yes: bool,
    detach: bool,
    prune: bool,
    only: str | None,
    inputs: Inputs,
    rerun_failed: bool,
    replace: str | None,
) -> None:
    """Make the jobs FILE defines exist and run to the end: submit those the API does not
    have (by job_name: never twice), at most settings.max_parallel in flight; retry failures up
    to each job's `retries`; download outputs (and failed jobs' logs) to the `outputs` folders.
    A job that used up its retries stays failed until --rerun-failed (or --replace) asks for
    one more attempt.

    Shows the plan and asks first (--yes skips that; without a terminal --yes is required).
    Exit 0 when every job completed, 1 otherwise, 2 for invalid input, 130 on Ctrl-C (jobs keep
    running: `kaio apply FILE` again resumes, `kaio stop FILE` stops them)."""
    from kaio_spec.executor import (
        LiveReporter,
        PlainReporter,
        execute,
        explain,
        next_round,
        prepare,
        render_summary,
    )
    from kaio_spec.secrets import read_secrets

    if not yes and not sys.stdin.isatty():
        # Before connecting: nothing to ask on, so nothing to start or look up.
        click.echo(
            f"error: kaio apply {file}: no terminal to confirm on; add --yes to apply without "
            "confirmation",
            err=True,
        )
        sys.exit(EXIT_INVALID)
    planned = inputs.plan(file)  # ManifestError: exit 2
    client = connect(api)
    prepared = prepare(planned, client, only=only, rerun_failed=rerun_failed, replace=replace)
    # Before anything is submitted: a missing secret names its jobs and line (exit 2).
    secrets = read_secrets(planned.manifest, prepared.selected, inputs.env_file)
    why = explain(prepared.comparison)
    click.echo(render_comparison(prepared.comparison, prepared.selected, prune=prune, why=why))
    if secrets:
        click.echo(render_secrets(prepared.selected, inputs.env_file))
    if not confirm("Apply this plan?", yes):
        click.echo("nothing done", err=True)
        sys.exit(1)
    live = sys.stderr.isatty() and sys.stdout.isatty()
    reporter = LiveReporter() if live else PlainReporter()
    result = execute(
        prepared, client, detach=detach, prune=prune, reporter=reporter, secrets=secrets
    )

    def replan():
        return inputs.plan(file)

    # needs: jobs whose templates read what the jobs they need wrote, planned once those are done.
    while (following := next_round(prepared, result, replan, client)) is not None:
        prepared = following
        secrets = read_secrets(
            prepared.comparison.plan.manifest, prepared.selected, inputs.env_file
        )
        click.echo(render_comparison(prepared.comparison, prepared.selected, prune=prune))
        result = execute(prepared, client, prune=prune, reporter=reporter, secrets=secrets)
    click.echo(render_summary(result, file))
    sys.exit(result.exit_code)


def register(main: click.Group) -> None:
    main.add_command(apply_command)
