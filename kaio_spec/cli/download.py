"""`kaio download FILE|UNIQUE_JOB_NAME`: ended jobs' outputs and logs onto disk."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kaio_spec.cli.common import Chosen, file_or_job, output_option, write_json
from kaio_spec.errors import EXIT_FAILURE


@click.command("download")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="FILE: each job's outputs go to DEST/<job name> instead of the manifest's `outputs` "
    "path. UNIQUE_JOB_NAME: the folder to download into [default: ./UNIQUE_JOB_NAME]",
)
@click.option("--only", metavar="PATTERN", help="FILE: only the jobs whose name or key matches")
@click.option("--force", is_flag=True, help="replace a destination that holds something else")
@output_option
@file_or_job
def download_command(
    chosen: Chosen,
    dest: Path | None,
    only: str | None,
    force: bool,
    output: str,
) -> None:
    """Download ended jobs' outputs and logs (logs/algo-N/stdout.log and stderr.log).

    FILE: every job of the manifest whose latest attempt has ended (Completed, Failed or
    Stopped) goes to its planned `outputs` folder; jobs still running or never submitted are
    listed and skipped. UNIQUE_JOB_NAME: that job, into --dest.

    Nothing is overwritten silently: files land in a hidden folder beside the destination and
    are renamed into place once all are there, with a marker (.kaio-download.json) naming the
    job. A destination that already holds that job's complete download is left as it is
    ("already"); one that holds anything else (another attempt's outputs, your own files) is
    left alone ("conflict") unless --force replaces it.

    Exits 0 when every ended job is on disk, 1 when a destination was left alone or the job
    named has not ended, 2 for an unknown job or an invalid FILE.

    \b
    -o json prints {"downloads": [DOWNLOAD, ...]}, each DOWNLOAD:
      {"name" (the manifest's job name; null for UNIQUE_JOB_NAME), "unique_job_name",
       "dest", "outcome", "files" (relative paths in dest), "message"}
    outcome: downloaded | already | conflict | not_ended | not_submitted"""
    from kaio_spec import journey

    if chosen.plan is not None:
        results = journey.download(chosen.plan, chosen.client, only=only, dest=dest, force=force)
    else:
        results = [journey.download_one(chosen.client, chosen.job or {}, dest, force=force)]

    if output == "json":
        write_json({"downloads": results})
    else:
        for r in results:
            label = r["name"] or r["unique_job_name"]
            click.echo(f"{label}: {r['outcome'].replace('_', ' ')}: {r['message']}")
    if journey.download_failed(results):
        sys.exit(EXIT_FAILURE)


def register(main: click.Group) -> None:
    main.add_command(download_command)
