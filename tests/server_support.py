"""Helpers for the server tests: packages built in memory and a tiny API caller on plain requests
(the server's tests do not depend on the client under test elsewhere)."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import requests
from support import poll

FINAL = ("Completed", "Failed", "Stopped")
WAIT_S = 60.0  # a hang detector, never a timing assertion

# A job that says it is ready, then waits for the file named by $GO_FILE (the test creates it).
WAIT_FOR_GO = textwrap.dedent(
    """
    import os, time
    print("ready", os.getpid(), flush=True)
    while not os.path.exists(os.environ["GO_FILE"]):
        time.sleep(0.02)
    print("done", flush=True)
    """
)

# Says it is ready, then runs until stopped; on SIGTERM it writes cleanup.txt and exits 0.
CLEANS_UP_ON_SIGTERM = textwrap.dedent(
    """
        import os, signal, sys, time
        def on_term(*_):
            open("cleanup.txt", "w").write("got SIGTERM")
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
        """
)

# algo-2 fails (exit 3, a line on stderr) once algo-1 wrote partial.txt, which algo-1 says by
# listening on the abstract socket $WROTE_SOCKET (instances share no folder, but a network
# namespace; a name of the test's own, where a TCP port picked ahead could be taken by another
# process, which algo-2 then took for algo-1); algo-1 then waits for $GO_FILE, never created:
# the failure must stop it.
FAILS_ON_ALGO_2 = textwrap.dedent(
    """
        import os, socket, sys, time
        name = "\\0" + os.environ["WROTE_SOCKET"]
        if os.environ["SM_CURRENT_HOST"] == "algo-2":
            while True:  # fail once algo-1 wrote its file
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(name)
                    break
                except OSError:
                    time.sleep(0.02)
            print("cannot read shard 2", file=sys.stderr)
            sys.exit(3)
        open("partial.txt", "w").write("written before the stop")
        wrote = socket.socket(socket.AF_UNIX)
        wrote.bind(name)
        wrote.listen()
        while not os.path.exists(os.environ["GO_FILE"]):  # never created: must be stopped
            time.sleep(0.02)
        """
)


# Leaves two processes behind, out of its process group: one in a session of its own, one
# daemonised (forked twice); prints its own pid and theirs, then waits for $GO_FILE if set.
LEAVES_HELPERS = textwrap.dedent(
    """
    import os, subprocess, sys, time
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    helper = subprocess.Popen(sleeper, start_new_session=True)
    read, write = os.pipe()
    if os.fork() == 0:
        os.setsid()
        daemon = os.fork()
        if daemon == 0:
            os.execv(sys.executable, sleeper)
        os.write(write, str(daemon).encode())
        os._exit(0)
    os.close(write)
    print("helpers", os.getpid(), helper.pid, int(os.read(read, 20)), flush=True)
    go = os.environ.get("GO_FILE")
    while go and not os.path.exists(go):
        time.sleep(0.02)
    """
)


def make_package(files: dict[str, str | bytes], members: list[tarfile.TarInfo] = ()) -> bytes:
    """A tar.gz of `files` (name -> content) plus raw `members` (links, devices...)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
        for info in members:
            tf.addfile(info)
    return buf.getvalue()


def make_wheel(folder: Path, name: str = "kaiotestpkg", version: str = "1.0") -> Path:
    """A pure-Python wheel built by hand (no build backend, no network)."""
    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": f"VALUE = {version!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: kaio-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={b64},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


class Api:
    """One tenant's view of a server, over plain requests."""

    def __init__(self, url: str, api_key: str):
        self.url = url
        self.api_key = api_key
        self.session = requests.Session()
        r = self.session.post(f"{url}/login", json={"api_key": api_key}, timeout=10)
        r.raise_for_status()
        self.login = r.json()
        self.session.headers["Authorization"] = f"Bearer {self.login['access_token']}"

    def get(self, path: str, **kw) -> requests.Response:
        return self.session.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.session.post(self.url + path, timeout=30, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.session.delete(self.url + path, timeout=30, **kw)

    def presign(
        self,
        job_name: str = "job",
        entrypoint: str = "train.py",
        env: dict | None = None,
        labels: dict | None = None,
        **spec,
    ) -> dict:
        body = {
            "job_name": job_name,
            "job_spec": {
                "instance_type": "ml.m5.large",
                "instance_count": 1,
                "volume_size_gb": 5,
                "entrypoint": entrypoint,
                "image_uri": "local",
                "workflow": "processing",
                **spec,
            },
            "env": env or {},
        }
        if labels is not None:
            body["labels"] = labels
        r = self.post("/jobs/presign", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def submit(self, files: dict[str, str | bytes] | bytes, **kw) -> str:
        """Presign and upload; the unique job name."""
        presigned = self.presign(**kw)
        package = files if isinstance(files, bytes) else make_package(files)
        r = requests.put(presigned["upload_url"], data=package, timeout=30)
        assert r.status_code == 200, r.text
        return presigned["unique_job_name"]

    def job(self, unique: str) -> dict:
        r = self.get(f"/jobs/status/{unique}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(
        self, unique: str, until: Callable[[dict], bool] = lambda j: j["status"] in FINAL
    ) -> dict:
        return poll(lambda: self.job(unique), until, f"job {unique} got there", WAIT_S)

    def wait_for_log(self, unique: str, text: str, host: str = "algo-1") -> str:
        return poll(
            lambda: self.get(f"/jobs/{unique}/logs", params={"host": host}).text,
            lambda log: text in log,
            f"{text!r} appeared in {unique}'s {host} log",
            WAIT_S,
        )

    def outputs(self, unique: str) -> dict[str, bytes]:
        r = self.get(f"/jobs/download/{unique}")
        assert r.status_code == 200, r.text
        return {
            rel: requests.get(url, timeout=30).content for rel, _, url in r.json()["output_files"]
        }


def member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    """A tar member of any kind (links, devices, FIFOs), for packages no honest client makes."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


UNSAFE_KINDS = (
    "absolute",
    "dotdot",
    "symlink out",
    "relative symlink out",
    "hard link out",
    "device",
    "fifo",
    "not gzip",
    "truncated",
)


def unsafe_packages(outside: Path, good: dict[str, str]) -> dict[str, bytes]:
    """Packages the platform must refuse, each holding `good` plus one unsafe or broken thing;
    `outside` is a folder nothing may ever be written to."""
    return {
        "absolute": make_package({**good, str(outside / "abs.txt"): "x"}),
        "dotdot": make_package({**good, "../../../../" + outside.name + "/dd.txt": "x"}),
        "symlink out": make_package(good, [member("escape", tarfile.SYMTYPE, str(outside))]),
        "relative symlink out": make_package(
            good, [member("sub/escape", tarfile.SYMTYPE, "../../../..")]
        ),
        "hard link out": make_package(good, [member("hl", tarfile.LNKTYPE, "/etc/passwd")]),
        "device": make_package(good, [member("dev", tarfile.CHRTYPE)]),
        "fifo": make_package(good, [member("pipe", tarfile.FIFOTYPE)]),
        "not gzip": b"just some bytes, not a tar.gz",
        "truncated": make_package(good)[:40],
    }


def helpers_of(api: Api, unique: str) -> tuple[int, list[int]]:
    """A LEAVES_HELPERS job's own pid, and those of what it leaves behind."""
    log = api.wait_for_log(unique, "helpers ")
    leader, *helpers = (int(pid) for pid in log.split("helpers ")[1].split()[:3])
    return leader, helpers
