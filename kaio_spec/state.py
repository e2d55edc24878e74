"""The local record of what `kaio apply` did: `.kaio/state.json` beside the manifest.

It is only a cache of what the API says. Identity is the job_name, and the executor always asks
the API (one GET /jobs) before submitting, so a missing, stale or unreadable state file never makes
it submit a job twice (a fresh clone on another machine has none). What the file adds:

- `intent`: written (and fsynced) BEFORE a job is presigned, and again with the unique_job_name and
  upload URL once the presign answers, so that a run killed between presign and upload is
  recovered on the next run (executor/recover.py): the job is looked up by job_name, and either its
  upload is sent again (idempotent on the server) or the never-uploaded job is stopped and
  submitted again as the same attempt.
- `unique_job_names`: every attempt this machine submitted, oldest first.
- `downloaded`: which attempt's outputs are on disk (each output folder also holds a marker, written
  last, so the folder itself says so too).

Writes are atomic (a temporary file in the same folder, fsync, os.replace, fsync of the folder):
a reader, or a run killed at any moment, finds the old file or the new one, never half of one.
The file is readable by its owner only: an upload URL is a (short-lived) credential.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = ["STATE_DIR", "STATE_FILE", "State", "StateLock", "state_path"]

STATE_DIR = ".kaio"
STATE_FILE = "state.json"
VERSION = 1


def state_path(manifest_file: str | os.PathLike) -> Path:
    """Where the state of the manifest at `manifest_file` lives: `.kaio/state.json` beside it
    for a `kaio.yaml`, `.kaio/state-<file name>.json` for any other (one per manifest, so that
    two manifests of one folder are applied at once without sharing a file)."""
    path = Path(manifest_file).resolve()
    name = STATE_FILE if path.name == "kaio.yaml" else f"state-{path.name}.json"
    return path.parent / STATE_DIR / name


class State:
    """The state file's contents, changed through methods that keep it consistent; thread-safe.

    Every change is in memory until `save()`; the executor saves after each change that recovery
    depends on (intents) and in batches otherwise."""

    def __init__(self, path: Path, data: dict[str, Any] | None = None, problem: str | None = None):
        self.path = Path(path)
        self.problem = problem  # why an existing file was ignored, if it was
        self._data = data if data is not None else {"version": VERSION, "jobs": {}}
        self._lock = threading.RLock()

    @classmethod
    def load(cls, path: str | os.PathLike) -> State:
        """The state at `path`; an empty one if there is none. A file that cannot be read as this
        version's state is ignored (it is only a cache) and `problem` says why."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        except OSError as e:
            return cls(path, problem=f"could not read {path}: {e}")
        try:
            data = json.loads(text)
        except ValueError as e:
            return cls(path, problem=f"{path} is not valid JSON ({e}); starting from the API")
        if not _valid(data):
            return cls(path, problem=f"{path} is not a version {VERSION} state; ignoring it")
        return cls(path, data)

    # ---- reading ------------------------------------------------------------------------------

    def job(self, job_name: str) -> dict[str, Any]:
        """A copy of one job's record ({} if none)."""
        with self._lock:
            return json.loads(json.dumps(self._data["jobs"].get(job_name, {})))

    def job_names(self) -> list[str]:
        with self._lock:
            return list(self._data["jobs"])

    def unique_job_names(self, job_name: str) -> list[str]:
        with self._lock:
            return list(self._data["jobs"].get(job_name, {}).get("unique_job_names", []))

    def intent(self, job_name: str) -> dict[str, Any] | None:
        with self._lock:
            intent = self._data["jobs"].get(job_name, {}).get("intent")
            return dict(intent) if intent else None

    def intents(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                name: dict(rec["intent"])
                for name, rec in self._data["jobs"].items()
                if rec.get("intent")
            }

    def downloaded(self, job_name: str) -> dict[str, str]:
        with self._lock:
            return dict(self._data["jobs"].get(job_name, {}).get("downloaded", {}))

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._data))

    # ---- changing -----------------------------------------------------------------------------

    def _record(self, job_name: str) -> dict[str, Any]:
        return self._data["jobs"].setdefault(job_name, {"unique_job_names": [], "downloaded": {}})

    def set_manifest(self, name: str, file: str) -> None:
        with self._lock:
            self._data["manifest"] = name
            self._data["file"] = file

    def set_intent(self, job_name: str, intent: dict[str, Any]) -> None:
        with self._lock:
            self._record(job_name)["intent"] = dict(intent)

    def update_intent(self, job_name: str, **changes: Any) -> None:
        with self._lock:
            rec = self._record(job_name)
            if rec.get("intent"):
                rec["intent"].update(changes)

    def clear_intent(self, job_name: str) -> None:
        with self._lock:
            self._record(job_name).pop("intent", None)

    def add_attempt(self, job_name: str, unique_job_name: str) -> None:
        with self._lock:
            uniques = self._record(job_name)["unique_job_names"]
            if unique_job_name not in uniques:
                uniques.append(unique_job_name)

    def mark_downloaded(self, job_name: str, unique_job_name: str, folder: str) -> None:
        with self._lock:
            self._record(job_name)["downloaded"][unique_job_name] = folder

    def save(self) -> None:
        """Write the file atomically (see the module's docstring)."""
        with self._lock:
            # Compact: json's C encoder takes no indent, and the pure-Python one made each save
            # of a 100-job sweep cost ~2 ms (saved three times per submission).
            text = json.dumps(self._data, sort_keys=True, separators=(",", ":")) + "\n"
            write_atomic(self.path, text)


def write_atomic(path: Path, text: str) -> None:
    """`text` into `path`, readable by its owner only: whole or not at all, even if the process
    is killed (a temporary file in the same folder, fsync, os.replace, fsync of the folder)."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    # The rename itself is durable only once the folder is synced (POSIX); not possible on Windows.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _valid(data: Any) -> bool:
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return False
    jobs = data.get("jobs")
    if not isinstance(jobs, dict):
        return False
    for rec in jobs.values():
        if not isinstance(rec, dict):
            return False
        if not isinstance(rec.setdefault("unique_job_names", []), list):
            return False
        if not isinstance(rec.setdefault("downloaded", {}), dict):
            return False
        if rec.get("intent") is not None and not isinstance(rec["intent"], dict):
            return False
    return True


class StateLock:
    """An exclusive lock on a manifest's state file for the length of one apply, so two applies
    of one manifest on one machine do not interleave their submissions (other manifests of the
    folder have state files and locks of their own). Held with flock, which the kernel releases
    when the process dies (SIGKILL included): a killed run never leaves it stuck. The holder
    writes its pid into it (`holder()`). Where flock does not exist (Windows), it is a no-op."""

    def __init__(self, state_file: Path):
        state_file = Path(state_file)
        self.path = state_file.with_name(state_file.stem + ".lock")
        self._fd: int | None = None

    def holder(self) -> str | None:
        """What the holder wrote: its pid (None if unreadable)."""
        try:
            return self.path.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def acquire(self) -> bool:
        """True if taken; False if another process holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
