"""An ended job's outputs into a folder: whole or not at all, and never over something else.

    result = download(client, "20261128-142233123-demo-train-ab12cd", Path("outputs/train"))

The rules (`kaio download` and `kaio apply` share them):

- The files go to a hidden sibling folder first (`.<dest>.kaio-partial-<pid>-<random>`), and a
  marker, `DEST/.kaio-download.json` (the job, its status and the files), is written there last;
  then the folder is renamed into place. A run killed half-way leaves a hidden partial folder (a
  later download removes it once its process is gone), never a half-filled DEST.
- A DEST whose marker names the same job, with every listed file present, is complete:
  downloading again does nothing ("already").
- A DEST that exists and is not empty otherwise (another job's outputs, an older attempt's, or
  files kaio did not write) is left alone ("conflict") unless `force=True`, which replaces it
  whole: the new folder is renamed in, then the old one removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kaio_spec import catalog

__all__ = [
    "MARKER",
    "PRUNED",
    "DownloadResult",
    "download",
    "download_planned",
    "ignore_in_git",
    "is_complete",
    "move_to_pruned",
    "read_marker",
    "stale_outputs",
]

MARKER = ".kaio-download.json"
_PARTIAL = ".kaio-partial-"
_OLD = ".kaio-old-"


@dataclass(frozen=True)
class DownloadResult:
    """What happened to one job's outputs.

    outcome: "downloaded" (now on disk), "already" (a complete earlier download of the same job
    was there), "conflict" (DEST holds something else: left alone), "not_ended" (the job is still
    running). `files`: the relative paths in DEST (outputs and logs), for downloaded and already.
    `message`: one line for people."""

    unique_job_name: str
    dest: Path
    outcome: str
    files: list[str] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("downloaded", "already")

    def to_json(self) -> dict[str, Any]:
        return {
            "unique_job_name": self.unique_job_name,
            "dest": str(self.dest),
            "outcome": self.outcome,
            "files": list(self.files),
            "message": self.message,
        }


def read_marker(dest: str | os.PathLike) -> dict[str, Any] | None:
    """DEST's marker, or None if it has none (or an unreadable one)."""
    try:  # os.path, not pathlib: `kaio status` reads one per job of a 10,000-cell sweep
        with open(os.path.join(dest, MARKER), encoding="utf-8") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(dest: str | os.PathLike, unique_job_name: str | None) -> bool:
    """Whether DEST holds a complete download of `unique_job_name`."""
    marker = read_marker(dest)
    if not marker or marker.get("unique_job_name") != unique_job_name:
        return False
    files = marker.get("files")
    if not isinstance(files, list):
        return False
    root = os.fspath(dest)  # os.path, not pathlib: `kaio results` checks a thousand folders
    return all(isinstance(f, str) and os.path.isfile(os.path.join(root, f)) for f in files)


def _occupied(dest: Path) -> bool:
    if dest.is_symlink() or dest.is_file():
        return True
    if not dest.is_dir():
        return False
    return any(dest.iterdir())


def _describe(dest: Path) -> str:
    marker = read_marker(dest)
    if marker and marker.get("unique_job_name"):
        return f"the outputs of {marker['unique_job_name']}"
    if not dest.is_dir() or dest.is_symlink():
        return "something that is not a folder"
    return "files kaio did not download"


def _sweep_partials(dest: Path) -> None:
    """Remove hidden partial and old folders of DEST left by processes that are gone."""
    prefix = f".{dest.name}"
    with contextlib.suppress(OSError):
        for entry in dest.parent.iterdir():
            name = entry.name
            if not name.startswith(prefix + _PARTIAL) and not name.startswith(prefix + _OLD):
                continue
            rest = name.split(_PARTIAL if _PARTIAL in name else _OLD, 1)[1]
            pid = rest.split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def download(client, unique_job_name: str, dest: str | os.PathLike, *, force: bool = False):
    """Download the ended job `unique_job_name`'s outputs and logs into `dest` by the rules in
    this module's docstring. Returns a DownloadResult; raises what Client.download_output raises
    for anything else (HTTPError 404 for an unknown job, PlatformError...)."""
    dest = Path(dest)
    if not force and is_complete(dest, unique_job_name):
        files = list((read_marker(dest) or {}).get("files") or [])
        return DownloadResult(
            unique_job_name, dest, "already", files, f"already downloaded in {dest}"
        )
    if not force and _occupied(dest):
        return DownloadResult(
            unique_job_name,
            dest,
            "conflict",
            message=(
                f"{dest} already holds {_describe(dest)}; left alone: move it away, choose "
                "another --dest, or pass --force to replace it"
            ),
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    _sweep_partials(dest)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    partial = dest.parent / f".{dest.name}{_PARTIAL}{tag}"
    try:
        try:
            written = client.download_output(unique_job_name, partial)
        except RuntimeError as e:  # the job has not ended: the client says so
            return DownloadResult(unique_job_name, dest, "not_ended", message=str(e))
        files = sorted(p.relative_to(partial).as_posix() for p in written)
        job = client.get_job(unique_job_name)
        marker = {
            "unique_job_name": unique_job_name,
            "job_name": job.get("job_name"),
            "status": catalog.normalize_status(str(job.get("status"))),
            # for `kaio results` offline: how long it ran, without asking the API again
            "start_time": job.get("start_time"),
            "end_time": job.get("end_time"),
            "files": files,
            "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        _write_marker(partial, marker)
        _move_into_place(partial, dest, tag)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    note = f"{len(files)} file{'s' if len(files) != 1 else ''} in {dest}"
    if not files and job.get("data_deleted"):
        note += " (its data was deleted after the retention period)"
    return DownloadResult(unique_job_name, dest, "downloaded", files, note)


def download_planned(client, job, unique_job_name: str) -> DownloadResult:
    """`download()` of a planned job's attempt into its `outputs` folder, the way apply does it:
    the folder is this job's, so an earlier attempt's download, or an older version's (same key
    and name), is replaced; files kaio did not download are left alone."""
    from kaio_spec.executor.observe import same_key_and_name

    marker = read_marker(job.outputs) or {}
    force = same_key_and_name(job, str(marker.get("job_name") or ""))
    return download(client, unique_job_name, job.outputs, force=force)


def _write_marker(folder: Path, marker: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MARKER
    with open(path, "w", encoding="utf-8") as f:
        json.dump(marker, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _move_into_place(partial: Path, dest: Path, tag: str) -> None:
    old = None
    if dest.is_symlink() or dest.exists():
        if dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir()):
            dest.rmdir()
        else:
            old = dest.parent / f".{dest.name}{_OLD}{tag}"
            os.replace(dest, old)
    os.replace(partial, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


# ---- what a sweep leaves in the repository -------------------------------------------------

PRUNED = ".pruned"
GITIGNORE = "# Written by kaio: outputs and state are not source; nothing here goes to git.\n*\n"


def ignore_in_git(folder: str | os.PathLike) -> bool:
    """Write `folder/.gitignore` ignoring everything in it (as pytest does for its cache), unless
    a .gitignore is there already (the user's wins). Whether one was written."""
    path = Path(folder) / ".gitignore"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(GITIGNORE)
    return True


def stale_outputs(planned: list[Path], job_name_prefix: str) -> list[Path]:
    """Downloaded outputs folders beside the planned ones (in the same parent folders) that
    hold a job of this manifest (their marker's job_name starts with `job_name_prefix`) but no
    planned job's: the outputs of cells the manifest no longer defines."""
    # Each parent resolved once (10,000 cells share one), and compared as strings (hashing a
    # Path costs ten times more): an entry is wanted by its name in its resolved parent.
    parents = {parent: parent.resolve() for parent in {p.parent for p in planned}}
    wanted = {os.path.join(parents[p.parent], p.name) for p in planned}
    stale = []
    for parent in sorted(set(parents.values())):
        try:
            entries = sorted(parent.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or str(entry) in wanted or not entry.is_dir():
                continue
            if entry.is_symlink():
                continue
            job_name = (read_marker(entry) or {}).get("job_name")
            if isinstance(job_name, str) and job_name.startswith(job_name_prefix):
                stale.append(entry)
    return stale


def move_to_pruned(folder: Path) -> Path:
    """Move `folder` into `.pruned/` beside it (never deleted: a rename, in one step), under a
    new name if that one is taken. Returns where it went."""
    pruned = folder.parent / PRUNED
    pruned.mkdir(exist_ok=True)
    dest = pruned / folder.name
    n = 1
    while dest.exists():
        n += 1
        dest = pruned / f"{folder.name}.{n}"
    os.rename(folder, dest)
    return dest
