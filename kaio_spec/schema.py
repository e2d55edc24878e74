"""The manifest's JSON Schema (`kaio_spec/schemas/kaio.schema.json`): reading it, validating against
it, and saying what its errors mean in words a user acts on.

jsonschema's own messages are written for schema authors ("'x' is not valid under any of the given
schemas"); `problems()` turns each error into a `Problem`: the path to the bad value (or key) and a
message such as "unknown key 'instnace_type'; did you mean 'instance_type'?".
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from kaio_spec import catalog
from kaio_spec.diagnostics import Path, expected_type, one_of_words, show
from kaio_spec.validation import closest_instance_types

TEMPLATE_REF = {"$ref": "#/$defs/template"}
TEMPLATE_RE = re.compile(r"\{\{|\{%")


def is_template(value: Any) -> bool:
    """Whether a value is a template string the planner renders (it holds `{{` or `{%`)."""
    return isinstance(value, str) and bool(TEMPLATE_RE.search(value))


def schema_text() -> str:
    """The schema file's text, read from the installed package (works from a wheel)."""
    return resources.files("kaio_spec").joinpath("schemas/kaio.schema.json").read_text("utf-8")


@functools.cache
def schema() -> dict[str, Any]:
    return json.loads(schema_text())


@functools.cache
def validator() -> jsonschema.Draft202012Validator:
    """Validates a whole manifest as written (templates allowed where the schema says)."""
    return jsonschema.Draft202012Validator(schema())


@functools.cache
def rendered_job_validator() -> jsonschema.Draft202012Validator:
    """Validates one job's fields after the planner rendered its templates: the job schema with
    every "or a template" alternative removed, so a rendered value must be the real thing."""
    root = _without_templates(copy.deepcopy(schema()))
    job = root["$defs"]["job"]
    return jsonschema.Draft202012Validator({**job, "$defs": root["$defs"]})


def _without_templates(node: Any) -> Any:
    if isinstance(node, dict):
        branches = node.get("anyOf")
        if isinstance(branches, list) and TEMPLATE_REF in branches:
            rest = [b for b in branches if b != TEMPLATE_REF]
            del node["anyOf"]
            if len(rest) == 1:
                node.update(rest[0])
            else:  # pragma: no cover (the schema has one real alternative per field)
                node["anyOf"] = rest
        return {k: _without_templates(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_templates(v) for v in node]
    return node


@dataclass(frozen=True)
class Problem:
    """What is wrong at `path`; `key` when the fault is the key itself (unknown, misspelt)."""

    path: Path
    message: str
    key: bool = False


Describe = Callable[[Path, Any], str]


def _plain_show(path: Path, value: Any) -> str:
    return show(value)


def problems(
    v: jsonschema.protocols.Validator, instance: Any, describe: Describe = _plain_show
) -> list[Problem]:
    """Every schema error in `instance`, in words. `describe(path, value)` renders a value for a
    message (the manifest passes one that uses the YAML source text: `0.00001`, not `1e-05`)."""
    out: list[Problem] = []
    for error in v.iter_errors(instance):
        out.extend(_translate(error, describe))
    return out


def _translate(e: ValidationError, describe: Describe) -> Iterable[Problem]:
    path = tuple(e.absolute_path)
    kw = e.validator
    if "propertyNames" in e.absolute_schema_path:
        # jsonschema checks each key as an instance of its own, at the mapping's path.
        name = e.instance
        message = _custom_message(e) or f"is not an allowed key ({e.message})"
        return [Problem((*path, name), f"{name!r} {message}", key=True)]
    handler = _HANDLERS.get(kw)
    if handler is not None:
        return handler(e, path, describe)
    message = _custom_message(e) or e.message
    return [Problem(path, message)]


def _custom_message(e: ValidationError) -> str | None:
    # `patternErrorMessage` and `errorMessage` are what VS Code's JSON and YAML servers show too.
    if not isinstance(e.schema, dict):
        return None
    if e.validator == "pattern" and "patternErrorMessage" in e.schema:
        return e.schema["patternErrorMessage"]
    return e.schema.get("errorMessage")


def suggest(word: str, options: list[str]) -> str | None:
    """The option `word` most likely misspells, if any: one it abbreviates ("loguniform" for
    "log_uniform_values"), else the closest spelling."""
    squashed = word.replace("_", "").replace("-", "").lower()
    if len(squashed) >= 3:
        for option in options:
            if option.replace("_", "").replace("-", "").lower().startswith(squashed):
                return option
    # 0.65, not difflib's 0.6: at 0.6 "gpus" would be "inputs" (three letters in common).
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.65)
    return close[0] if close else None


def _any_of(e: ValidationError, path: Path, describe: Describe) -> list[Problem]:
    branches = e.validator_value
    real = {i for i, b in enumerate(branches) if b != TEMPLATE_REF}
    if len(real) < len(branches):
        # "an integer or a template": the value is not a template (it would have passed), so
        # what it failed is the real alternative; report that.
        context = [c for c in e.context or [] if c.relative_schema_path[0] in real]
        out: list[Problem] = []
        for c in context:
            out.extend(_translate(c, describe))
        if out:
            return out
    # "a string or {secret: NAME}": report the alternative of the value's own type (the
    # first one when none is), as if it were the only one.
    by_branch: dict[int, list[ValidationError]] = {}
    for c in e.context or []:
        by_branch.setdefault(c.relative_schema_path[0], []).append(c)
    typed = [
        i
        for i, errors in by_branch.items()
        if not any(c.validator == "type" and not c.relative_path for c in errors)
    ]
    chosen = by_branch.get(typed[0] if len(typed) == 1 else min(by_branch, default=-1), [])
    out = [p for c in chosen for p in _translate(c, describe)]
    return out or [Problem(path, e.message)]


def _type(e: ValidationError, path: Path, describe: Describe) -> list[Problem]:
    expected = e.validator_value
    if path == ():
        return [
            Problem(
                path,
                f"a manifest must be a mapping (version, name, jobs), got {describe(path, e.instance)}",
            )
        ]
    message = f"expected {expected_type(expected)}, got {describe(path, e.instance)}"
    wants_string = expected == "string" or (isinstance(expected, list) and "string" in expected)
    if wants_string and isinstance(e.instance, int | float) and not isinstance(e.instance, bool):
        message += f'; quote it: "{describe(path, e.instance)}"'
    return [Problem(path, message)]


def _required(e: ValidationError, path: Path, describe: Describe) -> list[Problem]:
    return [
        Problem(path, f"missing required key {name!r}")
        for name in e.validator_value
        if isinstance(e.instance, dict) and name not in e.instance
    ]


# Keys a job has that defaults cannot hold: each names or shapes that one job.
JOB_ONLY_KEYS = ("name", "matrix", "sweep", "needs")


def _additional(e: ValidationError, path: Path, describe: Describe) -> list[Problem]:
    known = list(e.schema.get("properties", {}))
    patterns = [re.compile(p) for p in e.schema.get("patternProperties", {})]
    out = []
    for key in e.instance:
        if key in known or any(p.search(key) for p in patterns):
            continue
        close = suggest(key, known)
        if path == ("defaults",) and key in JOB_ONLY_KEYS:
            # A job's own key in defaults: say where it goes, not a near name ('matrix' is
            # close to 'metric', which is no help).
            hint = f": {key} belongs to each job (jobs.<key>.{key}), not to defaults"
        elif close:
            hint = f"; did you mean {close!r}?"
        else:
            hint = f" (expected {one_of_words(known)})" if known else ""
        out.append(Problem((*path, key), f"unknown key {key!r}{hint}", key=True))
    return out


def _enum(e: ValidationError, path: Path, describe: Describe) -> list[Problem]:
    options = e.validator_value
    shown = describe(path, e.instance)
    if options == list(catalog.INSTANCE_TYPES):
        if isinstance(e.instance, str):
            closest = one_of_words(_likely_instance_types(e.instance))
            return [Problem(path, f"unknown instance type {shown}; did you mean {closest}?")]
        return [
            Problem(
                path,
                f"expected an instance type such as {catalog.DEFAULT_INSTANCE_TYPE!r}, got {shown}",
            )
        ]
    message = f"{shown} is not one of {one_of_words(options)}"
    if isinstance(e.instance, str):
        close = suggest(e.instance, [o for o in options if isinstance(o, str)])
        if close:
            message += f"; did you mean {close!r}?"
    return [Problem(path, message)]


def _likely_instance_types(name: str) -> list[str]:
    options = closest_instance_types(name)
    # A typo ("ml.g4dn.xlarg") has one obvious fix; offer the others only when it is not clear.
    if difflib.SequenceMatcher(None, name, options[0]).ratio() >= 0.9:
        return options[:1]
    return options


def _const(e: ValidationError, path: Path, describe: Describe) -> list[Problem]:
    custom = _custom_message(e)
    if custom:
        return [Problem(path, f"{describe(path, e.instance)} {custom}")]
    return [
        Problem(path, f"expected {json.dumps(e.validator_value)}, got {describe(path, e.instance)}")
    ]


def _bound(e: ValidationError, path: Path, describe: Describe) -> list[Problem]:
    limit = _number(e.validator_value)
    shown = describe(path, e.instance)
    words = {
        "minimum": f"is less than the minimum of {limit}",
        "maximum": f"is greater than the maximum of {limit}",
        "exclusiveMinimum": f"must be greater than {limit}",
        "exclusiveMaximum": f"must be less than {limit}",
    }[e.validator]
    return [Problem(path, f"{shown} {words}")]


def _number(n: float) -> str:
    return str(int(n)) if isinstance(n, float) and n.is_integer() and math.isfinite(n) else str(n)


def _size(e: ValidationError, path: Path, describe: Describe) -> list[Problem]:
    n = e.validator_value
    kind = e.validator
    if kind in ("minLength", "minItems", "minProperties") and n == 1:
        what = {"minLength": "string", "minItems": "list", "minProperties": "mapping"}[kind]
        return [Problem(path, f"must not be an empty {what}")]
    count = len(e.instance)
    unit = {"Length": "characters", "Items": "items", "Properties": "entries"}[kind[3:]]
    if kind.startswith("min"):
        return [Problem(path, f"expected at least {n} {unit}, got {count}")]
    if kind == "maxLength":
        return [Problem(path, f"{describe(path, e.instance)} is longer than {n} {unit}")]
    return [Problem(path, f"expected at most {n} {unit}, got {count}")]


def _pattern(e: ValidationError, path: Path, describe: Describe) -> list[Problem]:
    message = _custom_message(e) or f"does not match the pattern {e.validator_value}"
    return [Problem(path, f"{describe(path, e.instance)} {message}")]


def _unique(e: ValidationError, path: Path, describe: Describe) -> list[Problem]:
    items = e.instance
    for j, item in enumerate(items):
        for i in range(j):
            if _same(items[i], item):
                item_path = (*path, j)
                return [
                    Problem(
                        item_path, f"{describe(item_path, item)} is already in the list at [{i}]"
                    )
                ]
    return [Problem(path, "the list holds the same value twice")]  # pragma: no cover


def _same(a: Any, b: Any) -> bool:
    # JSON equality, as uniqueItems means it: 1 and 1.0 are equal, true and 1 are not.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _not(e: ValidationError, path: Path, describe: Describe) -> list[Problem]:
    message = _custom_message(e) or "is not allowed here"
    return [Problem(path, f"{describe(path, e.instance)} {message}")]


_HANDLERS: dict[str, Callable[[ValidationError, Path, Describe], list[Problem]]] = {
    "anyOf": _any_of,
    "type": _type,
    "required": _required,
    "additionalProperties": _additional,
    "enum": _enum,
    "const": _const,
    "minimum": _bound,
    "maximum": _bound,
    "exclusiveMinimum": _bound,
    "exclusiveMaximum": _bound,
    "minLength": _size,
    "maxLength": _size,
    "minItems": _size,
    "maxItems": _size,
    "minProperties": _size,
    "maxProperties": _size,
    "pattern": _pattern,
    "uniqueItems": _unique,
    "not": _not,
}
