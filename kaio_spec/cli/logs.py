"""`kaio logs FILE|UNIQUE_JOB_NAME [-f]`: a job's output as it runs."""

from __future__ import annotations

import os
import sys

import click

from kaio_spec.cli.common import Chosen, echo_err, file_or_job


@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="keep printing until the jobs end")
@click.option(
    "--host",
    default="algo-1",
    show_default=True,
    metavar="algo-N",
    help="which instance's log (a job with instance_count N has algo-1 to algo-N)",
)
@click.option(
    "--stdout",
    "stream",
    flag_value="stdout",
    help="only the stdout log (default: stdout and stderr interleaved)",
)
@click.option("--stderr", "stream", flag_value="stderr", help="only the stderr log")
@click.option("--only", metavar="PATTERN", help="FILE: only the jobs whose name or key matches")
@file_or_job
def logs_command(
    chosen: Chosen,
    follow: bool,
    host: str,
    stream: str | None,
    only: str | None,
) -> None:
    """Print a job's log (algo-1's stdout and stderr unless told otherwise) through the local
    platform's logs route. FILE: the latest attempt of each submitted job of the manifest, each
    line prefixed with the job's name when there are several.

    stdout and stderr come interleaved line by line as they are read: while following, in the
    order the job wrote them to within a second; read after the fact, each log's new lines in
    turn (the platform keeps them apart, without times). --stdout or --stderr shows one.

    With -f it follows the jobs until they have all ended, then exits 0. Ctrl-C stops following
    and exits 130, as `kubectl logs -f` does when interrupted; the jobs keep running.

    A server without the logs route (the hosted API) gives a job's logs with its outputs once
    it has ended: the command says so and exits 1; `kaio download` gets them. An unknown job
    or a host the job does not have exits 2."""
    from kaio_spec import journey
    from kaio_spec.logs import read_logs

    client, target = chosen.client, chosen.argument
    if chosen.plan is not None:
        jobs = journey.submitted_jobs(client, chosen.plan, target, only)
    else:
        jobs = [(target, str((chosen.job or {})["unique_job_name"]))]
    prefix = len(jobs) > 1

    stream = stream or "both"
    out = _Writer(prefix, lines=stream == "both")
    chunks = read_logs(client, jobs, host=host, stream=stream, follow=follow)
    try:
        for chunk in chunks:
            out.write(chunk.label, chunk.data, chunk.stream)
        out.close()
    except BrokenPipeError:
        # `kaio logs X | head`: the reader has gone; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return
    if not follow and len(jobs) == 1 and not out.wrote:
        echo_err(f"{jobs[0][1]}: nothing in its {host} log yet")


class _Writer:
    """Bytes to stdout. With `prefix` (several jobs) or `lines` (two streams interleaved), whole
    lines only, so that a line of one never cuts into a line of another; `prefix` puts its
    job's name before each line."""

    def __init__(self, prefix: bool, lines: bool = False):
        self.prefix = prefix
        self.lines = lines or prefix
        self.partial: dict[tuple[str, str], bytes] = {}
        self.wrote = False
        self.out = sys.stdout.buffer

    def _line(self, label: str, line: bytes) -> None:
        head = label.encode() + b" | " if self.prefix else b""
        self.out.write(head + line + b"\n")

    def write(self, label: str, data: bytes, stream: str = "stdout") -> None:
        self.wrote = self.wrote or bool(data)
        if not self.lines:
            self.out.write(data)
            self.out.flush()
            return
        text = self.partial.pop((label, stream), b"") + data
        *lines, rest = text.split(b"\n")
        for line in lines:
            self._line(label, line)
        if rest:
            self.partial[(label, stream)] = rest
        self.out.flush()

    def close(self) -> None:
        for (label, _), rest in self.partial.items():
            self._line(label, rest)
        self.partial.clear()
        self.out.flush()


def register(main: click.Group) -> None:
    main.add_command(logs_command)
