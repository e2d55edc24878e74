"""`kaio jobs`: all of your jobs on the target, newest first."""

from __future__ import annotations

import click

from kaio_spec.cli.common import api_option, connect, duration, local_time, output_option, table
from kaio_spec.cli.common import write_json as _write_json
from kaio_spec.times import elapsed


@click.command("jobs")
@click.option("--all", "include_archived", is_flag=True, help="list archived jobs too")
@api_option
@output_option
def jobs_command(include_archived: bool, api: str | None, output: str) -> None:
    """List all of your jobs, newest first (every manifest's, and jobs submitted otherwise).

    \b
    -o json prints {"jobs": [JOB, ...], "count": N}, each JOB:
      {"unique_job_name", "job_name", "status", "timestamp", "start_time",
       "end_time", "failure_reason", "instance_type", "instance_count",
       "labels", "archived"}
    status is one of Pending, InProgress, Stopping, Completed, Failed, Stopped;
    times are ISO 8601 UTC, null when not reached yet."""
    from kaio_spec import journey

    client = connect(api)
    jobs = journey.list_jobs(client, include_archived=include_archived)
    if output == "json":
        _write_json({"jobs": jobs, "count": len(jobs)})
        return
    if not jobs:
        click.echo(f"no jobs on {client.api_base} yet", err=True)
        return
    rows = [
        (
            j["unique_job_name"] or "-",
            j["status"] + (" (archived)" if j["archived"] else ""),
            local_time(j["timestamp"]),
            duration(elapsed(j)),
            f"{j['instance_type']} × {j['instance_count']}",
        )
        for j in jobs
    ]
    click.echo(table(("UNIQUE JOB NAME", "STATUS", "SUBMITTED", "RAN", "INSTANCES"), rows))


def register(main: click.Group) -> None:
    main.add_command(jobs_command)
