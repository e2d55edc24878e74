"""What a job's `needs` mean once planned: the exact jobs (cells) it runs after, where their
outputs appear in its working folder, and the part of its identity they make.

A dependent job's identity holds the job_names of every cell it needs, and a job_name holds its
own identity's hash: changing `prep` (code, params, anything) changes its job_name, hence every
job that needs it, transitively (as Make, DVC and Kubeflow's cache do), while an unchanged chain
keeps every job_name, so it re-applies as unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaio_spec import downloads
from kaio_spec.planner.templates import Namespace, RenderError
from kaio_spec.statuses import JobStatus

__all__ = [
    "INPUTS",
    "NEEDS_JSON",
    "NeededJob",
    "NeededOutputs",
    "NotReady",
    "Waiting",
    "identity_part",
    "needed_jobs",
    "needs_namespace",
]

INPUTS = "inputs"  # the folder of a dependent job's working folder that holds what it needs
NEEDS_JSON = "needs.json"  # beside it: the list of what is there


@dataclass(frozen=True, slots=True)
class NeededJob:
    """One job (one cell) that a planned job needs. `path`: where its outputs appear in the
    dependent job's working folder: `inputs/<key>` for a job without cells,
    `inputs/<key>/<cell name>` for a cell of a matrix or sweep. `outputs`: where apply
    downloads its outputs on this machine (what is packaged from)."""

    key: str
    name: str
    job_name: str
    matrix: dict[str, Any]
    outputs: Path
    path: str

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "job_name": self.job_name,
            "matrix": self.matrix,
            "path": self.path,
        }


@dataclass(frozen=True, slots=True)
class Waiting:
    """A job whose templates read the outputs of jobs it needs (`waits_for`), not planned yet:
    apply plans it again once they have completed."""

    key: str
    waits_for: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "waits_for": list(self.waits_for)}


def needed_jobs(
    needs: Sequence[str], planned: Mapping[str, Sequence[Any]], has_cells: Mapping[str, bool]
) -> tuple[NeededJob, ...]:
    """The cells of every key in `needs`, from `planned` (key -> its PlannedJobs, planned
    before: the planner goes stage by stage). `has_cells`: key -> whether it has a matrix or a
    sweep (its outputs then go one folder per cell, even when it has a single cell)."""
    out = []
    for key in needs:
        for job in planned.get(key, ()):
            path = f"{INPUTS}/{key}/{job.name}" if has_cells[key] else f"{INPUTS}/{key}"
            out.append(NeededJob(key, job.name, job.job_name, job.matrix, job.outputs, path))
    return tuple(out)


def identity_part(needed: Iterable[NeededJob]) -> dict[str, list[str]]:
    """What a dependent's identity holds of its needs: key -> the job_names of its cells."""
    part: dict[str, list[str]] = {}
    for n in needed:
        part.setdefault(n.key, []).append(n.job_name)
    return {key: sorted(names) for key, names in part.items()}


# ---- templates that read a needed job's outputs ------------------------------------------------

MAX_OUTPUT_BYTES = 1_000_000  # `needs.<key>.outputs[...]` reads small JSON files, not models


class NotReady(RenderError):
    """A template read a needed job's outputs before they were downloaded: the job is planned
    once that job has completed (`kaio plan` shows it as "waits for <key>")."""

    def __init__(self, key: str):
        super().__init__(f"waits for {key}")
        self.key = key


class NeededOutputs:
    """`needs.<key>.outputs` in a template: `outputs['stats.json']` is that JSON file of the
    needed job's downloaded outputs (Namespaces for mappings, via `wrap`). `folder` None: not
    readable now (`kaio validate`, which reads no outputs). `read` records the job_name of the
    outputs read, which the planner checks against the needed job's own once it is identified
    (outputs of an older version of it must not be used). `problem`: why this key's outputs
    cannot be read in this job's templates at all."""

    def __init__(
        self, key: str, folder: Path | None, read: dict[str, str], wrap, problem: str | None
    ):
        self.key, self.folder, self.read, self.wrap = key, folder, read, wrap
        self.problem = problem

    def __getitem__(self, file: str) -> Any:
        if self.problem is not None:
            raise RenderError(self.problem)
        if self.folder is None:
            raise NotReady(self.key)
        marker = downloads.read_marker(self.folder) or {}
        unique = marker.get("unique_job_name")
        if marker.get("status") != JobStatus.COMPLETED or not downloads.is_complete(
            self.folder, unique
        ):
            raise NotReady(self.key)
        files = [f for f in marker["files"] if not f.startswith("logs/")]
        if file not in files:
            raise RenderError(f"{self.key} has no output {file!r} (it has {', '.join(files)})")
        path = self.folder / file
        if path.stat().st_size > MAX_OUTPUT_BYTES:
            raise RenderError(f"{self.key}'s {file} is over {MAX_OUTPUT_BYTES:,} bytes")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            raise RenderError(f"{self.key}'s {file} is not JSON: {e}") from None
        self.read[self.key] = str(marker.get("job_name"))
        return self.wrap(f"needs.{self.key}.outputs[{file!r}]", data)


def needs_namespace(
    keys: Mapping[str, bool],
    needs: Sequence[str],
    folders: Mapping[str, Path | None],
    read: dict[str, str],
    wrap,
) -> Namespace:
    """`needs` for a job's templates: `needs.<key>.outputs[...]` for each key it needs
    (`folders`: key -> its outputs folder; None when not to be read); for the manifest's other
    `keys` (key -> whether it has cells), and keys with cells, a message saying why not."""
    data = {}
    for key, has_cells in keys.items():
        problem = None
        if key not in needs:
            problem = f"{key} is not among the jobs this job needs; add it: needs: [{key}]"
        elif has_cells:
            problem = (
                f"{key} has cells (a matrix or a sweep); needs.{key}.outputs reads the outputs "
                "of a job without cells"
            )
        outputs = NeededOutputs(key, folders.get(key), read, wrap, problem)
        data[key] = Namespace(f"needs.{key}", {"outputs": outputs})
    return Namespace("needs", data)
