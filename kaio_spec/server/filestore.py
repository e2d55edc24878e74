"""Input files of jobs (`inputs:` in a manifest), stored once per content and tenant.

`<data dir>/files/<user id>/<sha256[:2]>/<sha256>` holds one file whose content has that SHA-256,
read-only. A job's inputs (docs/inputs.md) are assembled from it by hard links, without copying,
into `<job folder>/inputs/<name>/<path>`, a folder the job's processes may only read (runner.py
adds it to what they read, and links `inputs/<name>` in each working folder to it).

Per tenant, never shared: a tenant who knows the SHA-256 of another's file still has to upload
the bytes (their own copy), and nothing here ever serves a stored file back over the API.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
from pathlib import Path, PurePosixPath

from kaio_spec import validation

FILES = "files"
INPUTS = "inputs"  # in a job's folder, and in each of its working folders
MAX_INPUTS = 32  # named inputs per job
MAX_INPUT_FILES = 100_000  # files over all of a job's inputs
MAX_PATH_CHARS = 1024
MAX_PART_CHARS = 255
# An input's name becomes a folder and an environment variable (KAIO_INPUT_<NAME>).
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_UNIQUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,200}")  # a unique_job_name's letters


class InputsError(ValueError):
    """A presign's `inputs` that no job may have (the message names the field)."""


class MissingFiles(InputsError):
    """Files the tenant has not uploaded (409: upload them first)."""


class FileStore:
    """One tenant's files: `path(sha)`, `missing(shas)`, `temp()` then `commit(tmp, sha)`."""

    def __init__(self, data_dir: Path, user_id: str):
        if not re.fullmatch(r"[A-Za-z0-9_-]+", user_id):  # ids are the store's own: never a path
            raise ValueError(f"unexpected user id {user_id!r}")
        self.root = data_dir / FILES / user_id

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def missing(self, hashes: list[str]) -> list[str]:
        return [h for h in dict.fromkeys(hashes) if not self.has(h)]

    def temp(self) -> Path:
        tmp = self.root / ".tmp"
        tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        return tmp / f"{os.getpid()}-{time.monotonic_ns()}"

    def commit(self, tmp: Path, sha256: str) -> None:
        """Move a received file into place, read-only: whole or not at all."""
        os.chmod(tmp, 0o444)
        dest = self.path(sha256)
        dest.parent.mkdir(exist_ok=True, mode=0o700)
        os.replace(tmp, dest)


def remove_partial(data_dir: Path) -> None:
    """The temp files of uploads a stopped server cut short."""
    root = data_dir / FILES
    if root.is_dir():
        for tmp in root.glob("*/.tmp"):
            remove(tmp)  # assembled inputs hold read-only folders


# ---- a presign's inputs -------------------------------------------------------------------------


def parse_inputs(body: dict) -> dict[str, dict[str, str]] | None:
    """The optional `inputs` of a presign: {name: {relative path: sha256}}; InputsError when a
    name, path or hash is one no job may have."""
    value = body.get("inputs")
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_INPUTS:
        raise InputsError(f"inputs: must be an object of at most {MAX_INPUTS} named inputs")
    total = 0
    for name, files in value.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InputsError(
                f"inputs: {name!r} is not an input name (lower-case letters, digits and '_', "
                "starting with a letter, at most 63)"
            )
        if not isinstance(files, dict):
            raise InputsError(f"inputs.{name}: must be an object of path -> sha256")
        total += len(files)
        for path, sha in files.items():
            _check_path(f"inputs.{name}", path)
            if not validation.is_sha256(sha):
                raise InputsError(f"inputs.{name}[{path!r}]: must be 64 lower-case hex digits")
    if total > MAX_INPUT_FILES:
        raise InputsError(f"inputs: {total} files; at most {MAX_INPUT_FILES}")
    _check_no_file_over_folder(value)
    return value


def _check_path(field: str, path: object) -> None:
    where = f"{field}[{path!r}]"
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS:
        raise InputsError(f"{where}: a path of 1 to {MAX_PATH_CHARS} characters is required")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InputsError(f"{where}: must be relative, without '.', '..' or empty parts")
    if any(len(p) > MAX_PART_CHARS for p in parts) or any(ord(c) < 32 for c in path):
        raise InputsError(f"{where}: a part is too long or holds a control character")


def _check_no_file_over_folder(inputs: dict[str, dict[str, str]]) -> None:
    for name, files in inputs.items():
        folders = {str(p) for path in files for p in PurePosixPath(path).parents}
        clash = sorted(folders & set(files))
        if clash:
            raise InputsError(f"inputs.{name}[{clash[0]!r}]: is both a file and a folder")


def assemble(store: FileStore, inputs: dict[str, dict[str, str]]) -> Path:
    """A job's inputs folder made from the tenant's files by hard links, in a temp folder of the
    store (seal() then place() move it into the job's folder): MissingFiles when the tenant lacks one."""
    lacking = store.missing([sha for files in inputs.values() for sha in files.values()])
    if lacking:
        raise MissingFiles(
            f"inputs: {len(lacking)} file(s) are not on the platform (first: {lacking[0]}); "
            "upload them with PUT /files/<sha256> first"
        )
    tmp = store.temp()
    try:
        for name, files in inputs.items():
            (tmp / name).mkdir(parents=True)
            for path, sha in files.items():
                target = tmp / name / path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(store.path(sha), target)
    except BaseException:
        remove(tmp)
        raise
    return tmp


def parse_needs(body: dict, inputs: dict | None) -> dict[str, str] | None:
    """The optional `needs` of a presign: {path under inputs/: unique_job_name of a completed
    job of the caller's}, whose outputs are linked there (docs/inputs.md, "needs-links")."""
    value = body.get("needs")
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_INPUT_FILES:
        raise InputsError("needs: must be an object of path -> unique_job_name")
    for path, unique in value.items():
        _check_path("needs", path)
        top = path.split("/")[0]
        if inputs and top in inputs:
            raise InputsError(f"needs[{path!r}]: {top!r} is also one of the job's inputs")
        if not isinstance(unique, str) or not _UNIQUE.fullmatch(unique):
            raise InputsError(f"needs[{path!r}]: must be a unique_job_name")
    _check_no_file_over_folder({"needs": dict.fromkeys(value, "")})
    return value


def link_outputs(outputs: Path, dest: Path) -> None:
    """Hard links in `dest` to each regular file under a needed job's `outputs` (none followed
    through a link): its outputs, read-only to the job that needs them, never copied."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder, dirs, files in os.walk(outputs):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        rel = os.path.relpath(folder, outputs)
        for name in files:
            source = os.path.join(folder, name)
            if stat.S_ISREG(os.lstat(source).st_mode):
                target = dest / rel / name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)


def place(tmp: Path, job_root: Path) -> None:
    """Move an assembled inputs folder into the job's folder, whole."""
    job_root.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, job_root / INPUTS)


def seal(root: Path) -> None:
    """Make an assembled inputs folder's folders read-only (its files are already)."""
    for folder, _dirs, _files in os.walk(root):
        os.chmod(folder, 0o555)


def remove(folder: Path) -> None:
    """Remove an inputs folder, whose folders are read-only."""
    for sub, _dirs, _files in os.walk(folder):
        os.chmod(sub, stat.S_IRWXU)
    shutil.rmtree(folder, ignore_errors=True)


# ---- what a job's processes see (runner.py) -----------------------------------------------------


def mount(job_root: Path, pkg: Path) -> dict[str, str]:
    """Link `inputs/<name>` in the job's package (its working folder to be) to each of its
    inputs, and answer their environment variables (KAIO_INPUT_<NAME>: the folder). {} for a job
    without inputs."""
    inputs = job_root / INPUTS
    if not inputs.is_dir():
        return {}
    env = {}
    for entry in sorted(inputs.iterdir()):
        link = pkg / INPUTS / entry.name
        link.parent.mkdir(exist_ok=True)
        if os.path.lexists(link):
            raise InputsError(
                f"inputs: the package has {INPUTS}/{entry.name} and the job has an input of "
                "that name; rename one"
            )
        os.symlink(entry, link)
        if _NAME.fullmatch(entry.name):  # not a needed job's key with a '-'
            env[f"KAIO_INPUT_{entry.name.upper()}"] = str(entry)
    return env


def readable(job_root: Path) -> list[Path]:
    """The folder a job's processes may read, and not write, for its inputs ([] without)."""
    inputs = job_root / INPUTS
    return [inputs] if inputs.is_dir() else []
