"""Base packages from the client's side (docs/base-packages.md): Package.overlay and sha256,
Client.upload_base and presign(base_package=), and the executor sending a sweep's folder once.

Against a real local platform, through the fault proxy: it counts what is sent, and it plays a
server without the extension (no feature in /healthz, or no /packages routes)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest
from apply_support import check_exactly_once, check_outputs, list_jobs, write_project
from faultproxy import FaultProxy
from support import wait_for_job

import kaio_spec
from kaio_spec import Client
from kaio_spec.errors import InvalidInput
from kaio_spec.packaging import build_package

DATA_BYTES = 256 * 1024
READS_BOTH = (
    "import hashlib, json\n"
    "p = json.load(open('params.json'))\n"
    "digest = hashlib.sha256(open('data.bin', 'rb').read()).hexdigest()\n"
    "json.dump({'lr': p['lr'], 'data': digest}, open('seen.json', 'w'))\n"
)


@pytest.fixture
def folder(tmp_path):
    code = tmp_path / "code"
    (code / "conf").mkdir(parents=True)
    (code / "train.py").write_text(READS_BOTH)
    (code / "conf" / "base.yaml").write_text("a: 1\n")
    (code / "data.bin").write_bytes(os.urandom(DATA_BYTES))
    return code


def members(package) -> dict[str, bytes | None]:
    with package.open() as f:
        data = f.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        return {m.name: (tf.extractfile(m).read() if m.isfile() else None) for m in tf}


# ---- the package side ---------------------------------------------------------------------------


def test_an_overlay_holds_the_given_files_alone_as_a_package_of_its_own(folder):
    with build_package(folder, "train.py") as package:
        overlay = package.overlay({"params.json": '{"lr": 1}', "conf/run.yaml": "b: 2\n"})
        got = members(overlay)
        assert got == {"conf": None, "params.json": b'{"lr": 1}', "conf/run.yaml": b"b: 2\n"}
        assert overlay.paths() == ["conf/run.yaml", "params.json"]
        assert overlay.size < 1024 and overlay.path is None
        # The same files as with_files would add, whose content hash covers folder and files.
        whole = package.with_files({"params.json": '{"lr": 1}', "conf/run.yaml": "b: 2\n"})
        assert set(whole.paths()) == set(package.paths()) | set(overlay.paths())


def test_an_overlay_is_refused_where_with_files_is(folder):
    with build_package(folder, "train.py") as package:
        with pytest.raises(ValueError, match="already has a folder"):
            package.overlay({"conf": "a file where the package has a folder"})
        with pytest.raises(ValueError, match="is a file in the package"):
            package.overlay({"train.py/x.json": "{}"})
        with pytest.raises(ValueError, match="must be relative"):
            package.overlay({"../escape.json": "{}"})


def test_with_files_adds_a_file_into_a_folder_the_package_has(folder):
    with build_package(folder, "train.py") as package:
        whole = package.with_files({"conf/run.yaml": "b: 2\n"})
        got = members(whole)
        assert got["conf/base.yaml"] == b"a: 1\n" and got["conf/run.yaml"] == b"b: 2\n"


def test_sha256_is_that_of_the_package_bytes(folder):
    with build_package(folder, "train.py") as package:
        with package.open() as f:
            expected = hashlib.sha256(f.read()).hexdigest()
        assert package.sha256() == expected
        whole = package.with_files({"params.json": "{}"})
        assert whole.sha256() != expected  # its own bytes, not the folder's


# ---- the client against the local platform ----------------------------------------------------


def test_a_job_over_a_base_package_uploads_its_overlay_alone_and_sees_both(
    folder, kaio_server, api_key
):
    with FaultProxy(kaio_server.url) as proxy, build_package(folder, "train.py") as package:
        client = Client(proxy.url).login(api_key)
        assert "base-packages" in client.features()
        sha = client.upload_base(package)
        assert sha == package.sha256()
        assert proxy.body_sizes("PUT", f"/packages/{sha}") == [package.size]
        assert client.upload_base(package) == sha  # already there: asked, not sent again
        assert proxy.count("PUT", "/packages/.*") == 1

        params = {"params.json": json.dumps({"lr": 0.5})}
        answer = client.presign(
            package.with_files(params), job_name="on-base", entrypoint="train.py", base_package=sha
        )
        assert answer["base_package"] == sha
        overlay = package.overlay(params)
        client.upload(answer["unique_job_name"], answer["upload_url"], overlay)
        assert proxy.body_sizes("PUT", "/objects/.*") == [overlay.size]
        assert overlay.size < 1024 < DATA_BYTES

        job = wait_for_job(client, answer["unique_job_name"])
        assert job["status"] == "Completed", job
        out = folder.parent / "out"
        client.download_output(answer["unique_job_name"], str(out))
        seen = json.loads((out / "seen.json").read_text())
        digest = hashlib.sha256((folder / "data.bin").read_bytes()).hexdigest()
        assert seen == {"lr": 0.5, "data": digest}
        assert not (out / "data.bin").exists()  # the base's files are not outputs


def test_presign_refuses_a_base_package_that_is_not_a_sha256_before_sending(
    folder, kaio_server, api_key
):
    with FaultProxy(kaio_server.url) as proxy, build_package(folder, "train.py") as package:
        client = Client(proxy.url).login(api_key)
        with pytest.raises(InvalidInput, match="base_package: must be a SHA-256"):
            client.presign(package, job_name="bad", base_package="ABC")
        assert proxy.count("POST", "/jobs/presign") == 0


def test_a_server_without_the_feature_gets_no_base_package(folder, kaio_server, api_key):
    with FaultProxy(kaio_server.url) as proxy, build_package(folder, "train.py") as package:
        proxy.on("GET", "/healthz").status(404, "no route GET /healthz", times=None)
        client = Client(proxy.url).login(api_key)
        assert client.features() == frozenset()
        assert client.upload_base(package) is None
        assert proxy.count("GET", "/packages/.*") + proxy.count("PUT", "/packages/.*") == 0
        assert proxy.count("GET", "/healthz") == 1  # asked once per client


def test_a_server_listing_the_feature_without_the_routes_gets_no_base_package(
    folder, kaio_server, api_key
):
    with FaultProxy(kaio_server.url) as proxy, build_package(folder, "train.py") as package:
        proxy.on("*", "/packages/.*").status(404, "no route", times=None)
        client = Client(proxy.url).login(api_key)
        assert client.upload_base(package) is None


def test_a_refused_base_package_raises_with_the_servers_reason(folder, kaio_server, api_key):
    with FaultProxy(kaio_server.url) as proxy, build_package(folder, "train.py") as package:
        proxy.on("PUT", "/packages/.*").status(400, "body: its sha256 is not the URL's")
        client = Client(proxy.url).login(api_key)
        with pytest.raises(Exception, match="sha256 is not the URL's"):
            client.upload_base(package)


# ---- the executor ---------------------------------------------------------------------------------


def sweep_with_data(tmp_path, cells: int, **kw):
    manifest = write_project(tmp_path, cells=cells, **kw)
    (tmp_path / "code" / "data.bin").write_bytes(os.urandom(DATA_BYTES))
    return manifest


def test_apply_sends_the_folder_once_and_each_job_its_params_alone(tmp_path, kaio_server, api_key):
    manifest = sweep_with_data(tmp_path, cells=4)
    with FaultProxy(kaio_server.url) as proxy:
        client = Client(proxy.url).login(api_key)
        result = kaio_spec.apply(manifest, client=client)
        assert result.ok, result.to_json()
        assert len(proxy.body_sizes("PUT", "/packages/.*")) == 1
        assert proxy.body_sizes("PUT", "/packages/.*")[0] > DATA_BYTES
        uploads = proxy.body_sizes("PUT", "/objects/.*")
        assert len(uploads) == 4 and max(uploads) < 2048, uploads
    check_exactly_once(list_jobs(kaio_server.url, api_key), {j.job_name for j in result.jobs})
    check_outputs(manifest, 4)
    for job in result.jobs:
        assert not (job.outputs / "data.bin").exists()


def test_apply_uploads_whole_packages_to_a_server_without_base_packages(
    tmp_path, kaio_server, api_key
):
    manifest = sweep_with_data(tmp_path, cells=3)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on("GET", "/healthz").status(404, "no route GET /healthz", times=None)
        client = Client(proxy.url).login(api_key)
        result = kaio_spec.apply(manifest, client=client)
        assert result.ok, result.to_json()
        assert proxy.count("PUT", "/packages/.*") + proxy.count("GET", "/packages/.*") == 0
        assert proxy.count("GET", "/healthz") == 1  # asked once for the whole run
        uploads = proxy.body_sizes("PUT", "/objects/.*")
        assert len(uploads) == 3 and min(uploads) > DATA_BYTES, uploads
    check_outputs(manifest, 3)


def test_a_failed_overlay_upload_is_sent_again_as_an_overlay(tmp_path, kaio_server, api_key):
    """The presign took the base; the upload failed past the client's retries; the next round
    (recover.py) sends the overlay again, as the intent recorded, and the job runs."""
    manifest = sweep_with_data(tmp_path, cells=1)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on("PUT", "/objects/.*").status(503, times=2)
        client = Client(proxy.url, retries=1, backoff=0.01).login(api_key)
        result = kaio_spec.apply(manifest, client=client)
        assert result.ok, result.to_json()
        uploads = proxy.body_sizes("PUT", "/objects/.*")
        assert len(uploads) == 3 and max(uploads) < 2048, uploads
        assert proxy.count("POST", "/jobs/presign") == 1
    check_outputs(manifest, 1)


def test_a_base_package_the_server_forgot_means_whole_packages(tmp_path, kaio_server, api_key):
    """The presign answer does not echo the base (deleted meanwhile, say): the whole package."""
    manifest = sweep_with_data(tmp_path, cells=2)
    with FaultProxy(kaio_server.url) as proxy:

        def forget(body):
            body.pop("base_package", None)
            return body

        proxy.on("POST", "/jobs/presign").rewrite_json(forget, times=None)
        client = Client(proxy.url).login(api_key)
        result = kaio_spec.apply(manifest, client=client)
        assert result.ok, result.to_json()
        uploads = proxy.body_sizes("PUT", "/objects/.*")
        assert len(uploads) == 2 and min(uploads) > DATA_BYTES, uploads
    check_outputs(manifest, 2)
    state = json.loads((tmp_path / ".kaio" / "state.json").read_text())
    assert all("intent" not in rec for rec in state["jobs"].values())
