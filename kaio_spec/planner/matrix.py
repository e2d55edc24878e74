"""Matrices, expanded the way GitHub Actions expands `strategy.matrix`, rule for rule
(https://docs.github.com/en/actions/using-jobs/using-a-matrix-for-your-jobs):

1. the cartesian product of the keys' lists, in the order written, first key varying slowest;
2. `exclude`: an entry removes every combination that matches it on all the keys it names (a
   partial match is enough; the manifest refuses keys the matrix lacks);
3. `include`, entry by entry: the entry's pairs are added to every original combination where
   none of them would overwrite an original (product) value; values an earlier include added may
   be overwritten. An entry that fits no original combination becomes a new combination,
   appended; appended combinations are never extended by later entries.

With no keys but `include`, each entry is a combination. Values compare as JSON values
(values.json_equal) and may be mappings or lists.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kaio_spec.manifest import Matrix
from kaio_spec.planner.values import json_equal

__all__ = ["Cell", "TooManyCells", "count_cells", "expand_matrix"]


@dataclass(slots=True)
class Cell:
    """One combination: `values` by key in the order they were added, and for each value the
    path, relative to the job, where it was written (None for a sweep's drawn number).
    `draw` is the 1-based number of a random sweep's draw within its matrix cell."""

    values: dict[str, Any]
    sources: dict[str, tuple | None] = field(default_factory=dict)
    draw: int | None = None


class TooManyCells(Exception):
    """The matrix has more than `limit` combinations (counting stopped there)."""

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(f"more than {limit} combinations")


def _excluded(values: dict[str, Any], exclude: list[dict[str, Any]]) -> bool:
    return any(
        all(k in values and json_equal(values[k], v) for k, v in entry.items()) for entry in exclude
    )


def _product(matrix: Matrix) -> Iterator[Cell]:
    keys = list(matrix.dimensions)
    lists = [matrix.dimensions[k] for k in keys]
    for idx in itertools.product(*(range(len(values)) for values in lists)):
        values = {k: lists[n][i] for n, (k, i) in enumerate(zip(keys, idx, strict=True))}
        sources: dict[str, tuple | None] = {
            k: ("matrix", k, i) for k, i in zip(keys, idx, strict=True)
        }
        yield Cell(values, sources)


def expand_matrix(matrix: Matrix, limit: int | None = None) -> list[Cell]:
    """The matrix's combinations, in GitHub's order. With `limit`, raises TooManyCells as soon as
    there are more than that many, without building the rest (the product may be huge)."""
    originals: list[Cell] = []
    if matrix.dimensions:
        for cell in _product(matrix):
            if matrix.exclude and _excluded(cell.values, matrix.exclude):
                continue
            originals.append(cell)
            if limit is not None and len(originals) > limit:
                raise TooManyCells(limit)
    dims = matrix.dimensions
    appended: list[Cell] = []
    for j, entry in enumerate(matrix.include):
        fits = False
        for cell in originals:
            if all(k not in dims or json_equal(cell.values[k], v) for k, v in entry.items()):
                fits = True
                for k, v in entry.items():
                    if k not in dims:
                        cell.values[k] = v
                        cell.sources[k] = ("matrix", "include", j, k)
        if not fits:
            appended.append(Cell(dict(entry), {k: ("matrix", "include", j, k) for k in entry}))
            if limit is not None and len(originals) + len(appended) > limit:
                raise TooManyCells(limit)
    return originals + appended


def count_cells(matrix: Matrix, budget: int = 1_000_000) -> int | None:
    """How many combinations expand_matrix makes, without making them (for "makes 5000 jobs"),
    or None when telling would take more than `budget` steps. Only the keys an exclude or
    include entry names need enumerating; every other key multiplies the count."""
    dims = matrix.dimensions
    if not dims:
        return len(matrix.include)
    entries = [*matrix.exclude, *matrix.include]
    named = [k for k in dims if any(k in entry for entry in entries)]
    free = math.prod(len(dims[k]) for k in dims if k not in named)
    if math.prod(len(dims[k]) for k in named) > budget:
        return None
    kept = 0
    fits = [False] * len(matrix.include)
    for combo in itertools.product(*(dims[k] for k in named)):
        values = dict(zip(named, combo, strict=True))
        if _excluded(values, matrix.exclude):
            continue
        kept += 1
        for j, entry in enumerate(matrix.include):
            if not fits[j] and all(
                k not in dims or json_equal(values[k], v) for k, v in entry.items()
            ):
                fits[j] = True
    appended = sum(1 for fit in fits if not (fit and free))
    return kept * free + appended
