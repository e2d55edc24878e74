"""The local Kaio platform: the API of docs/protocol.md over SQLite and local disk, jobs as processes.

app.py          create_app: the platform's parts on app.state, error handling, the routers
routes/         the routes, one APIRouter per area (meta, signin, jobs, outputs, packages,
                dashboard)
deps.py         what routes need, as FastAPI dependencies (config, store, storage, the caller)
bodies.py       request bodies: JSON read by hand and bounded; uploads streamed through a hash
responses.py    answers: JSON as is, conditional (ETag), files streamed
openapi.py      the shapes /openapi.json documents
uploads.py      a received package's rules: half the volume, checked and unpacked, or the job failed
signin.py       one-time codes that sign a dashboard tab in
errors.py       ApiError, answered {"error": message} with its status
auth.py         API keys, the server secret, JWTs and the ids of signed-out ones
headers.py      no-store and nosniff on every answer that sets none of its own
apidocs.py      Swagger UI's files for /docs, from a pinned package
store.py        SQLite: users, keys, jobs, status history, telemetry
keys.py         API keys made beside a running server (the client's local platform)
storage.py      a job's folder, presigned URLs, package checks, outputs
scheduler.py    queue and capacity, restart recovery, retention sweep
runner.py       one job's processes, from set-up to outputs
environments.py requirements.txt: the server's interpreter or a cached venv
gpu.py          NVIDIA GPU detection and assignment
namespaces.py   jobs in namespaces of their own (bubblewrap)
sandbox.py      which isolation jobs get; Landlock's confinement where namespaces are not had
limits.py       memory, volume, processes and log caps held while a job runs (cgroups, telemetry)
unpack.py       archives written beneath a folder by descriptor, through no link
connections.py  slow and idle connections closed (uvicorn's protocol, with a header timeout)
states.py       job statuses and their lifecycle
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import resource
import socket
import sys
from dataclasses import replace
from pathlib import Path

from kaio_spec.datadir import LOCK_FILE, SERVER_FILE
from kaio_spec.errors import InvalidInput
from kaio_spec.files import write_atomic
from kaio_spec.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app", "serve"]


def create_app(config: ServerConfig):
    from kaio_spec.server.app import create_app as _create

    return _create(config)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted connections only
    # for sockets that say they are TCP, and without it every keep-alive response waits 40 ms
    # (Nagle against delayed ACKs).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InvalidInput(
            f"--port {port}: cannot listen on {host}:{port} ({e.strerror})"
        ) from None
    sock.set_inheritable(False)
    return sock


def _write_server_file(data_dir: Path, info: dict) -> None:
    write_atomic(data_dir / SERVER_FILE, json.dumps(info), mode=None, fsync=False)


def _raise_open_files_limit(wanted: int = 65536) -> None:
    # The sandbox holds every entry beside the data folder's ancestors open (sandbox.py): a
    # folder of thousands would not fit the usual soft limit of 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < limit:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def serve(config: ServerConfig) -> None:
    """Serve until SIGINT or SIGTERM. One server per data dir (a lock file says so)."""
    import uvicorn

    from kaio_spec.server import connections

    data_dir = config.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Held for the server's life; the OS drops it when the process dies, however it dies.
    lock = open(data_dir / LOCK_FILE, "a+")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InvalidInput(f"--data-dir {data_dir}: another kaio server is using it") from None
    sock = _bind(config.host, config.port)
    _raise_open_files_limit()
    port = sock.getsockname()[1]
    config = replace(config, data_dir=data_dir, port=port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(config)
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host}:{port}"
    _write_server_file(data_dir, {"url": url, "pid": os.getpid(), "port": port})
    print(f"kaio server: serving {url} (data in {data_dir})", file=sys.stderr, flush=True)
    print(f"kaio server: {app.state.scheduler.sandbox.summary}", file=sys.stderr)
    if config.public_url is None and config.host in ("0.0.0.0", "::", ""):
        print(
            f"kaio server: presigned URLs name {config.base_url}, which other machines cannot "
            "reach; pass --public-url with the address they use",
            file=sys.stderr,
        )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            # Idle and half-open connections are closed, and their number is bounded, so that
            # slow clients cannot pin the server (connections.py).
            http=connections.header_timeout_protocol(config.header_timeout_s),
            timeout_keep_alive=connections.DEFAULT_KEEP_ALIVE_S,
            limit_concurrency=connections.DEFAULT_MAX_CONNECTIONS,
            log_level="warning",
            access_log=False,  # presigned URLs carry credentials in their query strings
            timeout_graceful_shutdown=5,
        )
    )
    try:
        server.run(sockets=[sock])
    finally:
        with_pid = data_dir / SERVER_FILE
        try:
            if json.loads(with_pid.read_text()).get("pid") == os.getpid():
                with_pid.unlink()
        except (OSError, ValueError):
            pass
        lock.close()
