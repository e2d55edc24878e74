"""Values for a manifest's `vars:` from outside it: `--var NAME=VALUE` and `--var-file FILE`
(Terraform's -var and -var-file), so that what differs between runs or machines stays out of the
git-tracked manifest.

    read_variables(manifest, pairs=["lr=0.1"], files=["vars.yaml"]) -> {"lr": 0.1}

Only vars the manifest declares can be set (a typo must not pass silently). A --var value takes
the type of the var it overrides: text for a string var, else YAML's reading of it (`0.1` a
number, `[1, 2]` a list). A var file is a YAML mapping, typed as written. Files apply in order,
then --var pairs; the last wins. The planner renders templates with the result, so overridden
values are part of each job's identity like any other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from kaio_spec.diagnostics import Diagnostic, one_of_words
from kaio_spec.errors import InvalidInput, ManifestError
from kaio_spec.manifest import Manifest
from kaio_spec.schema import suggest
from kaio_spec.yamlpos import LoadError, load_text

__all__ = ["read_variables"]


def read_variables(
    manifest: Manifest, pairs: Sequence[str] = (), files: Sequence[str | os.PathLike] = ()
) -> dict[str, Any]:
    """The overrides of `manifest.vars` that `files` then `pairs` give. Raises ManifestError
    (positioned in the var file) or InvalidInput (a --var pair) for an undeclared var or a
    value that is not YAML."""
    values: dict[str, Any] = {}
    for file in files:
        values.update(_read_file(manifest, os.fspath(file)))
    for pair in pairs:
        name, value = _parse_pair(manifest, pair)
        values[name] = value
    return values


def _undeclared(manifest: Manifest, name: str) -> str | None:
    """Why `name` cannot be set, or None when the manifest declares it."""
    declared = list(manifest.vars)
    if name in declared:
        return None
    if not declared:
        return f"{manifest.file} declares no vars; add {name!r} under vars: first"
    close = suggest(name, declared)
    hint = f"did you mean {close!r}?" if close else f"it has {one_of_words(declared)}"
    return f"{manifest.file} declares no var {name!r}; {hint}"


def _parse_pair(manifest: Manifest, pair: str) -> tuple[str, Any]:
    name, sep, text = pair.partition("=")
    name = name.strip()
    if not sep or not name:
        raise InvalidInput(f"--var {pair!r}: expected NAME=VALUE, e.g. --var lr=0.1")
    problem = _undeclared(manifest, name)
    if problem:
        raise InvalidInput(f"--var {name}: {problem}")
    if isinstance(manifest.vars[name], str):
        return name, text
    try:
        doc = load_text(text, f"--var {name}")
    except LoadError as e:
        message = e.diagnostics[0].message
        raise InvalidInput(f"--var {name}: {text!r} is not a YAML value ({message})") from None
    return name, doc.data


def _read_file(manifest: Manifest, file: str) -> dict[str, Any]:
    try:
        with open(file, encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise InvalidInput(f"--var-file {file}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"--var-file {file}: cannot read it ({e})") from None
    try:
        doc = load_text(text, file)
    except LoadError as e:
        raise ManifestError(e.diagnostics) from None
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise ManifestError([doc.diagnostic((), "a var file is a mapping of var names to values")])
    errors: list[Diagnostic] = []
    for name in doc.data:
        problem = _undeclared(manifest, name)
        if problem:
            errors.append(doc.diagnostic((name,), problem, key=True))
    if errors:
        raise ManifestError(errors)
    return dict(doc.data)
