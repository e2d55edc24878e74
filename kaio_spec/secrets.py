"""Secrets: values a job gets as environment variables that never enter the manifest, the plan,
`.kaio/state.json`, the screen or a job's identity.

A manifest names them (`env: {WANDB_API_KEY: {secret: WANDB_API_KEY}}`, or the top-level
`secrets: [WANDB_API_KEY]` for every job); their values are read when apply submits, from the
environment kaio runs in, else from an `--env-file` (dotenv syntax, read by python-dotenv):

    secrets = read_secrets(plan.manifest, jobs, env_file=".env")   # ManifestError if one is missing
    Submitter(..., secrets=secrets)                                  # adds them to each job's env

`Secrets` holds the values; its repr and str show names only, so a traceback or a log line that
prints it holds no value. `sources` says where each name would come from, for `kaio plan`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from dotenv import dotenv_values

from kaio_spec.diagnostics import Diagnostic, in_file_order
from kaio_spec.errors import InvalidInput, ManifestError
from kaio_spec.manifest import Manifest
from kaio_spec.planner import PlannedJob

__all__ = ["Secrets", "read_secrets", "sources"]

ENVIRONMENT = "environment"


class Secrets(Mapping[str, str]):
    """Secret name -> value; printing it shows the names only."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str] | None = None):
        self._values = dict(values or {})

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({sorted(self._values)})"

    __str__ = __repr__


def _needed(jobs: Iterable[PlannedJob]) -> list[str]:
    names: dict[str, None] = {}
    for job in jobs:
        names.update(dict.fromkeys(job.secrets.values()))
    return list(names)


def _file_values(env_file: str | os.PathLike | None) -> dict[str, str]:
    if env_file is None:
        return {}
    path = Path(env_file)
    if not path.is_file():
        raise InvalidInput(f"--env-file {env_file}: no such file")
    try:
        found = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"--env-file {env_file}: cannot read it ({type(e).__name__})") from None
    return {k: v for k, v in found.items() if v is not None}


def _lookup(
    names: list[str], env_file: str | os.PathLike | None, environ: Mapping[str, str] | None
) -> dict[str, tuple[str, str]]:
    """name -> (value, where it came from) for the names that are set: the environment first
    (as docker compose does: what the shell exports wins), then the env file."""
    environ = os.environ if environ is None else environ
    from_file = _file_values(env_file) if names else {}
    found = {}
    for name in names:
        if name in environ:
            found[name] = (environ[name], ENVIRONMENT)
        elif name in from_file:
            found[name] = (from_file[name], os.fspath(env_file or ""))
    return found


def sources(
    jobs: Iterable[PlannedJob],
    env_file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """Secret name -> where its value would come from ("environment" or the env file's path),
    None when it is not set: what `kaio plan` shows, never the values."""
    names = _needed(jobs)
    found = _lookup(names, env_file, environ)
    return {name: found[name][1] if name in found else None for name in names}


def read_secrets(
    manifest: Manifest,
    jobs: Iterable[PlannedJob],
    env_file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
) -> Secrets:
    """The values of every secret `jobs` need. Raises ManifestError naming, for each one that is
    not set, the jobs that need it and the line that asks for it; InvalidInput for an env file
    that cannot be read."""
    jobs = list(jobs)
    names = _needed(jobs)
    found = _lookup(names, env_file, environ)
    missing = [n for n in names if n not in found]
    if missing:
        raise ManifestError(_missing(manifest, jobs, missing, env_file))
    return Secrets({name: value for name, (value, _) in found.items()})


def _missing(
    manifest: Manifest, jobs: list[PlannedJob], missing: list[str], env_file
) -> list[Diagnostic]:
    where = f"the environment or {os.fspath(env_file)}" if env_file else "the environment"
    asked: dict[tuple, tuple[str, dict[str, None]]] = {}  # document path -> (name, job keys)
    for job in jobs:
        definition = manifest.jobs[job.key]
        for variable, name in job.secrets.items():
            if name in missing:
                path = definition.source_path("env", variable) or definition.path
                asked.setdefault(path, (name, {}))[1][job.key] = None
    out = []
    for path, (name, keys) in asked.items():
        which = ", ".join(repr(k) for k in keys)
        message = (
            f"secret {name} (for job{'s' if len(keys) > 1 else ''} {which}) is not set in "
            f"{where}; export {name} before kaio apply, or put it in an --env-file"
        )
        out.append(manifest.diagnostic(path, message))
    return in_file_order(out)
