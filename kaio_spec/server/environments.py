"""The Python a job runs with: the server's own when its requirements are already satisfied there,
else a virtual environment cached by the requirements' content.

The cached environments see the server's own site-packages (a .pth file; `--system-site-packages`
alone would only reach the base interpreter's when the server itself runs in a venv), so pip
installs only what is missing and a typical job's requirements (the seed's automatic nbconvert,
psutil, GPUtil) cost nothing.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import re
import shutil
import site
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from packaging.markers import UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement

_EDITABLE = re.compile(r"^(-e|--editable)\s+")
READY = ".kaio-ready"  # written last: an environment without it is a killed build, rebuilt


class SetupFailed(Exception):
    """Installing requirements failed; the message carries pip's own words."""


class SetupInterrupted(Exception):
    """The job was stopped (or ran out of time) while its environment was being made."""


def requirement_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _satisfied(req: Requirement, extras_of: str | None = None) -> bool:
    env = {"extra": extras_of} if extras_of else None
    try:
        if req.marker and not req.marker.evaluate(env):
            return True  # not for this platform
    except UndefinedEnvironmentName:
        return False
    if req.url:
        return False
    try:
        dist = importlib.metadata.distribution(req.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    if not req.specifier.contains(dist.version, prereleases=True):
        return False
    for extra in req.extras:
        for dep_text in dist.requires or []:
            try:
                dep = Requirement(dep_text)
            except InvalidRequirement:
                return False
            if dep.marker and "extra" in str(dep.marker) and not _satisfied(dep, extra):
                return False
    return True


def _site_state() -> tuple:
    """Changes whenever a distribution is installed or removed in the server's environment."""
    state: list[int | None] = []
    for entry in sys.path:
        try:
            state.append(os.stat(entry or ".").st_mtime_ns)
        except OSError:
            state.append(None)
    return tuple(state)


_checked: dict[tuple[str, tuple], list[str]] = {}
_checked_lock = threading.Lock()


def unsatisfied(text: str) -> list[str]:
    """The requirement lines the server's own environment does not satisfy. Options (-r, -e,
    --index-url...), URLs and paths count as unsatisfied: only pip can tell what they mean.

    Remembered per requirements text until the environment changes: reading distributions'
    metadata is the costliest step of starting a trivial job."""
    key = (text, _site_state())
    with _checked_lock:
        if key in _checked:
            return list(_checked[key])
    missing = _unsatisfied(text)
    with _checked_lock:
        if len(_checked) > 256:
            _checked.clear()
        _checked[key] = missing
    return list(missing)


def _unsatisfied(text: str) -> list[str]:
    missing = []
    for line in requirement_lines(text):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            missing.append(line)
            continue
        if not _satisfied(req):
            missing.append(line)
    return missing


def environment_key(text: str) -> str:
    """Cache key: the requirements as written, and the interpreter they are installed for."""
    h = hashlib.sha256()
    h.update(f"{sys.version}\n{sys.executable}\n".encode())
    h.update("\n".join(requirement_lines(text)).encode())
    return h.hexdigest()[:20]


def is_cacheable(text: str) -> bool:
    """Relative paths point into one package: the same line means other files in another one."""
    lines = (_EDITABLE.sub("", line) for line in requirement_lines(text))
    return not any(line.startswith(".") for line in lines)


def venv_python(env: Path) -> Path:
    return env / "bin" / "python"


def _link_server_site_packages(env: Path) -> None:
    if sys.prefix == sys.base_prefix:
        return  # --system-site-packages already reaches the server's own packages
    lib = next((env / "lib").glob("python*/site-packages"))
    paths = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (lib / "_kaio_server_site.pth").write_text("\n".join(paths) + "\n")


# How set-up starts a process: start(writable, **Popen's arguments). The platform confines
# what pip runs (a package's build backend is the tenant's code) to writing beneath `writable`
# (sandbox.py); without a sandbox it is subprocess.Popen.
StartProcess = Callable[..., subprocess.Popen]


def popen(writable: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(**kwargs)


def _run_logged(
    cmd: list[str],
    cwd: Path,
    log: Callable[[str], None],
    should_stop: Callable[[], bool],
    start: StartProcess,
    writable: Path,
) -> tuple[int, list[str]]:
    """Run cmd in its own process group, streaming its output to `log`; (exit code, last lines).
    Kills it (the whole group) as soon as should_stop() says so."""
    proc = start(
        writable,
        args=cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
        errors="replace",
    )
    last: collections.deque[str] = collections.deque(maxlen=30)

    def pump():
        assert proc.stdout is not None
        for line in proc.stdout:
            last.append(line.rstrip("\n"))
            log(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    while proc.poll() is None:
        if should_stop():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()
            reader.join(5)
            raise SetupInterrupted()
        time.sleep(0.05)
    reader.join(5)
    return proc.returncode, list(last)


def _pip_error(lines: list[str]) -> str:
    errors = [line for line in lines if line.startswith("ERROR")]
    return "\n".join(errors or lines[-10:])


def prepare(
    package: Path,
    envs_dir: Path,
    log: Callable[[str], None],
    should_stop: Callable[[], bool],
    scratch: Path,
    start: StartProcess = popen,
) -> str:
    """The interpreter to run a package with. Installs its requirements.txt if it must, into a
    cached environment (or, for requirements naming paths inside the package, one under
    `scratch`), running pip with `start`. Raises SetupFailed with pip's message, or
    SetupInterrupted."""
    req_file = package / "requirements.txt"
    if not req_file.is_file():
        return sys.executable
    text = req_file.read_text(errors="replace")
    missing = unsatisfied(text)
    if not missing:
        log("kaio: requirements.txt is satisfied by the platform's environment\n")
        return sys.executable
    if not is_cacheable(text):
        env = scratch / "venv"
        return str(venv_python(_build(env, req_file, package, log, should_stop, start)))
    envs_dir.mkdir(parents=True, exist_ok=True)
    env = envs_dir / environment_key(text)
    if (env / READY).exists():
        log(f"kaio: reusing the cached environment {env.name} for requirements.txt\n")
        return str(venv_python(env))
    with _exclusive(envs_dir / f"{env.name}.lock", should_stop):
        if (env / READY).exists():  # built by another job while this one waited
            log(f"kaio: reusing the cached environment {env.name} for requirements.txt\n")
            return str(venv_python(env))
        log(f"kaio: installing {', '.join(missing)} into a new environment {env.name}\n")
        return str(venv_python(_build(env, req_file, package, log, should_stop, start)))


@contextlib.contextmanager
def _exclusive(lock_path: Path, should_stop: Callable[[], bool]):
    with open(lock_path, "w") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if should_stop():
                    raise SetupInterrupted() from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(
    env: Path,
    req_file: Path,
    package: Path,
    log: Callable[[str], None],
    should_stop: Callable[[], bool],
    start: StartProcess,
) -> Path:
    # Built in place, not in a temp folder renamed: a venv's scripts hold its absolute path.
    # The READY marker, written last, is what makes it usable; a killed build is rebuilt.
    shutil.rmtree(env, ignore_errors=True)
    env.mkdir(parents=True, exist_ok=True)  # before pip runs: a confined pip writes beneath it
    code, lines = _run_logged(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(env)],
        package,
        log,
        should_stop,
        start,  # the platform's own code, but the server's Python must not see the job's
        env,
    )
    if code != 0:
        raise SetupFailed("could not create a virtual environment: " + _pip_error(lines))
    _link_server_site_packages(env)
    pip = [sys.executable, "-m", "pip", "--python", str(venv_python(env)), "install"]
    pip += ["--disable-pip-version-check", "--no-input", "-r", str(req_file)]
    code, lines = _run_logged(pip, package, log, should_stop, start, env)
    if code != 0:
        shutil.rmtree(env, ignore_errors=True)
        raise SetupFailed("pip could not install requirements.txt:\n" + _pip_error(lines))
    _mark_ready(env)
    return env


def _mark_ready(env: Path) -> None:
    """Write the READY marker as a file of its own: pip, confined to writing the environment,
    may have put a link in its place, which writing through would truncate a file elsewhere."""
    marker = env / READY
    try:
        marker.unlink(missing_ok=True)  # a link itself, never what it points to
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        shutil.rmtree(env, ignore_errors=True)
        raise SetupFailed(f"the new environment changed under the platform ({e})") from None
    os.close(fd)
