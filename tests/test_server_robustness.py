"""No request makes a 500, a stuck job or a stuck lock: hostile and broken requests against a real
server, each answered with a reason, the server and the job's lock free afterwards."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from conftest import ServerProcess
from server_support import Api, make_package
from support import wait_for

from kaio_spec.server.store import Store


@pytest.fixture
def api(kaio_server, api_key) -> Api:
    return Api(kaio_server.url, api_key)


def presign_raw(api: Api, body_text: str) -> requests.Response:
    """POST /jobs/presign with a body exactly as given (json.dumps writes a lone surrogate as
    the escape \\ud800, which JSON allows and UTF-8 cannot carry)."""
    return api.post(
        "/jobs/presign", data=body_text.encode(), headers={"Content-Type": "application/json"}
    )


def spec(**changes) -> dict:
    body = {
        "job_name": "surrogate",
        "job_spec": {"instance_type": "ml.m5.large", "entrypoint": "train.py"},
        "env": {"A": "b"},
        "labels": {"k": "v"},
    }
    for where, value in changes.items():
        section, _, name = where.partition(".")
        body[section][name] = value
    return body


LONE = "x\ud800y"


@pytest.mark.parametrize(
    "where, changes",
    [
        ("env.A", {"env.A": LONE}),
        ("env", {"env." + LONE: "value"}),
        ("job_spec.entrypoint", {"job_spec.entrypoint": LONE}),
        ("job_spec.image_uri", {"job_spec.image_uri": LONE}),
        ("labels.k", {"labels.k": LONE}),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_the_field(api, where, changes):
    r = presign_raw(api, json.dumps(spec(**changes)))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error.startswith(where) and "surrogate" in error, error
    assert api.get("/jobs").status_code == 200  # nothing half-made behind it


def test_a_log_offset_past_any_file_is_a_400_or_empty(api):
    unique = api.submit({"train.py": "print('hello')"}, job_name="offsets")
    assert api.wait(unique)["status"] == "Completed"
    r = api.get(f"/jobs/{unique}/logs", params={"offset": 9223372036854775807})
    assert r.status_code == 400 and r.json()["error"].startswith("offset"), r.text
    r = api.get(f"/jobs/{unique}/logs", params={"offset": 10**12})  # past the end: nothing
    assert r.status_code == 200 and r.content == b"" and r.headers["X-Next-Offset"] == str(10**12)
    assert api.get(f"/jobs/{unique}/logs").text == "hello\n"


@pytest.mark.parametrize("signature", ["é" * 64, "∂", "zz" * 32])
def test_a_presigned_url_with_a_signature_of_other_characters_is_a_400(api, signature):
    presigned = api.presign(job_name="non-ascii")
    url = urlsplit(presigned["upload_url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    forged = url._replace(query=urlencode({**query, "signature": signature})).geturl()
    package = make_package({"train.py": "pass"})
    r = requests.put(forged, data=package, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("signature:")
    assert requests.get(forged, timeout=30).status_code == 400
    # The job was not touched: the real URL still takes its package.
    assert requests.put(presigned["upload_url"], data=package, timeout=30).status_code == 200


# ---- crashes: what a restart makes of a cut-short upload or run ---------------------------------


def _zeros_package(files: int, each: int) -> bytes:
    """A small package that takes a while to unpack: `files` files of `each` zero bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        script = tarfile.TarInfo("train.py")
        script.size = len(b"print('ran')")
        tf.addfile(script, io.BytesIO(b"print('ran')"))
        for i in range(files):
            info = tarfile.TarInfo(f"zeros/z{i}.bin")
            info.size = each
            tf.addfile(info, _Zeros(each))
    return buf.getvalue()


class _Zeros(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def test_a_retry_after_a_crash_while_unpacking_takes_only_the_bytes_first_received(
    server_factory,
):
    server = server_factory(max_instances=2)
    api = Api(server.url, server.add_user())
    package = _zeros_package(60, 8 * 1024**2)  # 480 MB to write: seconds to unpack
    presigned = api.presign(job_name="cut")
    unique = presigned["unique_job_name"]
    job_dir = server.data_dir / "jobs" / unique
    put = threading.Thread(target=_quiet_put, args=(presigned["upload_url"], package))
    put.start()
    wait_for(lambda: any(job_dir.glob("pkg.tmp-*/zeros")), "unpacking began", 60)
    server.kill()
    put.join(30)
    store = Store(server.data_dir)
    try:
        assert store.get_job(unique)["uploaded_at"] is None  # cut short while unpacking
    finally:
        store.close()
    server.start()
    assert api.job(unique)["status"] == "Pending"
    other = make_package({"train.py": "print('other bytes')"})
    r = requests.put(presigned["upload_url"], data=other, timeout=60)
    assert r.status_code == 409 and r.json()["error"].startswith("body:"), r.text
    r = requests.put(presigned["upload_url"], data=package, timeout=120)
    assert r.status_code == 200, r.text
    assert api.wait(unique)["status"] == "Completed"
    assert api.get(f"/jobs/{unique}/logs").text == "ran\n"


def _quiet_put(url: str, data: bytes) -> None:
    with contextlib.suppress(requests.RequestException):
        requests.put(url, data=data, timeout=60)


def test_a_run_that_ended_before_a_crash_while_collecting_outputs_is_completed(server_factory):
    server = server_factory(max_instances=2)
    api = Api(server.url, server.add_user())
    # Many output files: collecting and listing them takes a while after the job exits 0.
    script = (
        "import os\n"
        "os.makedirs('many')\n"
        "for i in range(5000):\n"
        "    open(f'many/{i}.txt', 'w').close()\n"
        "open('result.txt', 'w').write('done')\n"
    )
    unique = api.submit({"train.py": script}, job_name="collect")
    job_dir = server.data_dir / "jobs" / unique
    wait_for(lambda: (job_dir / "outcome.json").exists(), "the run ended", 120)
    server.kill()
    store = Store(server.data_dir)
    try:
        at_crash = store.get_job(unique)["status"]
    finally:
        store.close()
    assert at_crash == "InProgress"  # the crash came while its outputs were being collected
    server.start()
    job = api.wait(unique)
    assert job["status"] == "Completed" and job["failure_reason"] is None, job
    listed = {
        rel: url for rel, _, url in api.get(f"/jobs/download/{unique}").json()["output_files"]
    }
    assert len(listed) == 5000 + 1 + 2  # the files, the result, the two logs
    assert requests.get(listed["result.txt"], timeout=30).content == b"done"


# ---- slow clients -------------------------------------------------------------------------------


def _raw_connection(url: str) -> socket.socket:
    where = urlsplit(url)
    return socket.create_connection((where.hostname, where.port), timeout=30)


def test_an_upload_that_stalls_is_timed_out_and_frees_the_job(server_factory):
    server = server_factory(max_instances=2, upload_stall_timeout=2)
    api = Api(server.url, server.add_user())
    presigned = api.presign(job_name="stall")
    target = urlsplit(presigned["upload_url"])
    with _raw_connection(server.url) as stalled:
        head = (
            f"PUT {target.path}?{target.query} HTTP/1.1\r\nHost: {target.netloc}\r\n"
            "Content-Length: 100000\r\n\r\n"
        )
        stalled.sendall(head.encode() + b"\x1f\x8b" + b"\0" * 100)  # then nothing more
        answer = b""
        while not answer.endswith(b"}") and (piece := stalled.recv(4096)):
            answer += piece
        answer = answer.decode()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "no byte came for 2 s" in answer
    # The job's upload lock is free: the real upload goes through.
    package = make_package({"train.py": "print('ok')"})
    r = requests.put(presigned["upload_url"], data=package, timeout=30)
    assert r.status_code == 200, r.text
    assert api.wait(presigned["unique_job_name"])["status"] == "Completed"


@pytest.mark.parametrize(
    "count",
    [200, pytest.param(4000, marks=pytest.mark.slow, id="4000, as the issue measured")],
)
def test_slow_and_silent_connections_are_closed_and_do_not_pin_the_server(server_factory, count):
    server = server_factory(max_instances=2, header_timeout=1)
    slow = []
    for i in range(count):
        conn = _raw_connection(server.url)
        if i % 2:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        slow.append(conn)
    try:
        # The server answers others meanwhile...
        assert requests.get(server.url + "/healthz", timeout=30).status_code == 200
        # ...and closes each of them once its headers are overdue.
        for conn in slow:
            assert conn.recv(1024) == b""
    finally:
        for conn in slow:
            conn.close()
    assert requests.get(server.url + "/healthz", timeout=30).status_code == 200


def test_a_presign_answer_reveals_no_path_of_the_server(api, kaio_server):
    presigned = api.presign(job_name="where")
    unique = presigned["unique_job_name"]
    assert presigned["s3_uri"] == f"s3://kaio-local/{unique}/package.tar.gz"
    text = json.dumps(presigned)
    assert str(kaio_server.data_dir) not in text and str(kaio_server.data_dir.parent) not in text


# ---- a job's folder the job made unreadable ---------------------------------------------------

NOBODY = 65534
LOCKS_ITSELF_OUT = (
    "import os\n"
    "os.makedirs('locked/inner')\n"
    "open('locked/inner/data.bin', 'wb').write(b'x' * 100000)\n"
    "os.chmod('locked/inner', 0)\n"
    "os.chmod('locked', 0o500)\n"
)


# The tests' own interpreter may sit where nobody cannot reach it (a pyenv under /root): the
# system's of the same version, with this checkout and its packages on the path.
NOBODYS_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
NOBODYS_PYTHONPATH = os.pathsep.join(
    [str(Path(__file__).resolve().parent.parent), *(p for p in sys.path if "site-packages" in p)]
)


def _runs_as_nobody(python: str) -> bool:
    probe = [*UnprivilegedServer.prefix, python, "-c", "import kaio_spec.server.app"]
    env = {**os.environ, "PYTHONPATH": NOBODYS_PYTHONPATH}
    return os.path.exists(python) and subprocess.run(probe, env=env).returncode == 0


class UnprivilegedServer(ServerProcess):
    """A server run as `nobody` (the tests run as root here, and root removes anything)."""

    prefix: ClassVar[list[str]] = [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
    ]

    def _command(self) -> list[str]:
        return [*self.prefix, NOBODYS_PYTHON, *super()._command()[1:]]

    def add_user(self, name: str | None = None) -> str:
        command = [NOBODYS_PYTHON, "-m", "kaio_spec.cli", "server", "user", "add"]
        command += [name or "tenant", "--data-dir", str(self.data_dir)]
        env = {**os.environ, **self.env}
        return subprocess.run(
            self.prefix + command, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()


@pytest.fixture
def unprivileged_server():
    if os.geteuid() != 0:
        pytest.skip("the tests already run unprivileged: the other tests cover it")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to run the server as nobody")
    if not _runs_as_nobody(NOBODYS_PYTHON):
        pytest.skip(f"nobody cannot run {NOBODYS_PYTHON} with this project's packages")
    base = Path(tempfile.mkdtemp(prefix="kaio-nobody-"))
    base.chmod(0o755)
    home = base / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    (base / "data").mkdir()
    os.chown(base / "data", NOBODY, NOBODY)
    env = {
        "HOME": str(home),
        "KAIO_HOME": str(home / ".kaio"),
        "XDG_CONFIG_HOME": str(home),
        "PYTHONPATH": NOBODYS_PYTHONPATH,
    }
    started = []

    def start(**flags) -> UnprivilegedServer:
        # Unconfined: what is tested is the platform's deletion, not the job's confinement.
        server = UnprivilegedServer(base / "data", env=env, max_instances=2, sandbox=False, **flags)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
    subprocess.run(["chmod", "-R", "u+rwx", str(base)], check=False)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("how", ["DELETE", "retention sweep"])
def test_a_folder_the_job_made_unreadable_is_deleted_all_the_same(unprivileged_server, how):
    flags = {"retention_days": 4 / 86400, "sweep_interval": 0.2} if how != "DELETE" else {}
    server = unprivileged_server(**flags)
    api = Api(server.url, server.add_user())
    unique = api.submit({"train.py": LOCKS_ITSELF_OUT}, job_name="locked")
    job = api.wait(unique)
    assert job["status"] == "Completed", (
        job["failure_reason"],
        api.get(f"/jobs/{unique}/logs", params={"stream": "stderr"}).text,
    )
    folder = server.data_dir / "jobs" / unique
    assert list(folder.rglob("data.bin"))  # behind folders of mode 000 and 500
    if how == "DELETE":
        r = api.delete(f"/jobs/{unique}/data")
        assert r.status_code == 200 and r.json()["data_deleted"], r.text
    else:
        wait_for(lambda: api.job(unique)["data_deleted"], "the sweep deleted the data", 60)
    assert not folder.exists()
