"""Positioned errors, shared by every stage that reads a manifest (loading, validation, planning).

A `Diagnostic` names the file, the 1-based line and column of the bad value, the path from the
document's root to it, and what is wrong:

    kaio.yaml:14:7: jobs.train.volume_size_gb: 80 is greater than the maximum of 50

Paths are tuples of keys (str) and list indexes (int); `format_path` renders them dotted, with list
items as `[0]`. `show` renders a value the way the user wrote it (its YAML source text when known).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Path = tuple  # of str | int; a plain tuple so paths hash, compare and sort cheaply

_PLAIN_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")


def format_path(path: Iterable[str | int]) -> str:
    """`("jobs", "train", "matrix", "lr", 0)` -> `jobs.train.matrix.lr[0]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_SEGMENT.match(part):
            out += f".{part}" if out else part
        else:
            # A key with dots, spaces or nothing in it would make the dotted path ambiguous.
            out += f"[{json.dumps(part)}]"
    return out


@dataclass(frozen=True)
class Diagnostic:
    """One error at one place. `line` and `column` are 1-based; None when the file has no lines
    to point at (it could not be read at all)."""

    file: str
    line: int | None
    column: int | None
    path: Path
    message: str

    @property
    def dotted_path(self) -> str:
        return format_path(self.path)

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        dotted = self.dotted_path
        return f"{where}: {dotted}: {self.message}" if dotted else f"{where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        """The shape `kaio validate -o json` prints for each error."""
        return {
            "line": self.line,
            "column": self.column,
            "path": self.dotted_path,
            "message": self.message,
        }


def sort_key(d: Diagnostic) -> tuple:
    # File order; errors without a position (unreadable file) come first.
    return (d.line or 0, d.column or 0)


def in_file_order(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Sorted by position, duplicates (same place, path and message) dropped; stable otherwise."""
    seen: set[tuple] = set()
    out = []
    for d in sorted(diagnostics, key=sort_key):
        key = (d.line, d.column, d.path, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


# ---- describing values in messages ----------------------------------------------------------


def show(value: Any, text: str | None = None) -> str:
    """A value as a message shows it: strings quoted, numbers as written, containers by kind."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if text is not None and text.strip():
        return text
    return repr(value)


TYPE_NAMES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def expected_type(types: str | list[str]) -> str:
    names = [TYPE_NAMES.get(t, t) for t in ([types] if isinstance(types, str) else types)]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def one_of_words(options: list[str], quote: bool = True) -> str:
    """`['a', 'b', 'c']` -> `'a', 'b' or 'c'`."""
    shown = [repr(o) if quote else str(o) for o in options]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]
