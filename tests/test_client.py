"""The Client against the real local platform (tests/conftest.py starts it): the seed's API,
validation before anything is uploaded, token renewal, and download_output's path safety."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import textwrap
import warnings
from pathlib import Path

import pytest
import requests
from faultproxy import FaultProxy
from support import wait_for_job

from kaio_spec import Client, PlatformError, catalog
from kaio_spec.client import check_package_fits
from kaio_spec.jobspec import JobSpec
from kaio_spec.packaging import build_package
from kaio_spec.validation import FieldError

WAIT_S = 90.0  # a hang detector, never a timing assertion


def wait(client: Client, unique: str, until=catalog.is_final) -> dict:
    """Until `until(status)`."""
    return wait_for_job(client, unique, lambda job: until(job["status"]), WAIT_S)


def folder(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


TRAIN = """\
    import json, os
    os.makedirs("results", exist_ok=True)
    with open("results/metrics.json", "w") as f:
        json.dump({"lr": os.environ.get("LR"), "host": os.environ["SM_CURRENT_HOST"]}, f)
    print("trained")
"""

WAIT_FOR_STOP = """\
    import time
    print("running", flush=True)
    while True:
        time.sleep(0.05)
"""


@pytest.fixture
def code(tmp_path) -> Path:
    return folder(tmp_path / "code", {"train.py": TRAIN, "data/x.csv": "a,b\n1,2\n"})


def quiet_submit(client: Client, **kw) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return client.submit_job(**kw)


# ---- login --------------------------------------------------------------------------------------


def test_login_returns_self_and_the_project(kaio_server, api_key):
    client = Client(kaio_server.url)
    assert client.login(api_key) is client
    assert set(client.project) >= {"id", "name"}
    assert api_key not in repr(client)


def test_a_refused_key_is_an_http_error_with_the_servers_reason(kaio_server):
    with pytest.raises(requests.HTTPError) as e:
        Client(kaio_server.url).login("kaio_not-a-real-key")
    assert e.value.response.status_code == 403
    assert (
        str(e.value)
        == "403 Forbidden: api_key: unknown or revoked (POST " + kaio_server.url + "/login)"
    )


def test_calls_before_login_say_so(kaio_server):
    with pytest.raises(RuntimeError, match=r"not logged in: call client\.login\(api_key\) first"):
        Client(kaio_server.url).get_jobs()


# ---- the job lifecycle --------------------------------------------------------------------------


# Distinctive enough that no timestamp or id in a job's record can contain it by chance.
LR_VALUE = "0.0314159"


def test_submit_run_and_download(client, code, tmp_path):
    result = client.submit_job(
        directory=str(code), job_name="train-lr", env={"LR": LR_VALUE}, labels={"cell": "a"}
    )
    assert result["status"] == "uploaded"
    assert result["job_name"] == "train-lr" and result["entrypoint"] == "train.py"
    assert result["unique_job_name"].endswith("-train-lr")
    assert result["env_names"] == ["LR"]
    assert len(result["content_hash"]) == 64 and result["package_bytes"] > 0
    unique = result["unique_job_name"]

    job = wait(client, unique)
    assert job["status"] == "Completed", job["failure_reason"]
    assert job["image_uri"] == result["image_uri"] and job["labels"] == {"cell": "a"}
    assert LR_VALUE not in json.dumps(job)  # values are never echoed

    files = client.download_output(unique, tmp_path / "out")
    assert all(isinstance(p, Path) for p in files)
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in files)
    assert names == ["logs/algo-1/stderr.log", "logs/algo-1/stdout.log", "results/metrics.json"]
    assert json.loads((tmp_path / "out/results/metrics.json").read_text()) == {
        "lr": LR_VALUE,
        "host": "algo-1",
    }
    assert "trained" in (tmp_path / "out/logs/algo-1/stdout.log").read_text()
    assert not list((tmp_path / "out").rglob("*.part"))


def test_submit_job_defaults(client, code, monkeypatch):
    monkeypatch.chdir(code)
    result = quiet_submit(client)  # directory=".", job_name="job", entrypoint="train.py"
    assert result["job_name"] == "job" and result["unique_job_name"].endswith("-job")
    job = wait(client, result["unique_job_name"])
    assert (job["instance_type"], job["instance_count"], job["volume_size_gb"]) == (
        "ml.m5.large",
        1,
        5,
    )
    assert job["status"] == "Completed"


def test_get_jobs_lists_newest_first_with_count(client, code):
    uniques = [
        quiet_submit(client, directory=code, job_name=f"n{i}")["unique_job_name"] for i in range(3)
    ]
    jobs = client.get_jobs()
    assert jobs["count"] == 3
    assert [j["unique_job_name"] for j in jobs["jobs"]] == uniques[::-1]


def test_archive_restore_and_delete_data(client, code, tmp_path):
    unique = quiet_submit(client, directory=code)["unique_job_name"]
    wait(client, unique)
    assert client.archive_job(unique)["archived"] is True
    assert client.get_jobs()["count"] == 0
    assert client.get_jobs(include_archived=True)["count"] == 1
    assert client.restore_job(unique)["archived"] is False
    assert client.delete_job_data(unique)["data_deleted"] is True
    assert client.download_output(unique, tmp_path / "none") == []


def test_stop_job(client, tmp_path):
    code = folder(tmp_path / "forever", {"train.py": WAIT_FOR_STOP})
    unique = quiet_submit(client, directory=code)["unique_job_name"]
    wait(client, unique, until=lambda s: s == "InProgress")
    with pytest.raises(RuntimeError, match=rf"^job {unique} has not ended \(status InProgress\)"):
        client.download_output(unique, tmp_path / "early")
    assert client.stop_job(unique)["status"] in ("Stopping", "Stopped")
    assert wait(client, unique)["status"] == "Stopped"
    with pytest.raises(requests.HTTPError) as e:
        client.stop_job(unique)
    assert e.value.response.status_code == 409
    assert "status: the job already ended (Stopped)" in str(e.value)


def test_unknown_and_other_tenants_jobs_are_404(client, kaio_server, code):
    with pytest.raises(requests.HTTPError) as e:
        client.get_job("20260101-000000000-nope")
    assert e.value.response.status_code == 404
    other = Client(kaio_server.url).login(kaio_server.add_user())
    unique = quiet_submit(other, directory=code)["unique_job_name"]
    for call in (client.get_job, client.stop_job, client.download_output):
        with pytest.raises(requests.HTTPError) as e:
            call(unique)
        assert e.value.response.status_code == 404


def test_a_failed_jobs_logs_can_be_downloaded(client, tmp_path):
    code = folder(
        tmp_path / "fails",
        {"train.py": "import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)\n"},
    )
    unique = quiet_submit(client, directory=code)["unique_job_name"]
    job = wait(client, unique)
    assert job["status"] == "Failed"
    files = client.download_output(unique, tmp_path / "out")
    assert "boom" in (tmp_path / "out/logs/algo-1/stderr.log").read_text()
    assert files


def test_the_job_sees_the_merged_requirements_and_the_users_file_is_untouched(client, tmp_path):
    code = folder(
        tmp_path / "req",
        {
            "requirements.txt": "psutil\n",
            "train.py": "import shutil; shutil.copy('requirements.txt', 'seen.txt')\n",
        },
    )
    unique = quiet_submit(client, directory=code)["unique_job_name"]
    assert wait(client, unique)["status"] == "Completed"
    client.download_output(unique, tmp_path / "out")
    seen = (tmp_path / "out/seen.txt").read_text()
    assert seen.startswith("psutil\n") and "nbconvert" in seen and "GPUtil" in seen
    assert seen.count("psutil") == 1
    assert (code / "requirements.txt").read_text() == "psutil\n"


def test_submit_package_reuses_one_compressed_folder(client, tmp_path):
    code = folder(
        tmp_path / "sweep",
        {
            "train.py": "import json; p = json.load(open('params.json')); open('out.txt', 'w').write(str(p['lr']))\n"
        },
    )
    with build_package(code, "train.py") as base:
        results = [
            client.submit_package(
                base.with_files({"params.json": json.dumps({"lr": lr})}), job_name=f"lr-{i}"
            )
            for i, lr in enumerate([0.1, 0.01])
        ]
    hashes = {r["content_hash"] for r in results}
    assert len(hashes) == 2
    for r, lr in zip(results, ["0.1", "0.01"], strict=True):
        assert wait(client, r["unique_job_name"])["status"] == "Completed"
        client.download_output(r["unique_job_name"], tmp_path / r["job_name"])
        assert (tmp_path / r["job_name"] / "out.txt").read_text() == lr


def test_presign_then_upload_runs_the_job(client, code, tmp_path):
    with build_package(code, "train.py") as package:
        presign = client.presign(package, job_name="two-steps", env={"LR": "0.5"})
        assert {"unique_job_name", "upload_url", "s3_uri", "env_names"} <= set(presign)
        assert presign["env_names"] == ["LR"]
        unique = presign["unique_job_name"]
        assert client.get_job(unique)["status"] == "Pending"  # nothing uploaded yet
        client.upload(unique, presign["upload_url"], package)
    job = wait(client, unique)
    assert job["status"] == "Completed", job["failure_reason"]
    client.download_output(unique, tmp_path / "out")
    metrics = json.loads((tmp_path / "out/results/metrics.json").read_text())
    assert metrics == {"lr": "0.5", "host": "algo-1"}


def test_presign_checks_like_submit_package_before_sending(client, code):
    before = client.get_jobs()["count"]
    with build_package(code, "train.py") as package:
        with pytest.raises(FieldError, match="entrypoint"):
            client.presign(package, entrypoint="other.py")
        with pytest.raises(FieldError, match="instance_count"):
            client.presign(package, instance_count=0)
        with pytest.raises(FieldError, match="volume_size_gb"):
            client.presign(package, volume_size_gb=0)
    assert client.get_jobs()["count"] == before


def test_a_job_spec_made_once_is_submitted_as_it_was_checked(client, code, tmp_path):
    # The user builds the job's fields once (checked then, before any package exists), and
    # submits a package with them: the platform has the job exactly as specified.
    with pytest.raises(FieldError, match="instance_count") as bad:
        JobSpec(job_name="spec", instance_count=0)
    assert bad.value.path == ("instance_count",)
    spec = JobSpec(
        job_name="spec",
        instance_type="ml.c5.xlarge",
        volume_size_gb=3,
        env={"LR": "0.25"},
        max_runtime_hours=0.5,
        labels={"team": "a"},
    )
    assert "0.25" not in repr(spec)  # env values may be secrets: never shown
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.job_name = "other"  # type: ignore[misc]
    with build_package(code, "train.py") as package:
        with pytest.raises(TypeError, match="not both"):
            client.submit_package(package, spec, job_name="other")
        result = client.submit_package(package, spec)
    assert result["job_name"] == "spec" and result["entrypoint"] == "train.py"
    job = wait(client, result["unique_job_name"])
    assert job["status"] == "Completed", job["failure_reason"]
    assert (job["job_name"], job["instance_type"], job["labels"]) == (
        "spec",
        "ml.c5.xlarge",
        spec.labels,
    )
    assert job["volume_size_gb"] == 3
    client.download_output(result["unique_job_name"], tmp_path / "out")
    assert json.loads((tmp_path / "out/results/metrics.json").read_text())["lr"] == "0.25"


def test_get_logs_returns_the_bytes_and_the_next_offset(client, code):
    unique = quiet_submit(client, directory=code)["unique_job_name"]
    assert wait(client, unique)["status"] == "Completed"
    log, offset = b"", 0
    while True:
        data, next_offset = client.get_logs(unique, offset=offset)
        assert next_offset == offset + len(data)
        if not data:
            break
        log, offset = log + data, next_offset
    assert b"trained" in log
    assert client.get_logs(unique, host="algo-1", offset=offset, stream="stdout") == (b"", offset)
    data, end = client.get_logs(unique, stream="stderr")
    assert end == len(data)


def test_get_logs_of_another_tenants_or_no_job_is_404(client, kaio_server, code):
    other = Client(kaio_server.url).login(kaio_server.add_user())
    theirs = quiet_submit(other, directory=code)["unique_job_name"]
    for unique in (theirs, "20260101-000000000-nope"):
        with pytest.raises(requests.HTTPError) as e:
            client.get_logs(unique)
        assert e.value.response.status_code == 404
    assert wait(other, theirs)["status"] == "Completed"
    with pytest.raises(requests.HTTPError) as e:
        client.get_logs(theirs)
    assert e.value.response.status_code == 404


def test_get_logs_of_a_host_the_job_lacks_is_400(client, code):
    unique = quiet_submit(client, directory=code)["unique_job_name"]
    with pytest.raises(requests.HTTPError) as e:
        client.get_logs(unique, host="algo-2")
    assert e.value.response.status_code == 400


def test_a_notebook_entrypoint(client, tmp_path):
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": ["open('nb.txt', 'w').write('ran')"],
            }
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    code = tmp_path / "nb"
    code.mkdir()
    (code / "analysis.ipynb").write_text(json.dumps(nb))
    unique = quiet_submit(client, directory=code, entrypoint="analysis.ipynb")["unique_job_name"]
    job = wait(client, unique)
    assert job["status"] == "Completed", job["failure_reason"]
    client.download_output(unique, tmp_path / "out")
    assert (tmp_path / "out/nb.txt").read_text() == "ran"


# ---- validation before anything is uploaded ------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"instance_type": "ml.g4dn.xlarg"},
            "instance_type: unknown instance type 'ml.g4dn.xlarg'; closest supported: ml.g4dn.xlarge, ml.g4dn.8xlarge, ml.g4dn.4xlarge",
        ),
        ({"volume_size_gb": 0}, "volume_size_gb: must be between 1 and 50, got 0"),
        ({"volume_size_gb": 51}, "volume_size_gb: must be between 1 and 50, got 51"),
        ({"instance_count": 0}, "instance_count: must be at least 1, got 0"),
        ({"entrypoint": "train.sh"}, "entrypoint: 'train.sh' must be a .py or .ipynb file"),
        (
            {"entrypoint": "src/train.py"},
            "entrypoint: 'src/train.py' must be a file at the top of the directory, with no folder part",
        ),
        (
            {"job_name": "bad name"},
            "job_name: 'bad name' must be 1-63 letters, digits and '-', starting with a letter or digit",
        ),
        (
            {"env": {"SM_HOSTS": "x"}},
            "env.SM_HOSTS: names starting with SM_, SAGEMAKER_, KAIO_ are reserved",
        ),
        ({"env": {"PATH": "/x"}}, "env.PATH: is reserved by the platform; choose another name"),
        ({"env": {"2X": "1"}}, "env.2X: names must match [A-Za-z_][A-Za-z0-9_]*"),
        ({"env": {"LR": 0.1}}, "env.LR: value must be a string, got float"),
        ({"max_runtime_hours": 0}, "max_runtime_hours: must be a number of hours above 0, got 0"),
        ({"labels": {"a": 1}}, "labels.a: keys and values must be strings"),
        (
            {"input_data": "s3://bucket/data"},
            "input_data: is not implemented yet; put the data in the job's directory, which is packaged with the code (leave large files out of it with .kaioignore)",
        ),
        (
            {"instance_type": "ml.g4dn.xlarge", "framework": "sklearn"},
            "framework: scikit-learn images are CPU-only, and ml.g4dn.xlarge is a GPU instance; pick a CPU instance type (ml.m5.*, ml.c5.*) or framework='pytorch' or 'tensorflow'",
        ),
        ({"framework": "jax"}, "framework: must be one of pytorch, tensorflow, sklearn, got 'jax'"),
    ],
)
def test_invalid_fields_fail_before_anything_is_uploaded(client, code, kwargs, message):
    with pytest.raises(ValueError) as e:
        client.submit_job(directory=str(code), **kwargs)
    assert str(e.value) == message
    assert isinstance(e.value, FieldError)
    assert client.get_jobs()["count"] == 0


def test_missing_directory_and_entrypoint_are_file_not_found(client, code, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        client.submit_job(directory=str(tmp_path / "nowhere"))
    assert str(e.value) == f"directory {str(tmp_path / 'nowhere')!r} does not exist"
    with pytest.raises(FileNotFoundError) as e:
        client.submit_job(directory=str(code), entrypoint="main.py")
    assert str(e.value) == (
        f"entrypoint 'main.py' not found in {str(code)!r}: it must be a file at the top of the directory"
    )
    (code / "sub").mkdir()
    (code / "sub" / "main.py").write_text("")
    with pytest.raises(FileNotFoundError):
        client.submit_job(directory=str(code / "train.py"))
    assert client.get_jobs()["count"] == 0


def test_an_ignored_entrypoint_fails_before_upload(client, code):
    (code / ".kaioignore").write_text("*.py\n")
    with pytest.raises(ValueError, match=r"^entrypoint: 'train\.py' is left out of the package"):
        client.submit_job(directory=str(code))
    assert client.get_jobs()["count"] == 0


@pytest.mark.parametrize(
    ("package_bytes", "volume", "message"),
    [
        (
            3 * 1024**3,
            5,
            "volume_size_gb: the package is 3.00 GB, more than half of a 5 GB volume (the job "
            "unpacks it on the volume); use volume_size_gb=6 or more",
        ),
        (
            600 * 1024**2,
            1,
            "volume_size_gb: the package is 600.0 MB, more than half of a 1 GB volume (the job "
            "unpacks it on the volume); use volume_size_gb=2 or more",
        ),
        (
            5 * 1024**3 + 1,
            50,
            "directory: the package is 5.00 GB, over the 5.00 GB upload limit; leave data out of it with .kaioignore",
        ),
    ],
)
def test_a_package_over_half_the_volume_names_the_smallest_that_fits(
    package_bytes, volume, message
):
    with pytest.raises(ValueError) as e:
        check_package_fits(package_bytes, volume)
    assert str(e.value) == message


def test_a_package_that_fits(tmp_path):
    check_package_fits(512 * 1024**2, 1)
    check_package_fits(int(2.5 * 1024**3), 5)


def test_a_real_package_too_big_for_its_volume_is_refused_before_upload(client, tmp_path):
    # 1 GB volume: the package may be 512 MB. Random bytes do not compress.
    code = folder(tmp_path / "big", {"train.py": ""})
    block = os.urandom(1024**2)  # repeats lie beyond deflate's 32 KiB window: incompressible
    with open(code / "weights.bin", "wb") as f:
        for _ in range(520):
            f.write(block)
    with pytest.raises(
        ValueError,
        match=r"^volume_size_gb: the package is 520\.\d MB, more than half of a 1 GB volume .* use volume_size_gb=2 or more$",
    ):
        client.submit_job(directory=str(code), volume_size_gb=1)
    assert client.get_jobs()["count"] == 0


def test_c5_large_warns_that_the_hosted_platform_may_refuse_it(client, code):
    with pytest.warns(
        UserWarning, match=r"ml\.c5\.large is not a SageMaker Processing instance type"
    ):
        result = client.submit_job(directory=str(code), instance_type="ml.c5.large")
    assert wait(client, result["unique_job_name"])["status"] == "Completed"


# ---- tokens ---------------------------------------------------------------------------------------


def logins(proxy: FaultProxy) -> int:
    return proxy.count("POST", "/login")


def test_a_token_near_its_end_is_renewed_before_the_call(server_factory):
    server = server_factory(token_ttl=30)  # always under the 60 s margin
    with FaultProxy(server.url) as proxy:
        client = Client(proxy.url).login(server.add_user())
        assert logins(proxy) == 1
        client.get_jobs()
        client.get_jobs()
        assert logins(proxy) == 3
        assert proxy.seen[-2:] == [("POST", "/login"), ("GET", "/jobs")]


def test_a_fresh_token_is_not_renewed(kaio_server, api_key):
    with FaultProxy(kaio_server.url) as proxy:
        client = Client(proxy.url).login(api_key)
        for _ in range(3):
            client.get_jobs()
        assert logins(proxy) == 1


def test_a_401_logs_in_again_once_and_repeats_the_call(kaio_server, api_key):
    with FaultProxy(kaio_server.url) as proxy:
        client = Client(proxy.url).login(api_key)
        proxy.on("GET", "/jobs").status(401, "token: expired")
        assert client.get_jobs()["count"] == 0
        assert logins(proxy) == 2
        assert proxy.count("GET", "/jobs") == 2


def test_a_second_401_is_an_error(kaio_server, api_key):
    with FaultProxy(kaio_server.url) as proxy:
        client = Client(proxy.url).login(api_key)
        proxy.on("GET", "/jobs").status(401, "token: expired", times=2)
        with pytest.raises(requests.HTTPError) as e:
            client.get_jobs()
        assert e.value.response.status_code == 401
        assert "token: expired" in str(e.value)
        assert logins(proxy) == 2


def test_a_revoked_key_ends_in_403_after_one_fresh_login(kaio_server):
    from kaio_spec.server.auth import DISPLAY_PREFIX_LEN
    from kaio_spec.server.store import Store

    key = kaio_server.add_user()
    client = Client(kaio_server.url).login(key)
    store = Store(kaio_server.data_dir)
    try:
        store.revoke_key(key[:DISPLAY_PREFIX_LEN])
    finally:
        store.close()
    with pytest.raises(requests.HTTPError) as e:
        client.get_jobs()
    assert e.value.response.status_code == 403


# ---- verbose output never shows secrets ---------------------------------------------------------


def test_verbose_logs_requests_but_no_key_token_env_value_or_signature(
    kaio_server, api_key, code, capfd
):
    secret = "v3ry-secret-env-value"
    client = Client(kaio_server.url, verbose=True).login(api_key)
    result = quiet_submit(client, directory=str(code), env={"API_TOKEN": secret})
    wait(client, result["unique_job_name"])
    client.download_output(result["unique_job_name"], code.parent / "out")
    err = capfd.readouterr().err
    assert "POST " in err and "/jobs/presign -> 200" in err and "PUT " in err
    for leaked in (api_key, client._jwt, secret, "signature=", "expires="):
        assert leaked not in err


def test_a_quiet_client_prints_nothing(kaio_server, api_key, code, capfd):
    client = Client(kaio_server.url).login(api_key)
    result = quiet_submit(client, directory=str(code), env={"API_TOKEN": "x"})
    wait(client, result["unique_job_name"])
    client.download_output(result["unique_job_name"], code.parent / "out")
    assert capfd.readouterr() == ("", "")


def test_the_client_log_can_be_read_through_logging(client, caplog):
    with caplog.at_level(logging.DEBUG, logger="kaio_spec.client"):
        client.get_jobs()
    assert any(
        r.getMessage().startswith("GET ") and "/jobs -> 200" in r.getMessage()
        for r in caplog.records
    )


# ---- download_output path safety -----------------------------------------------------------------


@pytest.fixture
def finished(client, code) -> str:
    unique = quiet_submit(client, directory=str(code))["unique_job_name"]
    assert wait(client, unique)["status"] == "Completed"
    return unique


def _hostile(name: str):
    def rewrite(body):
        rows = body["output_files"]
        return {"output_files": [[name, rows[0][1], rows[0][2]], *rows]}

    return rewrite


@pytest.mark.parametrize(
    "name",
    [
        "../evil.txt",
        "a/../../evil.txt",
        "/tmp/evil.txt",
        "C:/evil.txt",
        "a\\..\\evil.txt",
        "",
        ".",
        "a//b",
        "./x",
    ],
)
def test_download_refuses_paths_outside_output_dir(kaio_server, api_key, finished, tmp_path, name):
    with FaultProxy(kaio_server.url) as proxy:
        client = Client(proxy.url).login(api_key)
        proxy.on("GET", "/jobs/download/.*").rewrite_json(_hostile(name))
        out = tmp_path / "deep" / "out"
        with pytest.raises(
            PlatformError, match="would land outside the output directory; nothing was downloaded"
        ):
            client.download_output(finished, out)
    assert not list(out.rglob("*"))  # nothing at all was written
    assert not (tmp_path / "deep" / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_download_refuses_to_write_through_a_link_in_output_dir(
    kaio_server, api_key, finished, tmp_path
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(elsewhere, out / "link")
    with FaultProxy(kaio_server.url) as proxy:
        client = Client(proxy.url).login(api_key)
        proxy.on("GET", "/jobs/download/.*").rewrite_json(_hostile("link/evil.txt"))
        with pytest.raises(PlatformError):
            client.download_output(finished, out)
    assert list(elsewhere.iterdir()) == []


def test_download_replaces_a_link_at_the_target_instead_of_following_it(client, finished, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    out = tmp_path / "out"
    (out / "logs" / "algo-1").mkdir(parents=True)
    os.symlink(victim, out / "logs" / "algo-1" / "stdout.log")
    client.download_output(finished, out)
    assert victim.read_text() == "untouched"
    assert not (out / "logs/algo-1/stdout.log").is_symlink()


def test_download_into_output_dir_that_is_itself_a_link(client, finished, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "alias")
    files = client.download_output(finished, tmp_path / "alias")
    assert (real / "results/metrics.json").is_file() and files


# ---- upload streams from disk ---------------------------------------------------------------------


def test_upload_memory_stays_flat(kaio_server, api_key, tmp_path):
    """A child submits a ~150 MB (incompressible) package and reports its own peak memory."""
    code = folder(tmp_path / "heavy", {"train.py": "print('ok')\n"})
    with open(code / "blob.bin", "wb") as f:
        for _ in range(150):
            f.write(os.urandom(1024**2))
    script = textwrap.dedent(
        f"""
        import re, warnings
        warnings.simplefilter("ignore")
        from kaio_spec import Client
        c = Client({kaio_server.url!r}).login({api_key!r})
        r = c.submit_job(directory={str(code)!r}, volume_size_gb=1)
        print(r["unique_job_name"], r["package_bytes"])
        print(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    (unique, size), (peak_kb,) = (line.split() for line in out.stdout.strip().splitlines())
    assert int(size) > 150 * 1024**2
    peak_mb = int(peak_kb) / 1024
    assert peak_mb < 100, f"peak {peak_mb:.0f} MB to package and upload {int(size) >> 20} MB"
    client = Client(kaio_server.url).login(api_key)
    assert wait(client, unique)["status"] == "Completed"


def test_package_bytes_arrive_intact(client, code, tmp_path):
    """What the server unpacked is what was packaged: the job lists its own folder."""
    (code / "train.py").write_text(
        "import os, json\n"
        "files = sorted(os.path.join(r, f) for r, _, fs in os.walk('.') for f in fs)\n"
        "json.dump(files, open('listing.json', 'w'))\n"
    )
    unique = quiet_submit(client, directory=str(code))["unique_job_name"]
    assert wait(client, unique)["status"] == "Completed"
    client.download_output(unique, tmp_path / "out")
    listing = json.loads((tmp_path / "out/listing.json").read_text())
    assert {"./train.py", "./data/x.csv", "./requirements.txt"} <= set(listing)


def test_saved_package_is_a_plain_tar_gz(code, tmp_path):
    with build_package(code, "train.py") as p:
        data = p.save(tmp_path / "p.tar.gz").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|gz") as tf:
        assert "train.py" in [m.name for m in tf]
