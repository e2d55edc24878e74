"""Why a planned job is retried, rerun or replaced: in words and as a field-level diff, the way
Terraform explains a plan.

    why = explain(comparison)   # versions: .kaio/<state>.versions.json beside the manifest
    why[job_name].lines()   # ['changed since sweep-train-1-0a1b2c3d', '~ env.LR: "0.1" -> "0.2"']
    why[job_name].to_json() # the same as data (`kaio plan -o json`'s "why")

A replace compares the job with the version it replaces as this machine submitted it
(versions.py records each job's spec and its folder's files at submit time); without that record
(another machine submitted it) it compares with what the API says of the old job: instance
type and count, volume, entrypoint and the names of its env variables.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaio_spec import packaging
from kaio_spec.executor.observe import Comparison, Observed, counts_as_attempt, status_of
from kaio_spec.executor.state import state_path
from kaio_spec.executor.versions import DIGEST_CHARS, Versions
from kaio_spec.planner import SPEC_KEYS, Action, PlannedJob
from kaio_spec.statuses import JobStatus

__all__ = ["Change", "Explanation", "FileChanges", "explain", "spec_changes"]

SHOWN_FILES = 3  # file names shown per kind in words; -o json carries up to LISTED_FILES
LISTED_FILES = 50
_API_FIELDS = ("instance_type", "instance_count", "volume_size_gb", "entrypoint")


@dataclass(frozen=True)
class Change:
    """One field of the spec: `kind` changed, added or removed; `path` dotted (env.LR)."""

    path: str
    kind: str
    before: Any = None
    after: Any = None

    def line(self) -> str:
        if self.kind == "added":
            return f"+ {self.path}: {_show(self.after)}"
        if self.kind == "removed":
            return f"- {self.path}: {_show(self.before)}"
        return f"~ {self.path}: {_show(self.before)} -> {_show(self.after)}"

    def to_json(self) -> dict[str, Any]:
        return {"field": self.path, "change": self.kind, "from": self.before, "to": self.after}


@dataclass(frozen=True)
class FileChanges:
    """Which files of a job's folder differ from the version it replaces."""

    folder: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()

    def line(self) -> str:
        parts = []
        for kind, names in (("modified", self.modified), ("added", self.added)):
            parts.append(_some(kind, names))
        parts.append(_some("removed", self.removed))
        return f"~ files of {self.folder}: " + (
            ", ".join(p for p in parts if p) or "their content changed"
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"folder": self.folder}
        for kind in ("added", "removed", "modified"):
            names = getattr(self, kind)
            doc[kind] = list(names[:LISTED_FILES])
            doc[f"{kind}_count"] = len(names)
        return doc


def _some(kind: str, names: tuple[str, ...]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:SHOWN_FILES]) + (", ..." if len(names) > SHOWN_FILES else "")
    return f"{len(names)} {kind} ({shown})"


@dataclass(frozen=True)
class Explanation:
    """Why one job gets its action: `summary` in words, then what changed or what failed."""

    action: str
    summary: str
    changes: tuple[Change, ...] = ()
    files: FileChanges | None = None
    attempts: dict[str, int] | None = None
    previous: str | None = None  # the job_name a replace follows
    details: tuple[str, ...] = field(default=())

    def lines(self) -> list[str]:
        """The summary, then one line per changed field and one for the files."""
        out = [self.summary, *(c.line() for c in self.changes)]
        if self.files is not None:
            out.append(self.files.line())
        return out + list(self.details)

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "summary": self.summary,
            "changes": [c.to_json() for c in self.changes],
            "files": self.files.to_json() if self.files else None,
            "attempts": self.attempts,
            "previous": self.previous,
        }


def explain(comparison: Comparison, versions: Versions | None = None) -> dict[str, Explanation]:
    """An Explanation for each job of `comparison` that is retried, rerun or replaced, by
    job_name. `versions`: what its jobs were submitted with; by default those recorded beside
    the manifest."""
    if versions is None:
        versions = Versions.for_state(state_path(comparison.plan.manifest.path))
    folders: dict[tuple, dict[str, str]] = {}
    out = {}
    for o in comparison.observed:
        action = o.job.action
        if action == Action.REPLACE:
            out[o.job.job_name] = _replace(o, versions, folders)
        elif action in (Action.RETRY, Action.RERUN, Action.REPLACE_REQUESTED):
            out[o.job.job_name] = _attempts(o)
    return out


def _attempts(o: Observed) -> Explanation:
    counted = [a for a in o.attempts if counts_as_attempt(a)]
    action = o.job.action.value
    if not counted:
        return Explanation(
            action,
            "its submission never got its package (stopped before it ran): submitted "
            "again, not counted as an attempt",
        )
    latest = counted[0]
    status = status_of(latest)
    used, allowed = len(counted), o.job.retries + 1
    failed = sum(1 for a in counted if status_of(a) != JobStatus.COMPLETED)
    if o.job.action == Action.REPLACE_REQUESTED:
        summary = f"--replace: attempt {used} {status.lower()}; attempt {used + 1} is submitted"
    elif o.job.action == Action.RERUN:
        summary = (
            f"{_verb(status)} {failed} of {used} attempts, no retries left; --rerun-failed "
            f"submits attempt {used + 1}"
        )
    else:
        summary = f"{_verb(status)} {failed} of {allowed} attempts; attempt {used + 1} is submitted"
    reason = str(latest.get("failure_reason") or "").strip().splitlines()
    details = (f"last: {reason[0]}",) if reason and status != JobStatus.COMPLETED else ()
    return Explanation(
        action,
        summary,
        attempts={"failed": failed, "used": used, "allowed": allowed},
        details=details,
    )


def _verb(status: str) -> str:
    return "stopped" if status == JobStatus.STOPPED else "failed"


def _replace(o: Observed, versions: Versions, folders: dict) -> Explanation:
    previous = max(o.replaced, key=lambda j: str(j.get("unique_job_name") or ""))
    old_name = str(previous.get("job_name"))
    version = versions.spec(old_name)
    if version is None:
        changes = _api_changes(previous, o.job)
        summary = (
            "changed since it was last submitted (from another machine, or before kaio recorded "
            "what it submitted in .kaio/): "
            + ("what the API shows of it" if changes else "its code, params or env")
        )
        return Explanation("replace", summary, tuple(changes), previous=old_name)
    changes = spec_changes(version.get("spec") or {}, o.job.described_spec())
    files = None
    if version.get("content_hash") != o.job.content_hash:
        recorded = versions.folder_files(str(version.get("content_hash")))
        files = _file_changes(recorded, o.job, folders)
    summary = "changed since it was last submitted"
    if not changes and files is None:
        summary += ": its name, cell or manifest"
    return Explanation("replace", summary, tuple(changes), files, previous=old_name)


def spec_changes(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """The fields that differ between two specs, in SPEC_KEYS order; env and params (and any
    mapping inside params) key by key."""
    keys = [k for k in SPEC_KEYS if k in before or k in after]
    keys += sorted((set(before) | set(after)) - set(keys))
    out: list[Change] = []
    for key in keys:
        _diff(key, before.get(key, _ABSENT), after.get(key, _ABSENT), out)
    return out


class _Absent:
    pass


_ABSENT = _Absent()


def _diff(path: str, before: Any, after: Any, out: list[Change]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in list(before) + [k for k in after if k not in before]:
            _diff(f"{path}.{key}", before.get(key, _ABSENT), after.get(key, _ABSENT), out)
    elif before is _ABSENT:
        out.append(Change(path, "added", after=after))
    elif after is _ABSENT:
        out.append(Change(path, "removed", before=before))
    elif _canonical(before) != _canonical(after):
        out.append(Change(path, "changed", before, after))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _api_changes(api_job: dict[str, Any], job: PlannedJob) -> list[Change]:
    out = []
    for key in _API_FIELDS:
        if key in api_job and _canonical(api_job[key]) != _canonical(job.spec.get(key)):
            out.append(Change(key, "changed", api_job[key], job.spec.get(key)))
    names = api_job.get("env_names")
    if isinstance(names, list):
        for name in sorted(set(job.env) - set(names)):
            out.append(Change(f"env.{name}", "added", after=job.env[name]))
        for name in sorted(set(names) - set(job.env)):
            out.append(Change(f"env.{name}", "removed", before="(value not recorded)"))
    return out


def _file_changes(recorded: dict[str, str] | None, job: PlannedJob, folders: dict) -> FileChanges:
    shown = _shown(job.directory)
    if recorded is None:
        return FileChanges(shown)
    key = (str(job.directory), job.package_exclude)
    if key not in folders:
        try:
            files = packaging.folder_files(job.directory, exclude=job.package_exclude)
            folders[key] = {f.path: f.digest[:DIGEST_CHARS] for f in files}
        except (OSError, ValueError):
            folders[key] = {}
    now = folders[key]
    return FileChanges(
        shown,
        added=tuple(sorted(set(now) - set(recorded))),
        removed=tuple(sorted(set(recorded) - set(now))),
        modified=tuple(sorted(p for p in set(now) & set(recorded) if now[p] != recorded[p])),
    )


def _shown(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else (rel if rel != "." else "./")


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
