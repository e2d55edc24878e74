"""Job statuses are one str Enum (kaio_spec/statuses.py): everything that wrote or compared the
plain strings before still reads and writes exactly those strings."""

from __future__ import annotations

import json

from kaio_spec import catalog, downloads
from kaio_spec.executor.needs import _downloaded
from kaio_spec.planner.needs import NeededJob
from kaio_spec.statuses import FINAL_STATUSES, JobStatus

# A download marker exactly as kaio wrote it before statuses were an enum.
OLD_MARKER = """{
 "unique_job_name": "prep-1a2b3c-20260101-000000-abcd",
 "job_name": "prep-1a2b3c",
 "status": "Completed",
 "start_time": null,
 "end_time": null,
 "files": [
  "out.txt"
 ],
 "downloaded_at": "2026-01-01T00:00:00+00:00"
}
"""


def test_a_status_is_written_as_its_plain_spelling():
    status = catalog.normalize_status("COMPLETED")
    assert status is JobStatus.COMPLETED and status == "Completed"
    assert f"{status}" == str(status) == "Completed"
    assert json.dumps({"status": status, status: 1}) == '{"status": "Completed", "Completed": 1}'
    assert json.dumps([status], indent=1) == '[\n "Completed"\n]'
    assert {"Completed": "green"}[status] == "green" and "Failed" in FINAL_STATUSES
    assert catalog.normalize_status("Weird") == "Weird"  # unknown spellings pass through


def test_a_download_marker_written_before_the_enum_still_loads_and_is_written_the_same(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / downloads.MARKER).write_text(OLD_MARKER)
    (old / "out.txt").write_text("done\n")
    marker = downloads.read_marker(old)
    need = NeededJob("prep", "prep", "prep-1a2b3c", {}, old, "inputs/prep")
    assert _downloaded(need)  # a completed download the jobs after it can use

    # Written now, with the status as the API answers it: the same bytes as before.
    new = tmp_path / "new"
    marker["status"] = catalog.normalize_status("Completed")
    assert marker["status"] is JobStatus.COMPLETED
    downloads._write_marker(new, marker)
    assert (new / downloads.MARKER).read_text() == OLD_MARKER
