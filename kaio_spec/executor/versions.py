"""What each job was last submitted with, for `kaio plan` to say what changed when it is replaced
(explain.py): `.kaio/<state file's stem>.versions.json` beside the state file.

    versions = Versions.for_state(state_path)
    versions.record(job, files={"train.py": "a1b2..."}, older=["sweep-train-0-0a1b2c3d"])
    versions.save()                                   # once, at the end of a run
    versions.spec("sweep-train-0-0a1b2c3d")           # {"spec": {...}, "content_hash": "..."}

Kept apart from state.json, which is written several times per submission: this file is only
for explanations, so it is written once per run (a run killed before that leaves the previous
one; a plan then compares with what the API shows). It holds each job's newest version only
and, once per folder content hash that a version names, the folder's files with a short digest
of their bytes, so a 1,000-cell sweep of one folder stores its file list once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kaio_spec.files import write_atomic

__all__ = ["DIGEST_CHARS", "Versions"]

DIGEST_CHARS = 16  # of a file's sha256: enough to tell a changed file, small on disk


class Versions:
    """The versions file's contents; `record` and `save` from the apply loop's thread only."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._jobs: dict[str, dict[str, Any]] | None = None
        self._folders: dict[str, dict[str, str]] = {}
        self._changed = False

    @classmethod
    def for_state(cls, state_file: Path) -> Versions:
        state_file = Path(state_file)
        return cls(state_file.with_name(state_file.stem + ".versions.json"))

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._jobs is None:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}  # none yet, or unreadable: only explanations depend on it
            jobs, folders = data.get("jobs"), data.get("folders")
            self._jobs = jobs if isinstance(jobs, dict) else {}
            self._folders = folders if isinstance(folders, dict) else {}
        return self._jobs

    def spec(self, job_name: str) -> dict[str, Any] | None:
        """{"spec", "content_hash"} that `job_name` was last submitted with, if recorded."""
        version = self._load().get(job_name)
        return version if isinstance(version, dict) else None

    def folder_files(self, content_hash: str) -> dict[str, str] | None:
        """The files of a recorded folder version: path → short digest."""
        self._load()
        files = self._folders.get(content_hash)
        return files if isinstance(files, dict) else None

    def record(
        self,
        job_name: str,
        spec: dict[str, Any],
        content_hash: str,
        files: dict[str, str] | None,
        older: Sequence[str] = (),
    ) -> None:
        """`job_name` was submitted with `spec` from a folder of `content_hash` (its `files`,
        when not recorded yet); `older` job_names (earlier versions of the job) are forgotten."""
        jobs = self._load()
        for name in older:
            jobs.pop(name, None)
        jobs[job_name] = {"spec": spec, "content_hash": content_hash}
        if files is not None:
            self._folders[content_hash] = files
        self._changed = True

    def save(self) -> None:
        """Write the file (if anything was recorded), with only the folders a version names."""
        if not self._changed:
            return
        jobs = self._load()
        named = {v.get("content_hash") for v in jobs.values() if isinstance(v, dict)}
        folders = {h: f for h, f in self._folders.items() if h in named}
        text = json.dumps({"version": 1, "jobs": jobs, "folders": folders}, default=str)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, text + "\n")
        self._changed = False
