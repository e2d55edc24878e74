"""What a job's `needs` mean once planned: the exact jobs (cells) it runs after, where their
outputs appear in its working folder, and the part of its identity they make.

A dependent job's identity holds the job_names of every cell it needs, and a job_name holds its
own identity's hash: changing `prep` (code, params, anything) changes its job_name, hence every
job that needs it, transitively (as Make, DVC and Kubeflow's cache do), while an unchanged chain
keeps every job_name, so it re-applies as unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["INPUTS", "NEEDS_JSON", "NeededJob", "identity_part", "needed_jobs"]

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
