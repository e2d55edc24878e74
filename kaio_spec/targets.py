"""Which Kaio API a command talks to, with which key, and the local platform started on demand.

Where (first that applies):

1. `--api URL` (the `api` argument);
2. `$KAIO_API_BASE`;
3. what `kaio login` saved (`$XDG_CONFIG_HOME/kaio/config.json`, default `~/.config/kaio/`);
4. the local platform, `http://127.0.0.1:$KAIO_LOCAL_PORT` (default 8421). If nothing answers
   there, `connect()` starts `kaio server` in the background, detached from the terminal, with its
   data in `$KAIO_SERVER_DATA_DIR`, else `$KAIO_HOME/server`, else `~/.kaio/server` (the way
   SkyPilot starts its local API server), and says so in one line. `kaio server stop` stops it.

With which key (first that applies):

1. `$KAIO_API_KEY`;
2. the key `kaio login` saved, but only for the address it was saved with: a key is never sent
   to another server than the one it was checked against;
3. for the local platform, its own key: a user `local` created the first time, whose key is kept
   in `DATA_DIR/local-api-key` (mode 0600).

`--api URL` with `$KAIO_API_KEY` never starts anything. A missing key or a malformed address is
InvalidInput (exit 2), a server that cannot be reached is PlatformError (exit 1); each message
says what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kaio_spec.datadir import SERVER_FILE
from kaio_spec.errors import InvalidInput, KaioError, PlatformError
from kaio_spec.files import write_atomic

__all__ = [
    "LOCAL_USER",
    "Target",
    "config_path",
    "connect",
    "local_data_dir",
    "local_url",
    "login",
    "ready",
    "resolve",
    "save_config",
    "stop_local",
]

DEFAULT_LOCAL_PORT = 8421  # `kaio server`'s default port
LOCAL_USER = "local"  # the auto-started platform's user
KEY_FILE = "local-api-key"
START_LOCK = "autostart.lock"
SERVER_LOG = "server.log"
START_TIMEOUT_S = 90.0  # a cold start imports FastAPI and uvicorn; slow disks take a while
STOP_TIMEOUT_S = 30.0  # the server stops its jobs first (SIGTERM, then SIGKILL after a grace)
PROBE_TIMEOUT_S = 3.0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Target:
    """Where a command goes. `source` says how the address was chosen ("--api", "KAIO_API_BASE",
    "config", "local"); `key_source` where the key came from ("KAIO_API_KEY", "config",
    "local key file"), or None when there is none yet (the local platform before its first
    start). `api_key` is never part of repr()."""

    api_base: str
    api_key: str | None
    source: str
    key_source: str | None = None

    @property
    def is_local(self) -> bool:
        return self.source == "local"

    def __repr__(self) -> str:
        key = "set" if self.api_key else "none"
        return f"Target({self.api_base!r}, source={self.source!r}, key={key})"


# ---- places ------------------------------------------------------------------------------------


def config_path() -> Path:
    """Where `kaio login` saves the address and the key."""
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "kaio" / "config.json"


def kaio_home() -> Path:
    """kaio's own folder on this machine: $KAIO_HOME, else ~/.kaio."""
    home = os.environ.get("KAIO_HOME", "").strip()
    return Path(home).expanduser() if home else Path.home() / ".kaio"


def local_data_dir() -> Path:
    """The auto-started local platform's data dir (`kaio server stop` looks there too)."""
    explicit = os.environ.get("KAIO_SERVER_DATA_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    return kaio_home() / "server"


def local_port() -> int:
    text = os.environ.get("KAIO_LOCAL_PORT", "").strip()
    if not text:
        return DEFAULT_LOCAL_PORT
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise InvalidInput(f"KAIO_LOCAL_PORT: {text!r} is not a port number (1-65535)")
    return port


def local_url() -> str:
    return f"http://127.0.0.1:{local_port()}"


def _shown(path: Path) -> str:
    """A path as the user would type it: ~/... under the home folder."""
    try:
        return "~/" + path.resolve().relative_to(Path.home().resolve()).as_posix()
    except ValueError:
        return str(path)


# ---- the config file ---------------------------------------------------------------------------


def check_url(value: str, where: str) -> str:
    """An http(s) base URL without its trailing slash, or InvalidInput naming `where`."""
    text = value.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise InvalidInput(
            f"{where}: {value!r} is not an http(s) URL; give one like "
            "https://api.kaion5.com or http://127.0.0.1:8421"
        )
    return text


def read_config() -> dict:
    """What `kaio login` saved ({} if nothing)."""
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise InvalidInput(
            f"{path}: cannot be read ({e}); run `kaio login` again to rewrite it"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: is not a JSON object; run `kaio login` again to rewrite it")
    return data


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by the owner only from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, text, mode=0o600)


def save_config(api_base: str, api_key: str) -> Path:
    """Save the address and key `kaio login` checked (mode 0600, atomic). Returns the path."""
    path = config_path()
    body = {"api_base": check_url(api_base, "api_base"), "api_key": api_key}
    _write_private(path, json.dumps(body, indent=2) + "\n")
    return path


# ---- resolving -----------------------------------------------------------------------------------


def resolve(api: str | None = None) -> Target:
    """Where to go and with which key, by the order in this module's docstring. Starts nothing
    and sends nothing; the local platform's key is None until `connect()` has made one."""
    config = read_config()
    if api:
        base, source = check_url(api, "--api"), "--api"
    elif os.environ.get("KAIO_API_BASE", "").strip():
        base, source = check_url(os.environ["KAIO_API_BASE"], "KAIO_API_BASE"), "KAIO_API_BASE"
    elif config.get("api_base"):
        base = check_url(str(config["api_base"]), f"{config_path()}: api_base")
        source = "config"
    else:
        base, source = local_url(), "local"

    env_key = os.environ.get("KAIO_API_KEY", "").strip()
    if env_key:
        return Target(base, env_key, source, "KAIO_API_KEY")
    saved_base = config.get("api_base")
    if isinstance(saved_base, str) and saved_base.strip().rstrip("/") == base:
        key = config.get("api_key")
        if isinstance(key, str) and key.strip():
            return Target(base, key.strip(), source, "config")
    if source == "local" or base == local_url():
        key = _read_key_file(local_data_dir())
        return Target(base, key, source, "local key file" if key else None)
    return Target(base, None, source, None)


def _read_key_file(data_dir: Path) -> str | None:
    try:
        return (data_dir / KEY_FILE).read_text().strip() or None
    except OSError:
        return None


def _missing_key(target: Target) -> InvalidInput:
    return InvalidInput(
        f"no API key for {target.api_base}: export KAIO_API_KEY=<your key>, or run "
        f"`kaio login --api {target.api_base}` once to save one"
    )


# ---- connecting ----------------------------------------------------------------------------------


def connect(
    api: str | None = None,
    *,
    verbose: bool = False,
    echo: Callable[[str], None] = _stderr,
):
    """A logged-in Client for `resolve(api)`, starting the local platform first when that is the
    target and nothing answers (one line through `echo` says so)."""
    return login(ready(api, echo=echo), verbose=verbose)


def ready(api: str | None = None, *, echo: Callable[[str], None] = _stderr) -> Target:
    """resolve(api), with the local platform started if that is the target, and a key: what
    connect() logs in with, for commands that log in their own way (`kaio dashboard`)."""
    target = resolve(api)
    if target.is_local:
        target = ensure_local(target, echo=echo)
    if not target.api_key:
        raise _missing_key(target)
    return target


def login(target: Target, *, verbose: bool = False):
    """Client(target.api_base).login(target.api_key), its failures as KaioErrors that say what to
    do: a refused key is InvalidInput (exit 2), an unreachable server PlatformError (exit 1)."""
    from kaio_spec.client import Client
    from kaio_spec.transport import platform_errors

    client = Client(target.api_base, verbose=verbose)
    try:
        with platform_errors(
            target.api_base,
            unreachable=lambda e: _unreachable(target, e),
            refused=lambda e: _login_refused(target, e),
        ):
            return client.login(target.api_key or "")
    except KaioError:
        raise  # InvalidInput is a ValueError too: not "not the Kaio API"
    except (ValueError, KeyError, TypeError):
        raise PlatformError(
            f"{target.api_base} answered /login with something that is not the Kaio API; check "
            f"the address ({_address_source(target)})"
        ) from None


def _login_refused(target: Target, e) -> KaioError:
    status = e.response.status_code if e.response is not None else None
    if status in (400, 401, 403):
        return InvalidInput(_refused(target))
    if status == 404:
        return PlatformError(
            f"{target.api_base} has no /login route: it is not a Kaio API; check the "
            f"address ({_address_source(target)})"
        )
    return PlatformError(f"{target.api_base}: logging in failed ({e})")


def _address_source(target: Target) -> str:
    return {
        "--api": "given with --api",
        "KAIO_API_BASE": "from $KAIO_API_BASE",
        "config": f"saved in {config_path()} by `kaio login`",
        "local": "the local platform",
    }.get(target.source, target.source)


def _refused(target: Target) -> str:
    where = {
        "KAIO_API_KEY": "the key in $KAIO_API_KEY",
        "config": f"the key saved in {config_path()}",
        "local key file": f"the local platform's key ({local_data_dir() / KEY_FILE})",
    }.get(target.key_source or "", "the key")
    advice = "check it, or run `kaio login` to save a valid one"
    if target.key_source == "local key file":
        advice = "delete that file and run the command again: a new key is made"
    if target.key_source == "the key given":
        where, advice = "the key given", "check it and run `kaio login` again"
    if target.is_local and target.key_source == "KAIO_API_KEY":
        advice = (
            "unset KAIO_API_KEY to use the local platform's own key, or set KAIO_API_BASE to "
            "the server this key belongs to"
        )
    return f"{target.api_base} refused {where} (unknown or revoked): {advice}"


def _unreachable(target: Target, error: Exception) -> str:
    reason = type(error).__name__
    if target.is_local:
        return (
            f"cannot reach the local platform at {target.api_base} ({reason}); see "
            f"{_shown(local_data_dir() / SERVER_LOG)}, or restart it with `kaio server stop`"
        )
    return (
        f"cannot reach {target.api_base} ({reason}; address {_address_source(target)}): "
        "check the address and your network"
    )


# ---- the local platform --------------------------------------------------------------------------


def probe(url: str) -> str:
    """'kaio' if a Kaio server answers GET /healthz at `url`, 'other' if something else answers,
    'none' if nothing does."""
    import requests

    try:
        r = requests.get(f"{url}/healthz", timeout=PROBE_TIMEOUT_S)
    except requests.RequestException:
        return "none"
    try:
        ok = r.status_code == 200 and r.json().get("status") == "ok"
    except (ValueError, AttributeError):
        ok = False
    return "kaio" if ok else "other"


@contextlib.contextmanager
def _start_lock(data_dir: Path) -> Iterator[None]:
    """Held while one `kaio` process checks, starts and keys the local platform: two commands run
    at once start one server and create one key."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock; the server's own lock remains
        yield
        return
    with open(data_dir / START_LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _something_else(url: str) -> PlatformError:
    return PlatformError(
        f"something that is not a Kaio server answers at {url}; stop it, or pick another port for "
        "the local platform with KAIO_LOCAL_PORT (or give --api / KAIO_API_BASE)"
    )


def ensure_local(target: Target, *, echo: Callable[[str], None] = _stderr) -> Target:
    """Make sure the local platform answers at target.api_base (starting it if nothing does) and
    that there is a key for it; returns the target with its key."""
    url = target.api_base
    state = probe(url)
    if state == "other":
        raise _something_else(url)
    if state == "kaio" and target.api_key:
        return target
    data_dir = local_data_dir()
    with _start_lock(data_dir):
        state = probe(url)  # another command may have started it while we waited for the lock
        if state == "other":
            raise _something_else(url)
        if state == "none":
            _start_server(data_dir, local_port())
            echo(
                f"started the local Kaio platform at {url} (data in {_shown(data_dir)}; "
                "stop it with `kaio server stop`)"
            )
        if target.api_key:
            return target
        key = _read_key_file(data_dir) or _create_key(data_dir, url)
    return Target(url, key, target.source, "local key file")


def _start_server(data_dir: Path, port: int) -> None:
    """Start `kaio server` detached (its own session, so the terminal's Ctrl-C and hang-up do not
    reach it) and wait until it answers on `port`."""
    server_file = data_dir / SERVER_FILE
    with contextlib.suppress(OSError):
        server_file.unlink()  # a leftover of a server that died; the new one writes its own
    log_path = data_dir / SERVER_LOG
    cmd = [sys.executable, "-m", "kaio_spec.cli", "server", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--data-dir", str(data_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        os.chmod(log_path, 0o600)
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PlatformError(
                f"the local Kaio platform did not start: {_last_line(log_path)} "
                f"(log: {_shown(log_path)})"
            )
        if _server_pid(data_dir) == proc.pid and probe(url) == "kaio":
            return
        time.sleep(0.1)
    proc.terminate()
    raise PlatformError(
        f"the local Kaio platform did not answer at {url} within {START_TIMEOUT_S:.0f} s; "
        f"see {_shown(log_path)}"
    )


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "it wrote nothing"


def _server_pid(data_dir: Path) -> int | None:
    try:
        pid = json.loads((data_dir / SERVER_FILE).read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) and pid > 0 else None


def _create_key(data_dir: Path, url: str) -> str:
    """The local user's key, made through the server's store (the same SQLite file the running
    server reads) and kept in DATA_DIR/local-api-key, mode 0600."""
    info = _server_info(data_dir)
    if info is None or info.get("url") != url:
        raise InvalidInput(
            f"a Kaio server answers at {url}, but not from {_shown(data_dir)}, so no key can be "
            f"made for it here: export KAIO_API_KEY with a key of it (`kaio server --data-dir "
            "ITS_DATA_DIR user add NAME` prints one)"
        )
    from kaio_spec.server.keys import add_key

    key = add_key(data_dir, LOCAL_USER)
    _write_private(data_dir / KEY_FILE, key + "\n")
    return key


def _server_info(data_dir: Path) -> dict | None:
    try:
        info = json.loads((data_dir / SERVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _is_kaio_server(pid: int) -> bool:
    import psutil

    try:
        cmdline = psutil.Process(pid).cmdline()
    except (psutil.Error, OSError):
        return False
    return "server" in cmdline and any("kaio" in part for part in cmdline)


def stop_local(data_dir: Path | None = None, *, timeout: float = STOP_TIMEOUT_S) -> str | None:
    """Stop the local platform whose data is in `data_dir` (default: local_data_dir()): SIGTERM
    to the pid in its server.json, then wait for it to end (SIGKILL after `timeout`). Returns
    its URL, or None if none was running (a stale server.json is removed)."""
    import psutil

    data_dir = data_dir or local_data_dir()
    info = _server_info(data_dir) or {}
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not _is_kaio_server(pid):
        with contextlib.suppress(OSError):
            (data_dir / SERVER_FILE).unlink()
        return None
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    except psutil.NoSuchProcess:
        pass
    with contextlib.suppress(OSError):
        (data_dir / SERVER_FILE).unlink()  # the server removes it itself unless killed
    return str(info.get("url") or f"pid {pid}")
