"""A job's logs while it runs, through the local platform's logs route (docs/protocol.md):
`GET /jobs/<unique>/logs?host=algo-1&offset=N&stream=stdout|stderr` answers the bytes from N and
the next offset in `X-Next-Offset`.

    for chunk in read_logs(client, unique, follow=True):
        sys.stdout.buffer.write(chunk.data)

A server without the route (the hosted API) answers 404 for a job that exists: LogsNotServed
says so, and that the logs come with the outputs (`kaio download`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import requests

from kaio_spec import catalog
from kaio_spec.errors import InvalidInput, PlatformError
from kaio_spec.journey import api_errors, find_job
from kaio_spec.transport import error_reason

__all__ = ["Chunk", "LogsNotServed", "read_logs"]

POLL_S = 1.0  # while following: how often to ask for more (a log line is worth a second)


class LogsNotServed(PlatformError):
    """The server has no logs route: logs come with the outputs once the job ends."""


@dataclass(frozen=True)
class Chunk:
    """Log bytes of one job (`label`: what the caller named it by)."""

    label: str
    unique_job_name: str
    data: bytes
    stream: str = "stdout"


def _fetch(client, unique: str, host: str, stream: str, offset: int) -> tuple[bytes, int]:
    try:
        return client.get_logs(unique, host=host, offset=offset, stream=stream)
    except requests.HTTPError as e:
        resp = e.response
        code = resp.status_code if resp is not None else 0
        if code == 404:
            find_job(client, unique)  # an unknown job: InvalidInput naming it
            raise LogsNotServed(
                f"{client.api_base} does not serve logs while jobs run; a job's logs come with "
                f"its outputs once it has ended: `kaio download {unique}`"
            ) from None
        if code == 400:
            reason = error_reason(resp) or "the server refused the request"
            raise InvalidInput(f"{unique}: {reason}") from None
        raise


def read_logs(
    client,
    jobs: Sequence[tuple[str, str]] | str,
    *,
    host: str = "algo-1",
    stream: str = "stdout",
    follow: bool = False,
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Chunk]:
    """Yield the log bytes of `jobs` ((label, unique_job_name) pairs, or one unique name) for
    `host` and `stream` ("stdout", "stderr", or "both": each round reads stdout then stderr, so
    while following they come interleaved as the job writes them, to the round), from the
    start. Without `follow`, what there is now; with it, until every
    job has ended and its log is read to the end (one status request per round: GET /jobs for
    several jobs, the job's own status for one)."""
    if isinstance(jobs, str):
        jobs = [(jobs, jobs)]
    streams = ("stdout", "stderr") if stream == "both" else (stream,)
    offsets = {(unique, s): 0 for _, unique in jobs for s in streams}
    pending = list(jobs)
    with api_errors(client.api_base):
        while pending:
            # The status is read BEFORE the bytes: a job seen ended here has written its last
            # byte, so reading to the end afterwards misses nothing.
            ended = _ended(client, [u for _, u in pending]) if follow else set()
            for label, unique in pending:
                for s in streams:
                    while True:
                        at = (unique, s)
                        data, offsets[at] = _fetch(client, unique, host, s, offsets[at])
                        if not data:
                            break
                        yield Chunk(label, unique, data, s)
            if not follow:
                return
            pending = [(label, u) for label, u in pending if u not in ended]
            if pending:
                sleep(poll_s)


def _ended(client, uniques: list[str]) -> set[str]:
    if len(uniques) == 1:
        statuses = {uniques[0]: client.get_job(uniques[0]).get("status")}
    else:
        listed = client.get_jobs(include_archived=True).get("jobs") or []
        statuses = {j.get("unique_job_name"): j.get("status") for j in listed}
    # A job missing from the list (its row deleted) will not write any more either.
    return {u for u in uniques if u not in statuses or catalog.is_final(str(statuses[u]))}
