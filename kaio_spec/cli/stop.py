"""`kaio stop FILE|UNIQUE_JOB_NAME`: stop a manifest's running jobs, or one job."""

from __future__ import annotations

import click

from kaio_spec.cli.common import api_option, confirm, connect, echo_err, output_option, table
from kaio_spec.cli.common import write_json as _write_json
from kaio_spec.cli.plan import Inputs, input_options


@click.command("stop")
@click.argument("target", metavar="FILE|UNIQUE_JOB_NAME")
@click.option("--only", metavar="PATTERN", help="FILE: only the jobs whose name or key matches")
@click.option("-y", "--yes", is_flag=True, help="FILE: do not ask for confirmation")
@api_option
@output_option
@input_options
def stop_command(
    target: str,
    only: str | None,
    yes: bool,
    api: str | None,
    output: str,
    inputs: Inputs,
) -> None:
    """Stop running jobs (SIGTERM to their processes, then SIGKILL after a grace period; they
    end as Stopped, and their logs and partial outputs can be downloaded).

    FILE: every running job of the manifest (each job's attempts, older versions of its jobs
    and orphans), after confirmation: --yes skips it, and without a terminal it is required
    (exit 2 otherwise). UNIQUE_JOB_NAME: that job, at once; one that already ended is left as
    it is (exit 0, said on stderr).

    \b
    -o json prints {"stopped": [STOP, ...]}, each STOP:
      {"unique_job_name", "job_name", "outcome" (stopping | ended), "status"}"""
    from kaio_spec import journey

    if journey.is_manifest_argument(target):
        planned = inputs.plan(target)
        client = connect(api)
        comparison = journey.manifest_status(client, planned)
        if only:
            comparison = _only(comparison, journey.select(comparison.observed, only))
        live = journey.live_jobs_of(comparison)
        if not live:
            echo_err(f"{planned.manifest.name}: no job is running; nothing to stop")
            if output == "json":
                _write_json({"stopped": []})
            return
        echo_err(
            table(
                ("UNIQUE JOB NAME", "STATUS"), [(j["unique_job_name"], j["status"]) for j in live]
            )
        )
        n = len(live)
        if not confirm(
            f"Stop {n} running job{'s' if n != 1 else ''} of {planned.manifest.name}?", yes
        ):
            echo_err("nothing stopped")
            return
        names = [(str(j["unique_job_name"]), str(j.get("job_name"))) for j in live]
    else:
        client = connect(api)
        job = journey.find_job(client, target)
        names = [(job["unique_job_name"], str(job.get("job_name")))]

    results = []
    stopped = journey.stop_jobs(client, [unique for unique, _ in names])
    for (unique, job_name), (outcome, status) in zip(names, stopped, strict=True):
        results.append(
            {"unique_job_name": unique, "job_name": job_name, "outcome": outcome, "status": status}
        )
        if outcome == "stopping":
            echo_err(f"{unique}: stopping")
        else:
            echo_err(f"{unique}: already ended ({status}); nothing to stop")
    if output == "json":
        _write_json({"stopped": results})


def _only(comparison, chosen):
    """The comparison limited to the chosen jobs (orphans dropped: they match no pattern)."""
    from dataclasses import replace

    return replace(comparison, observed=tuple(chosen), orphans=())


def register(main: click.Group) -> None:
    main.add_command(stop_command)
