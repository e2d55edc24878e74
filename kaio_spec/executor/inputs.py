"""A job's `inputs:` on their way to the platform (docs/inputs.md).

Where the server stores input files (its "inputs" feature), StoredInputs sends each file it lacks
once per content (the server keeps them per tenant, so a second apply sends none) and answers the
presign's `inputs`: {name: {path: sha256}}. Elsewhere (the hosted API), packaged_inputs puts the
files in the job's package under inputs/<name>/, so that a manifest runs unchanged on both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from kaio_spec import datasets
from kaio_spec.errors import InvalidInput
from kaio_spec.planner import PlannedJob

MAX_PACKAGED_BYTES = 1024**3  # inputs held in memory in one job's package (the hosted fallback)


class StoredInputs:
    """Sends input files to the platform's store, each at most once per run (thread-safe)."""

    def __init__(self, client, on_bytes: Callable[[int], None] = lambda n: None):
        self.client = client
        self.on_bytes = on_bytes
        self.sent_bytes = 0  # input bytes uploaded this run (benchmarks and tests read it)
        self._present: set[str] = set()  # SHA-256s the server holds (sent, or it had them)
        self._lock = threading.Lock()  # one sender at a time: a file shared by jobs goes once

    def send(self, job: PlannedJob) -> dict[str, dict[str, str]] | None:
        """The presign's `inputs` for the job, once the server holds all their files."""
        if not job.inputs:
            return None
        spec: dict[str, dict[str, str]] = {}
        files: dict[str, tuple[str, int]] = {}
        for dataset in job.inputs:
            spec[dataset.name] = {}
            for f in dataset.files:
                path, sha = datasets.local_copy(dataset, f)
                spec[dataset.name][f.path] = sha
                files[sha] = (path, f.size)
        with self._lock:
            todo = {sha: v for sha, v in files.items() if sha not in self._present}
            if todo:
                self.sent_bytes += self.client.upload_input_files(todo, on_bytes=self.on_bytes)
                self._present.update(todo)
        return spec


def packaged_inputs(job: PlannedJob) -> dict[str, bytes]:
    """The job's inputs as files of its package (inputs/<name>/<path>), for a server that does
    not store input files; InvalidInput past MAX_PACKAGED_BYTES."""
    total = sum(d.size for d in job.inputs)
    if total > MAX_PACKAGED_BYTES:
        raise InvalidInput(
            f"job {job.name}: its inputs hold {total} bytes, more than the "
            f"{MAX_PACKAGED_BYTES} that can travel in its package to a platform without input "
            "storage (docs/inputs.md); use a platform with the 'inputs' feature or less data"
        )
    files = {}
    for dataset in job.inputs:
        for f in dataset.files:
            path, _sha = datasets.local_copy(dataset, f)
            with open(path, "rb") as data:
                files[f"inputs/{dataset.name}/{f.path}"] = data.read()
    return files
