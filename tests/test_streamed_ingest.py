"""The server unpacks a job's package as its upload arrives (kaio_spec/server/ingest.py), against a
real server: files are on disk before the body's last byte, the job runs on exactly the files
sent, and a body cut short, or a package refused halfway, leaves nothing of itself behind."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import subprocess
import tarfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from server_support import Api, make_package
from support import wait_for

from kaio_spec.server import ingest

# Read back by the job: it proves the files it ran on are those sent, byte for byte.
TRAIN = (
    "import hashlib\n"
    "print(hashlib.sha256(open('data/big.bin', 'rb').read()).hexdigest())\n"
    "print(open('data/first.csv').read(), end='')\n"
)
BIG = 8 * 1024**2  # random bytes after the small members: deflate leaves them as big
FIRST_PART = 3 * 1024**2  # sent first: the small members and the start of big.bin


@pytest.fixture
def api(kaio_server, api_key) -> Api:
    return Api(kaio_server.url, api_key)


def package_with(big: bytes, last: tarfile.TarInfo | None = None) -> bytes:
    """train.py and a small CSV first, then `big`, then `last` (a raw member) if given."""
    files = {"train.py": TRAIN, "data/first.csv": "x,y\n1,2\n", "data/big.bin": big}
    return make_package(files, [last] if last is not None else [])


class ChunkedPut:
    """A PUT of a chunked body sent piece by piece on a raw connection, which can be dropped
    midway (as a client that dies)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        self.url = url
        where = urlsplit(url)
        self.conn = socket.create_connection((where.hostname, where.port), timeout=60)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"PUT {where.path}?{where.query} HTTP/1.1\r\nHost: {where.netloc}\r\n{extra}"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        self.conn.sendall(head.encode())

    def send(self, data: bytes) -> None:
        self.conn.sendall(b"%x\r\n" % len(data) + data + b"\r\n")

    def finish(self) -> str:
        """The end of the body; the server's whole answer."""
        self.conn.sendall(b"0\r\n\r\n")
        answer = b""
        while piece := self.conn.recv(65536):
            answer += piece
        self.conn.close()
        return answer.decode()

    def drop(self) -> None:
        self.conn.close()


def temp_files(job_dir: Path) -> list[Path]:
    return [*job_dir.glob("pkg.tmp-*"), *job_dir.glob("*.part-*")]


def start_upload(api: Api, kaio_server, job_name: str, package: bytes):
    """A job presigned and the first FIRST_PART bytes of its package sent, once the server has
    begun unpacking them: (its unique name, its folder, the upload, to send the rest on)."""
    presigned = api.presign(job_name=job_name)
    unique = presigned["unique_job_name"]
    job_dir = kaio_server.data_dir / "jobs" / unique
    put = ChunkedPut(presigned["upload_url"])
    put.send(package[:FIRST_PART])
    # big.bin begun: the members before it are whole.
    wait_for(lambda: list(job_dir.glob("pkg.tmp-*/data/big.bin")), "unpacking began", 30)
    return unique, job_dir, put


def test_the_files_are_unpacked_while_the_body_is_still_arriving(api, kaio_server):
    big = os.urandom(BIG)
    package = package_with(big)
    unique, job_dir, put = start_upload(api, kaio_server, "as-it-arrives", package)
    # Before the rest is sent, the first members are already in the job's temp folder...
    [train] = job_dir.glob("pkg.tmp-*/train.py")
    assert train.read_text() == TRAIN
    assert not (job_dir / "pkg").exists()  # ...and nothing is in place yet
    put.send(package[FIRST_PART:])
    answer = put.finish()
    assert answer.startswith("HTTP/1.1 200"), answer
    assert (job_dir / "package.tar.gz").read_bytes() == package
    assert temp_files(job_dir) == []
    assert api.wait(unique)["status"] == "Completed"
    log = api.get(f"/jobs/{unique}/logs").text
    assert log == f"{hashlib.sha256(big).hexdigest()}\nx,y\n1,2\n"


def test_a_body_cut_while_unpacking_leaves_nothing_and_the_upload_can_be_sent_again(
    api, kaio_server
):
    package = package_with(os.urandom(BIG))
    unique, job_dir, put = start_upload(api, kaio_server, "cut-while-unpacking", package)
    put.drop()  # the client dies with most of the body unsent
    wait_for(lambda: temp_files(job_dir) == [], "the half-made files removed", 30)
    assert not (job_dir / "pkg").exists() and not (job_dir / "package.tar.gz").exists()
    assert api.job(unique)["status"] == "Pending"  # waits for the upload, as before it began
    retry = ChunkedPut(put.url)
    retry.send(package)
    answer = retry.finish()
    assert answer.startswith("HTTP/1.1 200"), answer
    assert api.wait(unique)["status"] == "Completed"


def test_an_unsafe_member_after_files_already_unpacked_fails_the_job_and_leaves_nothing(
    api, kaio_server
):
    escape = tarfile.TarInfo("../escaped.txt")
    package = package_with(os.urandom(BIG), last=escape)
    unique, job_dir, put = start_upload(api, kaio_server, "unsafe-at-the-end", package)
    put.send(package[FIRST_PART:])
    answer = put.finish()
    assert answer.startswith("HTTP/1.1 400"), answer
    assert "'../escaped.txt' has a '..' component" in answer
    job = api.job(unique)
    assert job["status"] == "Failed" and "../escaped.txt" in job["failure_reason"], job
    assert temp_files(job_dir) == [] and not (job_dir / "pkg").exists()
    assert not (job_dir / "escaped.txt").exists()


def test_a_package_whose_gzip_check_fails_is_refused_not_run_on_the_bytes_before_it(
    api, kaio_server
):
    package = bytearray(make_package({"train.py": "print('ran')\n"}))
    package[-8] ^= 0xFF  # the gzip trailer's CRC of the uncompressed bytes: damaged in transit
    presigned = api.presign(job_name="bad-crc")
    r = requests.put(presigned["upload_url"], data=bytes(package), timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("package: not a readable tar.gz (CRC check failed")
    job = api.job(presigned["unique_job_name"])
    assert job["status"] == "Failed", job
    job_dir = kaio_server.data_dir / "jobs" / presigned["unique_job_name"]
    assert temp_files(job_dir) == [] and not (job_dir / "pkg").exists()


def test_a_member_of_negative_size_is_refused(api):
    """GNU tar's base-256 sizes can be negative: counted as they are, such a member would take
    bytes off what the package unpacks to, and send tarfile back to reread earlier members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
        train = tarfile.TarInfo("train.py")
        train.size = 6
        tf.addfile(train, io.BytesIO(b"pass\n\n"))
        negative = tarfile.TarInfo("hidden")
        negative.size = -4096
        tf.fileobj.write(negative.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
        tf.offset += tarfile.BLOCKSIZE
    presigned = api.presign(job_name="negative-size")
    r = requests.put(presigned["upload_url"], data=buf.getvalue(), timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "package: 'hidden' has a negative size (-4096)"
    assert api.job(presigned["unique_job_name"])["status"] == "Failed"


# ---- members' bytes, read straight from the stream (storage._MemberData) ----------------------


def test_later_members_replace_earlier_ones_in_the_archives_order(api):
    """The same name twice, a file replaced by a link, a link replaced by a file: each member
    lands as tar would make it, in the archive's order, and none is written through a link."""
    files = [
        (
            "train.py",
            "import os\nfor n in 'abc':\n    print(n, os.path.islink(n), open(n).read())\n",
        ),
        ("a", "first"),
        ("a", "second"),  # the same name twice: the later one wins
        ("b", "a file, soon a link"),
    ]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, text in files:
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tf.addfile(info, io.BytesIO(text.encode()))
        for name in ("b", "c"):  # b: a file replaced by a link; c: a link, then a file
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, "a"
            tf.addfile(link)
        own = tarfile.TarInfo("c")
        own.size = 3
        tf.addfile(own, io.BytesIO(b"own"))  # must replace the link, not write through it to a
    unique = api.submit(buf.getvalue(), job_name="replaced")
    assert api.wait(unique)["status"] == "Completed"
    log = api.get(f"/jobs/{unique}/logs").text
    assert log == "a False second\nb True second\nc False own\n"


def test_a_member_whose_bytes_are_cut_short_is_refused(api, kaio_server):
    """The gzip stream is whole, but the tar inside ends halfway through a member's bytes."""
    head = tarfile.TarInfo("train.py")
    head.size = 1000
    raw = head.tobuf(tarfile.GNU_FORMAT) + b"print('half')\n"
    presigned = api.presign(job_name="cut-member")
    r = requests.put(presigned["upload_url"], data=gzip.compress(raw), timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("package: not a readable tar.gz (unexpected end of data")
    job_dir = kaio_server.data_dir / "jobs" / presigned["unique_job_name"]
    assert temp_files(job_dir) == [] and not (job_dir / "pkg").exists()


def test_a_sparse_member_made_by_gnu_tar_is_unpacked_whole(api, tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "train.py").write_text(
        "import hashlib\nd = open('holes.bin', 'rb').read()\n"
        "print(len(d), hashlib.sha256(d).hexdigest())\n"
    )
    with open(folder / "holes.bin", "wb") as f:  # data, a 1 MiB hole, data
        f.write(b"start")
        f.seek(1024**2, os.SEEK_CUR)
        f.write(b"end")
    expected = b"start" + bytes(1024**2) + b"end"
    package = tmp_path / "sparse.tar.gz"
    subprocess.run(
        ["tar", "--sparse", "--format=gnu", "-czf", str(package), "-C", str(folder), "."],
        check=True,
    )
    with tarfile.open(package) as tf:
        assert tf.getmember("./holes.bin").sparse  # tarfile reads it as sparse: the other path
    unique = api.submit(package.read_bytes(), job_name="sparse")
    assert api.wait(unique)["status"] == "Completed"
    log = api.get(f"/jobs/{unique}/logs").text
    assert log == f"{len(expected)} {hashlib.sha256(expected).hexdigest()}\n"


# ---- base packages (PUT /packages/<sha256>) ----------------------------------------------------


def test_a_base_package_is_unpacked_while_its_body_is_still_arriving(api, kaio_server):
    big = os.urandom(BIG)
    base = package_with(big)
    digest = hashlib.sha256(base).hexdigest()
    auth = {"Authorization": api.session.headers["Authorization"]}
    put = ChunkedPut(f"{api.url}/packages/{digest}", auth)
    put.send(base[:FIRST_PART])
    packages = kaio_server.data_dir / "packages" / api.login["project"]["id"]
    # Under the base package's temp folder, before the rest is sent: its first members.
    [train] = wait_for(lambda: list(packages.glob("*.tmp-*/*/train.py")), "unpacking began", 30)
    assert train.read_text() == TRAIN
    assert not (packages / digest).exists()  # nothing is in place yet
    put.send(base[FIRST_PART:])
    answer = put.finish()
    assert answer.startswith("HTTP/1.1 200"), answer
    assert (packages / digest / "package.tar.gz").read_bytes() == base
    assert (packages / digest / "tree" / "data" / "big.bin").read_bytes() == big
    assert list(packages.glob("*.tmp-*")) == []
    # A job on it sees its files.
    presigned = api.post(
        "/jobs/presign",
        json={
            "job_name": "on-streamed-base",
            "job_spec": {"instance_type": "ml.m5.large", "entrypoint": "train.py"},
            "base_package": digest,
        },
    ).json()
    r = requests.put(presigned["upload_url"], data=make_package({}), timeout=60)
    assert r.status_code == 200, r.text
    unique = presigned["unique_job_name"]
    assert api.wait(unique)["status"] == "Completed"
    log = api.get(f"/jobs/{unique}/logs").text
    assert log == f"{hashlib.sha256(big).hexdigest()}\nx,y\n1,2\n"


def test_a_base_package_cut_or_of_another_hash_leaves_nothing(api, kaio_server):
    base = package_with(os.urandom(BIG))
    digest = hashlib.sha256(base).hexdigest()
    auth = {"Authorization": api.session.headers["Authorization"]}
    packages = kaio_server.data_dir / "packages" / api.login["project"]["id"]
    put = ChunkedPut(f"{api.url}/packages/{digest}", auth)
    put.send(base[:FIRST_PART])
    wait_for(lambda: list(packages.glob("*.tmp-*/*/train.py")), "unpacking began", 30)
    put.drop()  # the client dies with most of the body unsent
    wait_for(lambda: list(packages.glob("*")) == [], "the half-made files removed", 30)
    wrong = ChunkedPut(f"{api.url}/packages/{'0' * 64}", auth)
    wrong.send(base)  # whole and valid, but not the bytes the URL names
    answer = wrong.finish()
    assert answer.startswith("HTTP/1.1 400"), answer
    assert "not the URL's" in answer
    assert list(packages.glob("*")) == []


def test_a_small_sized_body_cut_short_leaves_nothing_and_can_be_sent_again(api, kaio_server):
    """A body of at most ingest.SMALL_BODY_BYTES with its Content-Length is taken whole before
    anything is unpacked: cut short, nothing of it stays, and the job waits for its package."""
    package = make_package({"train.py": "print('small and whole')\n"})
    assert len(package) <= ingest.SMALL_BODY_BYTES
    presigned = api.presign(job_name="small-cut")
    unique, url = presigned["unique_job_name"], presigned["upload_url"]
    job_dir = kaio_server.data_dir / "jobs" / unique
    where = urlsplit(url)
    conn = socket.create_connection((where.hostname, where.port), timeout=60)
    conn.sendall(
        f"PUT {where.path}?{where.query} HTTP/1.1\r\nHost: {where.netloc}\r\n"
        f"Content-Length: {len(package)}\r\nConnection: close\r\n\r\n".encode()
        + package[: len(package) // 2]
    )
    wait_for(lambda: temp_files(job_dir) != [], "the server receiving the body", 30)
    conn.close()  # the client dies with half the body unsent
    wait_for(lambda: temp_files(job_dir) == [], "the part file removed", 30)
    assert not (job_dir / "pkg").exists() and not (job_dir / "package.tar.gz").exists()
    assert api.job(unique)["status"] == "Pending"
    assert requests.put(url, data=package, timeout=30).status_code == 200
    job = api.wait(unique)
    assert job["status"] == "Completed", job
    assert "small and whole" in api.get(f"/jobs/{unique}/logs").text
