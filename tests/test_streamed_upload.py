"""submit_job uploading the package while it is compressed (the "streamed-upload" feature), against
the real local platform through the fault proxy: what the server stores is byte for byte the
package build_package makes of the folder, a cut upload is sent again whole, and a server without
the feature gets a sized upload of the finished package, as before."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from support import wait_for_job

from kaio_spec import Client
from kaio_spec.packaging import CHUNK_SIZE, build_package

UPLOAD = "/objects/.*/package.tar.gz"
READS_ALL = (
    "import hashlib, json\n"
    "digest = lambda p: hashlib.sha256(open(p, 'rb').read()).hexdigest()\n"
    "json.dump({p: digest(p) for p in ('data/table.csv', 'data/weights.npz')},\n"
    "          open('seen.json', 'w'))\n"
)


@pytest.fixture
def folder(tmp_path) -> Path:
    """Text that deflates and random bytes that are stored, over several compression chunks."""
    code = tmp_path / "code"
    (code / "data").mkdir(parents=True)
    (code / "train.py").write_text(READS_ALL)
    rows = "".join(f"{i},{i * 0.25:.3f},cell{i % 11}\n" for i in range(120_000))
    (code / "data" / "table.csv").write_text(rows)
    (code / "data" / "weights.npz").write_bytes(os.urandom(3 * CHUNK_SIZE + 4321))
    return code


@pytest.fixture
def proxy(kaio_server):
    with FaultProxy(kaio_server.url) as p:
        yield p


def submit(client: Client, folder: Path, **kw) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return client.submit_job(directory=str(folder), entrypoint="train.py", **kw)


def package_bytes(folder: Path) -> bytes:
    with build_package(folder, "train.py") as package, package.open() as f:
        return f.read()


def stored_on_server(kaio_server, unique: str) -> bytes:
    return (kaio_server.data_dir / "jobs" / unique / "package.tar.gz").read_bytes()


def check_job_saw_the_folder(client: Client, unique: str, folder: Path, out: Path) -> None:
    job = wait_for_job(client, unique)
    assert job["status"] == "Completed", job
    client.download_output(unique, str(out))
    seen = json.loads((out / "seen.json").read_text())
    for rel in ("data/table.csv", "data/weights.npz"):
        assert seen[rel] == hashlib.sha256((folder / rel).read_bytes()).hexdigest()


def test_submit_job_streams_the_package_and_the_server_gets_its_exact_bytes(
    folder, proxy, kaio_server, api_key, tmp_path
):
    client = Client(proxy.url).login(api_key)
    assert "streamed-upload" in client.features()
    result = submit(client, folder, job_name="streamed")
    expected = package_bytes(folder)
    # Sent chunked (no Content-Length: its size was not known when the upload began), whole.
    assert proxy.body_sizes("PUT", UPLOAD) == [0]
    assert [n for m, _, n in proxy.received if m == "PUT"] == [len(expected)]
    assert result["package_bytes"] == len(expected)
    # The same folder gives the same bytes: what the server stored is build_package's package.
    assert stored_on_server(kaio_server, result["unique_job_name"]) == expected
    check_job_saw_the_folder(client, result["unique_job_name"], folder, tmp_path / "out")


def test_a_streamed_upload_cut_midway_is_sent_again_whole(
    folder, proxy, kaio_server, api_key, tmp_path
):
    client = Client(proxy.url, backoff=0.01).login(api_key)
    proxy.on("PUT", UPLOAD).cut(256 * 1024)  # the first try dies after 256 KiB reached the server
    result = submit(client, folder, job_name="cut-once")
    expected = package_bytes(folder)
    assert proxy.body_sizes("PUT", UPLOAD) == [0, 0]  # both tries streamed
    assert [n for m, _, n in proxy.received if m == "PUT"] == [len(expected)]
    assert stored_on_server(kaio_server, result["unique_job_name"]) == expected
    check_job_saw_the_folder(client, result["unique_job_name"], folder, tmp_path / "out")
    named = [j for j in client.get_jobs()["jobs"] if j["job_name"] == "cut-once"]
    assert len(named) == 1  # one job, not one per try


def test_a_server_without_streamed_uploads_gets_the_finished_package_with_its_size(
    folder, proxy, kaio_server, api_key, tmp_path
):
    def without_streaming(health):
        return {**health, "features": [f for f in health["features"] if f != "streamed-upload"]}

    proxy.on("GET", "/healthz").rewrite_json(without_streaming)
    client = Client(proxy.url).login(api_key)
    result = submit(client, folder, job_name="sized")
    expected = package_bytes(folder)
    assert proxy.body_sizes("PUT", UPLOAD) == [len(expected)]  # Content-Length, as the hosted API
    assert stored_on_server(kaio_server, result["unique_job_name"]) == expected
    check_job_saw_the_folder(client, result["unique_job_name"], folder, tmp_path / "out")


def test_a_small_folder_is_sent_with_its_size_and_runs(proxy, kaio_server, api_key, tmp_path):
    """A small folder's package (client.SMALL_PACKAGE_BOUND) is finished before it is sent, with
    its Content-Length: the platform takes such a body whole (no streaming threads)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(
        "import json; json.dump(open('params.txt').read(), open('seen.json', 'w'))\n"
    )
    (code / "params.txt").write_text("lr=0.2\n")
    client = Client(proxy.url).login(api_key)
    result = submit(client, code, job_name="small")
    expected = package_bytes(code)
    assert proxy.body_sizes("PUT", UPLOAD) == [len(expected)]  # its size said, not chunked
    assert stored_on_server(kaio_server, result["unique_job_name"]) == expected
    job = wait_for_job(client, result["unique_job_name"])
    assert job["status"] == "Completed", job
    client.download_output(result["unique_job_name"], str(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "seen.json").read_text()) == "lr=0.2\n"


def test_a_file_gone_while_streaming_fails_the_submission_and_stops_its_job(
    proxy, api_key, tmp_path
):
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print('never runs')\n")
    (code / "a_first.bin").write_bytes(os.urandom(24 * CHUNK_SIZE))
    (code / "z_gone.txt").write_text("removed after the scan, before it is read\n")
    (code / "dangling").symlink_to(tmp_path / "nothing-here")  # warned about after the scan

    def remove_on_warning(message, *args, **kw):
        (code / "z_gone.txt").unlink(missing_ok=True)

    client = Client(proxy.url, backoff=0.01).login(api_key)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = remove_on_warning
        with pytest.raises(FileNotFoundError, match=r"z_gone\.txt"):
            client.submit_job(directory=str(code), job_name="gone-midway", entrypoint="train.py")
    assert proxy.count("POST", "/jobs/presign") == 1  # presigned before the package was done
    named = [j for j in client.get_jobs()["jobs"] if j["job_name"] == "gone-midway"]
    assert len(named) == 1
    job = wait_for_job(client, named[0]["unique_job_name"])
    assert job["status"] == "Stopped", job  # not left Pending for ever
    assert [n for m, _, n in proxy.received if m == "PUT"] == []  # nothing whole was sent
