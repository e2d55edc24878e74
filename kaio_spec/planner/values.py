"""Small helpers on plain (JSON) values: equality as JSON means it, a canonical serialisation for
hashing, conversion of what a template rendered back into JSON, and values shown as written."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from kaio_spec.yamlpos import Document

# Made once: json.dumps with options builds an encoder per call, which was a third of each
# call's cost (the planner makes several per cell).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces, floats as their shortest repr (the same on
    every machine and Python version). What hashes and seeds are made of."""
    return _CANONICAL.encode(value)


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON (and GitHub's matrix) means it: 1 equals 1.0, true does not equal 1,
    mappings and lists compare item by item."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(json_equal(v, b[k]) for k, v in a.items())
        )
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


class NotJSON(ValueError):
    """A rendered value that is not JSON data; the message says what it was ("a range, which
    is not JSON data")."""


def to_json_value(value: Any) -> Any:
    """A rendered value as plain JSON data (dict, list, str, int, float, bool, None): mappings
    from the template context become dicts, tuples lists, floats shown as written plain floats.
    Raises NotJSON for anything else (a range, a function) or a float that is not finite."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value if type(value) is str else "".join([value])  # a str subclass made plain
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJSON(f"{value!r}, which is not a finite number")
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise NotJSON(f"a mapping with the key {k!r}; keys must be strings")
            out[k] = to_json_value(v)
        return out
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    raise NotJSON(f"a {type(value).__name__}, which is not JSON data")


def written(doc: Document, path: tuple | None, value: Any) -> str:
    """`value` as the user wrote it at `path` (`0.00001`, not `1e-05`; `true`, not `True`), for
    names and messages. Mappings and lists are shown in flow style from their parts' text;
    values no one wrote (sweep draws) as JSON, floats by their shortest repr."""
    if isinstance(value, dict):
        inner = ",".join(
            f"{k}:{written(doc, None if path is None else (*path, k), v)}" for k, v in value.items()
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        inner = ",".join(
            written(doc, None if path is None else (*path, i), v) for i, v in enumerate(value)
        )
        return "[" + inner + "]"
    if path is not None:
        text = doc.source_text(path)
        if text:
            return text
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)
