"""`kaio stop FILE|UNIQUE_JOB_NAME`: stop a manifest's running jobs, or one job."""

from __future__ import annotations

import click

from kaio_spec.cli.common import Chosen, confirm, echo_err, file_or_job, output_option, table
from kaio_spec.cli.common import write_json as _write_json


@click.command("stop")
@click.option("--only", metavar="PATTERN", help="FILE: only the jobs whose name or key matches")
@click.option("-y", "--yes", is_flag=True, help="FILE: do not ask for confirmation")
@output_option
@file_or_job
def stop_command(chosen: Chosen, only: str | None, yes: bool, output: str) -> None:
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

    if chosen.plan is not None:
        names = _confirmed(chosen, only, yes, output)
        if names is None:
            return
    else:
        job = chosen.job or {}
        names = [(str(job["unique_job_name"]), str(job.get("job_name")))]

    results = journey.stop_named(chosen.client, names)
    for r in results:
        if r["outcome"] == "stopping":
            echo_err(f"{r['unique_job_name']}: stopping")
        else:
            echo_err(f"{r['unique_job_name']}: already ended ({r['status']}); nothing to stop")
    if output == "json":
        _write_json({"stopped": results})


def _confirmed(chosen: Chosen, only: str | None, yes: bool, output: str):
    """The manifest's running jobs (unique_job_name, job_name) once the user said yes; None when
    there is nothing to stop or the answer was no (said on stderr)."""
    from kaio_spec import journey

    assert chosen.plan is not None
    name = chosen.plan.manifest.name
    live = journey.running_jobs(chosen.client, chosen.plan, only)
    if not live:
        echo_err(f"{name}: no job is running; nothing to stop")
        if output == "json":
            _write_json({"stopped": []})
        return None
    echo_err(
        table(("UNIQUE JOB NAME", "STATUS"), [(j["unique_job_name"], j["status"]) for j in live])
    )
    n = len(live)
    if not confirm(f"Stop {n} running job{'s' if n != 1 else ''} of {name}?", yes):
        echo_err("nothing stopped")
        return None
    return [(str(j["unique_job_name"]), str(j.get("job_name"))) for j in live]


def register(main: click.Group) -> None:
    main.add_command(stop_command)
