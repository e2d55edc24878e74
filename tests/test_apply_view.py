"""The live view when the executor throttles it (issue 18): rebuilt a few times a second at most,
with only the rows a terminal can show, it still says the truth: counts over every job, the
running and the failed first, and at the end exactly what the run came to."""

from __future__ import annotations

import io

from apply_support import write_project
from rich.console import Console

import kaio_spec
from kaio_spec import Client
from kaio_spec.executor import LiveReporter
from kaio_spec.executor.board import ROW_ORDER

ROWS = 4


class Recording(LiveReporter):
    """A live table written to a string (a 12-line terminal), keeping every view it was sent."""

    def __init__(self):
        super().__init__(io.StringIO())
        self.console = Console(file=self.console.file, force_terminal=True, height=12, width=100)
        self.views = []

    def update(self, view):
        self.views.append(view)
        super().update(view)

    def rows_shown(self):
        return ROWS


def _rank(status: str) -> int:
    return ROW_ORDER.index(status) if status in ROW_ORDER else len(ROW_ORDER)


def test_throttled_view_counts_every_job_and_shows_what_matters(tmp_path, kaio_server, api_key):
    cells = 12
    manifest = write_project(
        tmp_path, cells=cells, max_parallel=3, sleep=0.2, env={"FAIL_CELLS": "3,7"}
    )
    reporter = Recording()
    client = Client(kaio_server.url).login(api_key)
    result = kaio_spec.apply(manifest, client=client, reporter=reporter)
    assert sorted(result.counts().items()) == [("Completed", 10), ("Failed", 2)]
    assert reporter.views, "the view was never sent"
    for view in reporter.views:
        assert view.total == cells and sum(view.counts.values()) == cells, view.counts
        assert len(view.rows) <= ROWS
        ranks = [_rank(r.status) for r in view.rows]
        assert ranks == sorted(ranks), [r.status for r in view.rows]  # running, ..., failed first
        for r in view.rows:
            assert view.counts.get(r.status), (r.status, view.counts)
        urgent = sum(n for s, n in view.counts.items() if s in ROW_ORDER)
        assert sum(1 for r in view.rows if r.status in ROW_ORDER) == min(urgent, ROWS)
    last = reporter.views[-1]  # sent at the end, whatever the throttle
    assert last.counts == {"Completed": 10, "Failed": 2} and last.submitted == cells
    failed = {j.name for j in result.jobs if j.status == "Failed"}
    assert {r.name for r in last.rows if r.status == "Failed"} == failed
    assert [r.status for r in last.rows] == ["Failed", "Failed", "Completed", "Completed"]
    text = reporter.console.file.getvalue()
    assert "submitted 12/12" in text and "10 completed, 2 failed" in text
    assert "... and 8 more" in text


class ListingClient(Client):
    """A real client that remembers the filters of each GET /jobs it makes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.listings = []

    def query_jobs(self, **query):
        self.listings.append({k: v for k, v in query.items() if k != "include_archived" and v})
        return super().query_jobs(**query)


def test_polling_rounds_list_the_manifests_jobs_only(tmp_path, kaio_server, api_key):
    """Against a server with GET /jobs filters, each round asks for this manifest's jobs only:
    another manifest's jobs of the same tenant are not sent again and again, and the run still
    sees all of its own."""
    other = write_project(tmp_path / "other", name="other", cells=3)
    client = ListingClient(kaio_server.url).login(api_key)
    assert kaio_spec.apply(other, client=client, detach=True).detached
    manifest = write_project(tmp_path / "mine", name="mine", cells=3, sleep=0.3)
    client.listings.clear()
    result = kaio_spec.apply(manifest, client=client)
    assert sorted(result.counts().items()) == [("Completed", 3)]
    # The first listing is the plan's comparison (every job); results.csv's, at the end, is
    # not a round either: the rounds are result.polls - 1, each filtered.
    filtered = [f for f in client.listings if f == {"labels": ["manifest=mine"]}]
    assert result.polls > 1 and len(filtered) == result.polls - 1, client.listings
    assert client.listings[0] == {}


def test_the_last_view_of_a_detached_run_has_every_submission(tmp_path, kaio_server, api_key):
    """--detach ends as soon as the last job is submitted, well within the view's throttle:
    the view sent at the end still counts it."""
    cells = 12
    manifest = write_project(tmp_path, cells=cells, max_parallel=cells, sleep=5)
    reporter = Recording()
    client = Client(kaio_server.url).login(api_key)
    result = kaio_spec.apply(manifest, client=client, reporter=reporter, detach=True)
    assert result.detached and all(j.unique_job_names for j in result.jobs)
    last = reporter.views[-1]
    assert last.submitted == cells and sum(last.counts.values()) == cells, last.counts
    assert "Waiting" not in last.counts and "Submitting" not in last.counts
