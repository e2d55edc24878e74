"""A job's inputs (`inputs:` in a manifest, docs/inputs.md): what files each holds, by content.

A local input (a file or a folder) is read into a Dataset: each regular file's path inside the
input (a file input is one file named as on disk) and SHA-256, hashed once per process for an
unchanged file. An `s3://bucket/prefix` input is listed with boto3: its files' identity is their
ETag, and their bytes are fetched (once per ETag, into a local cache) only when a job is submitted.
A Dataset's `digest` is part of the identity of the jobs that read it: changed data, new jobs.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
from dataclasses import dataclass

from kaio_spec.errors import InvalidInput

NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")  # a folder and KAIO_INPUT_<NAME>: as the server checks
NAME_RULE = "lower-case letters, digits and '_', starting with a letter (at most 63)"
S3 = "s3://"
_READ = 1024 * 1024


@dataclass(frozen=True)
class InputFile:
    """One file of an input: `path` inside it (POSIX), its bytes' `sha256` (None for an S3 object
    not fetched yet), `size`, and where it comes from: a local file, or an S3 key with its ETag."""

    path: str
    size: int
    sha256: str | None
    local: str | None = None
    s3_key: str | None = None
    etag: str | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str  # the folder or file (absolute), or the s3:// URI
    files: tuple[InputFile, ...]

    @functools.cached_property  # asked once per job of a plan that reads it
    def digest(self) -> str:
        """Its content, as the jobs' identity holds it: paths with SHA-256s (S3: ETags)."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(f"{f.path}\0{f.sha256 or 'etag:' + str(f.etag)}\n".encode())
        return h.hexdigest()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def is_s3(self) -> bool:
        return self.source.startswith(S3)


def read(name: str, source: str, base: str) -> Dataset:
    """The input `name` as written (`source`, relative to the manifest's folder `base`).
    InvalidInput (a message for the manifest's field) when it cannot be read."""
    if source.startswith(S3):
        from kaio_spec import s3inputs  # boto3: only for manifests with S3 inputs

        return Dataset(name, source, s3inputs.list_files(source))
    path = os.path.normpath(os.path.join(base, os.path.expanduser(source)))
    if not os.path.exists(path):
        raise InvalidInput(f"{source!r} does not exist ({path})")
    try:
        return Dataset(name, path, tuple(_local_files(path)))
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror or e}") from None


def _local_files(path: str) -> list[InputFile]:
    if os.path.isfile(path):
        return [_local_file(os.path.basename(path), path)]
    found = []
    for folder, dirs, names in os.walk(path):  # links not followed: what is inside, only
        dirs.sort()
        for n in sorted(names):
            full = os.path.join(folder, n)
            if os.path.isfile(full) and not os.path.islink(full):
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                found.append(_local_file(rel, full))
    found.sort(key=lambda f: f.path)
    return found


def _local_file(rel: str, full: str) -> InputFile:
    st = os.stat(full)
    return InputFile(rel, st.st_size, file_sha256(full, st), local=full)


_hashed: dict[tuple, str] = {}  # (path, size, mtime, inode) -> sha256: each file read once
_hashed_lock = threading.Lock()


def file_sha256(path: str, st: os.stat_result | None = None) -> str:
    st = st or os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
    with _hashed_lock:
        if key in _hashed:
            return _hashed[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_READ):
            h.update(chunk)
    with _hashed_lock:
        _hashed[key] = h.hexdigest()
    return _hashed[key]


def local_copy(dataset: Dataset, f: InputFile) -> tuple[str, str]:
    """(a local path holding the file's bytes, their SHA-256): an S3 object is fetched first."""
    if f.local is not None:
        return f.local, f.sha256 or file_sha256(f.local)
    from kaio_spec import s3inputs

    path = s3inputs.fetch(dataset.source, f)
    return path, file_sha256(path)


def check_name(name: str) -> str | None:
    """What is wrong with an input's name, or None."""
    return None if NAME.fullmatch(name) else f"{name!r} is not an input name: use {NAME_RULE}"
