"""A manifest's plan kept between commands (issue 18): `kaio status`, `stop`, `download` and
`results` of a 10,000-cell sweep planned it again each time, about 0.6 s of CPU, half of what
`kaio status` cost.

What a plan is made of: the manifest's text, the var files and --var values, the --env-file,
kaio's own planner, and each job folder's content. The first five make the key; the folders'
content hashes are computed again on every use (once per folder, as planning does) and must be
the ones the cached jobs hold. Plans whose jobs read anything else (`inputs:` datasets, or the
outputs of jobs they need) are never cached.

The cache lives under KAIO_HOME (the user's own folder, like the credentials), not in the
project's .kaio/: a project folder can come from someone else, and a crafted cache there must not
decide which jobs `kaio stop` stops. It is written whole to a temporary file then renamed (a
crash leaves the old one or the new one), and anything unreadable, stale or odd in it is ignored:
the plan is then made again, as without a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kaio_spec.errors import InvalidInput
from kaio_spec.manifest import Manifest
from kaio_spec.planner.jobs import Plan, PlannedJob

FORMAT = 1
# What of kaio's own code a plan depends on: an upgrade (or an edit of a checkout) plans again.
_CODE = (".", "planner", "schemas")


def plans_folder() -> Path:
    from kaio_spec.targets import kaio_home

    return kaio_home() / "plans"


def cached_plan(
    file: str,
    var_pairs: Sequence[str],
    var_files: Sequence[str],
    env_file: str | None,
    reuse: bool = True,
    keep: bool = True,
) -> Plan:
    """plan(FILE) with --var, --var-file and --env-file, from the cache when it still holds
    (`reuse`), and kept there (`keep`); raises what planning raises (the cache never holds an invalid
    manifest's plan)."""
    from kaio_spec.manifest import load_manifest
    from kaio_spec.planner import plan
    from kaio_spec.planner.variables import read_variables

    sources = _read_sources(file, var_files)  # before planning: a file edited meanwhile is
    manifest = load_manifest(file)  # planned as it now is, but never kept under the old key
    variables = read_variables(manifest, var_pairs, var_files)
    never_packaged = [env_file] if env_file else []
    key = _key(file, sources, var_pairs, never_packaged)
    where = plans_folder() / (hashlib.sha256(os.path.abspath(file).encode()).hexdigest() + ".json")
    found = _load(where, key, manifest) if reuse else None
    if found is not None:
        return found
    planned = plan(manifest, variables=variables, never_packaged=never_packaged)
    if keep and sources == _read_sources(file, var_files):
        _store(where, key, planned)
    return planned


def _read_sources(file: str, var_files: Sequence[str]) -> list[bytes] | None:
    try:
        return [Path(f).read_bytes() for f in (file, *var_files)]
    except OSError:
        return None  # planning says what is wrong


def _key(
    file: str, sources: list[bytes] | None, var_pairs: Sequence[str], never: Sequence[str]
) -> str | None:
    if sources is None:
        return None
    digest = hashlib.sha256()
    code = Path(__file__).resolve().parent.parent
    stamps = []
    try:
        for name in _CODE:
            for entry in sorted(os.scandir(code / name), key=lambda e: e.name):
                if entry.is_file():
                    st = entry.stat()
                    stamps.append((entry.path, st.st_mtime_ns, st.st_size))
    except OSError:  # an installation that cannot be listed: planned each time, as without
        return None
    head = [FORMAT, os.path.abspath(file), list(var_pairs), [os.path.abspath(n) for n in never]]
    digest.update(json.dumps([head, stamps]).encode())
    for source in sources:
        digest.update(hashlib.sha256(source).digest())
    return digest.hexdigest()


def _store(where: Path, key: str | None, planned: Plan) -> None:
    """Keep `planned` under `key`, if it is a plan that can be kept; failures are ignored."""
    if key is None or planned.waiting or any(j.needs or j.inputs for j in planned.jobs):
        return
    folders = {os.path.join(str(j.directory), "") for j in planned.jobs}
    if any(os.path.join(str(where.parent), "").startswith(f) for f in folders):
        return  # writing it would change that folder's content, and its jobs' identities
    excludes: dict[tuple[str, ...], int] = {}
    jobs = [_job_row(j, excludes.setdefault(j.package_exclude, len(excludes))) for j in planned]
    doc = {"key": key, "excludes": [list(e) for e in excludes], "jobs": jobs}
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where.parent, prefix=".plan-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(doc, out, separators=(",", ":"), allow_nan=False)
            os.replace(tmp, where)
        except BaseException:
            os.unlink(tmp)
            raise
    except (OSError, ValueError, TypeError):  # no room, read-only home, a value JSON lacks
        pass


def _job_row(j: PlannedJob, exclude: int) -> list[Any]:
    """The fields _job reads back, in its order."""
    fields = (j.key, j.index, j.name, j.job_name, j.matrix, j.matrix_text, j.spec)
    return [*fields, j.content_hash, str(j.outputs), j.labels, exclude, j.secrets]


def _load(where: Path, key: str | None, manifest: Manifest) -> Plan | None:
    """The plan kept under `key`, if its folders still hash as they did; else None."""
    if key is None:
        return None
    try:
        doc = json.loads(where.read_bytes())
        if not isinstance(doc, Mapping) or doc.get("key") != key:
            return None
        excludes = [tuple(e) for e in doc["excludes"]]
        jobs = tuple(_job(row, excludes) for row in doc["jobs"])
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return None  # none yet, or torn or odd: planned again
    return Plan(manifest, jobs) if _folders_unchanged(jobs) else None


def _job(row: list[Any], excludes: list[tuple[str, ...]]) -> PlannedJob:
    key, index, name, job_name, matrix, matrix_text, spec, content, outputs, labels, ex, sec = row
    return PlannedJob(
        key=key,
        index=index,
        name=name,
        job_name=job_name,
        matrix=matrix,
        matrix_text=matrix_text,
        spec=spec,
        content_hash=content,
        outputs=Path(outputs),
        labels=labels,
        package_exclude=excludes[ex],
        secrets=sec,
    )


def _folders_unchanged(jobs: Sequence[PlannedJob]) -> bool:
    from kaio_spec import packaging

    hashed: dict[tuple[str, str, tuple[str, ...]], str] = {}
    for job in jobs:
        folder = (job.spec["directory"], job.spec["entrypoint"], job.package_exclude)
        if folder not in hashed:
            try:
                hashed[folder] = packaging.folder_content_hash(*folder[:2], exclude=folder[2])
            except (OSError, InvalidInput):  # gone, or the entrypoint with it: planning says so
                return False
        if hashed[folder] != job.content_hash:
            return False
    return True
