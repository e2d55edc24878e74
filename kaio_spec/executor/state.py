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

Two files, so that a write costs what changed, not what the sweep holds: the snapshot
(`state.json`) and a journal beside it (`state.journal`, JSON lines). `commit()` appends the
changes made since the last one to the journal and fsyncs it (the executor commits before each
presign and after each answer); `save()` compacts: the whole state into the snapshot, then the
journal removed. apply compacts when it opens the state (holding its lock) and on a clean exit.

The snapshot is written atomically (a temporary file in the same folder, fsync, os.replace,
fsync of the folder): a reader, or a run killed at any moment, finds the old file or the new one,
never half of one. A run killed while appending leaves at most a torn last journal line, which
`load` ignores (that change was never committed). Each snapshot has a generation and the journal
starts with the generation it extends: a run killed during compaction, after the new snapshot
but before the journal's removal, leaves a journal of an older generation, which `load` ignores
(its changes are in the snapshot). Both files are readable by their owner only: an upload URL is
a (short-lived) credential.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from kaio_spec.files import fsync_dir, write_atomic

__all__ = ["STATE_DIR", "STATE_FILE", "State", "StateLock", "journal_path", "state_path"]

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


def journal_path(state_file: str | os.PathLike) -> Path:
    """The journal beside a state file: `state.journal` for `state.json`."""
    state_file = Path(state_file)
    return state_file.with_name(state_file.stem + ".journal")


class State:
    """The state's contents, changed through methods that keep it consistent; thread-safe.

    Every change is in memory until `commit()` (appended to the journal, fsynced) or `save()`
    (the whole state into the snapshot); the executor commits after each change that recovery
    depends on (intents) and in batches otherwise."""

    def __init__(self, path: Path, data: dict[str, Any] | None = None, problem: str | None = None):
        self.path = Path(path)
        self.journal = journal_path(self.path)
        self.problem = problem  # why an existing file was ignored, if it was
        self._data: dict[str, Any] = data if data is not None else {"version": VERSION, "jobs": {}}
        self._lock = threading.RLock()  # the data
        self._io_lock = threading.Lock()  # the files: one writer at a time, in order
        self._pending: list[dict[str, Any]] = []  # changes not committed yet
        self._journal_fd: int | None = None
        self.replayed = 0  # journal lines applied by load (compaction is due when > 0)

    @classmethod
    def load(cls, path: str | os.PathLike) -> State:
        """The state at `path`, its journal replayed; an empty one if there is none. A file that
        cannot be read as this version's state is ignored (it is only a cache) and `problem`
        says why."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = None
        except OSError as e:
            return cls(path, problem=f"could not read {path}: {e}")
        data = None
        if text is not None:
            try:
                data = json.loads(text)
            except ValueError as e:
                return cls(path, problem=f"{path} is not valid JSON ({e}); starting from the API")
            if not _valid(data):
                return cls(path, problem=f"{path} is not a version {VERSION} state; ignoring it")
        state = cls(path, data)
        state._replay()
        return state

    def _replay(self) -> None:
        """Apply the journal's changes, if it extends this snapshot's generation, up to the
        first line that is not a whole change (a run killed while appending)."""
        try:
            lines = self.journal.read_bytes().split(b"\n")
        except OSError:
            return
        try:
            head = json.loads(lines[0])
        except ValueError:
            return
        if not isinstance(head, dict) or head.get("generation") != self._generation():
            return  # an older generation: compacted into the snapshot already
        for line in lines[1:]:
            try:
                change = json.loads(line)
                _apply(self._data, change)
            except (ValueError, KeyError, TypeError, AttributeError):
                return
            self.replayed += 1

    def _generation(self) -> int:
        generation = self._data.get("generation", 0)
        return generation if isinstance(generation, int) else 0

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

    def _change(self, change: dict[str, Any]) -> None:
        """Apply one change and keep it for the next commit (the lock held)."""
        _apply(self._data, change)
        self._pending.append(change)

    def set_manifest(self, name: str, file: str) -> None:
        with self._lock:
            self._change({"op": "manifest", "name": name, "file": file})

    def set_intent(self, job_name: str, intent: dict[str, Any]) -> None:
        with self._lock:
            self._change({"op": "intent", "job": job_name, "intent": dict(intent)})

    def update_intent(self, job_name: str, **changes: Any) -> None:
        with self._lock:
            self._change({"op": "update_intent", "job": job_name, "changes": changes})

    def clear_intent(self, job_name: str) -> None:
        with self._lock:
            self._change({"op": "clear_intent", "job": job_name})

    def add_attempt(self, job_name: str, unique_job_name: str) -> None:
        with self._lock:
            self._change({"op": "attempt", "job": job_name, "unique": unique_job_name})

    def mark_downloaded(self, job_name: str, unique_job_name: str, folder: str) -> None:
        with self._lock:
            change = {"op": "downloaded", "job": job_name, "unique": unique_job_name}
            self._change({**change, "folder": folder})

    def commit(self) -> None:
        """Make the changes since the last commit durable: appended to the journal, fsynced.
        Costs what changed. Returns once they are on disk, whichever thread wrote them."""
        with self._io_lock:
            with self._lock:
                pending, self._pending = self._pending, []
                generation = self._generation()
            if not pending:
                return
            text = "".join(json.dumps(c, separators=(",", ":")) + "\n" for c in pending)
            fd = self._open_journal(generation)
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)

    def _open_journal(self, generation: int) -> int:
        """The journal, opened for appending (the io lock held); started with its generation
        (and made durable in its folder) when there was none."""
        if self._journal_fd is None:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            fd = os.open(self.journal, flags, 0o600)
            if os.fstat(fd).st_size and not self._extends(generation):
                os.ftruncate(fd, 0)  # another generation's, folded in already: start anew
            if os.fstat(fd).st_size == 0:
                os.write(fd, json.dumps({"generation": generation}).encode() + b"\n")
                os.fsync(fd)
                fsync_dir(self.journal.parent)
            self._journal_fd = fd
        return self._journal_fd

    def _extends(self, generation: int) -> bool:
        """Whether the journal on disk extends this generation."""
        try:
            with open(self.journal, "rb") as f:
                head = json.loads(f.readline())
        except (OSError, ValueError):
            return False
        return isinstance(head, dict) and head.get("generation") == generation

    def save(self) -> None:
        """Compact: the whole state into the snapshot, atomically (see the module's docstring),
        as the next generation; then the journal, now folded in, removed. Only the holder of
        the StateLock may save."""
        with self._io_lock:
            with self._lock:
                self._data["generation"] = self._generation() + 1
                self._pending = []
                # Compact: json's C encoder takes no indent.
                text = json.dumps(self._data, sort_keys=True, separators=(",", ":")) + "\n"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, text)
            self._close_journal()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.journal)
                fsync_dir(self.journal.parent)

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

    def close(self) -> None:
        """Let go of the journal's file (the changes committed stay in it)."""
        with self._io_lock:
            self._close_journal()


def _record(data: dict[str, Any], job_name: str) -> dict[str, Any]:
    return data["jobs"].setdefault(job_name, {"unique_job_names": [], "downloaded": {}})


def _apply(data: dict[str, Any], change: dict[str, Any]) -> None:
    """One change (a journal line) applied to the state's data. Applying a journal's changes
    again in order, over a state that has them, gives the same state."""
    op = change["op"]
    if op == "manifest":
        data["manifest"], data["file"] = change["name"], change["file"]
        return
    rec = _record(data, change["job"])
    if op == "intent":
        rec["intent"] = dict(change["intent"])
    elif op == "update_intent":
        if rec.get("intent"):
            rec["intent"].update(change["changes"])
    elif op == "clear_intent":
        rec.pop("intent", None)
    elif op == "attempt":
        if change["unique"] not in rec["unique_job_names"]:
            rec["unique_job_names"].append(change["unique"])
    elif op == "downloaded":
        rec["downloaded"][change["unique"]] = change["folder"]
    else:
        raise KeyError(op)


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
