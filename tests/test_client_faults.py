"""The Client through a fault-injecting proxy (tests/faultproxy.py) in front of the real local
platform: what is retried (idempotent requests, the upload, downloads), what never is (the presign
POST), and how a lost presign answer is recovered from."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import pytest
import requests
from faultproxy import FaultProxy
from support import wait_for_job

from kaio_spec import Client
from kaio_spec.transport import Transport, read_timed_out

PRESIGN = "/jobs/presign"
UPLOAD = "/objects/.*/package.tar.gz"
OUTPUT = "/objects/.*/outputs/.*"


@pytest.fixture
def proxy(kaio_server):
    with FaultProxy(kaio_server.url) as p:
        yield p


@pytest.fixture
def pclient(proxy, api_key) -> Client:
    """A client whose every request, presigned ones included, passes through the proxy."""
    return Client(proxy.url, backoff=0.01).login(api_key)


@pytest.fixture
def code(tmp_path) -> Path:
    root = tmp_path / "code"
    root.mkdir()
    (root / "train.py").write_text("open('out.txt', 'w').write('x' * 5000)\n")
    return root


def submit(client: Client, code: Path, **kw) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return client.submit_job(directory=str(code), **kw)


wait = wait_for_job


# ---- idempotent requests are retried ------------------------------------------------------------


@pytest.mark.parametrize("code_", [502, 503, 504])
def test_get_is_retried_on_gateway_errors(pclient, proxy, code_):
    proxy.on("GET", "/jobs").status(code_, times=2)
    assert pclient.get_jobs()["count"] == 0
    assert proxy.count("GET", "/jobs") == 3


def test_get_gives_up_with_the_last_answers_reason(pclient, proxy):
    proxy.on("GET", "/jobs").status(503, "maintenance", times=None)
    with pytest.raises(requests.HTTPError) as e:
        pclient.get_jobs()
    assert e.value.response.status_code == 503
    assert "503 Service Unavailable: maintenance" in str(e.value)
    assert proxy.count("GET", "/jobs") == 1 + 4  # the first try and DEFAULT_RETRIES more


def test_get_is_retried_after_a_connection_reset(pclient, proxy):
    proxy.on("GET", "/jobs").reset()
    assert pclient.get_jobs()["count"] == 0
    assert proxy.count("GET", "/jobs") == 2


def test_a_slow_answer_is_waited_for(pclient, proxy):
    proxy.on("GET", "/jobs").delay(0.3)
    assert pclient.get_jobs()["count"] == 0


def test_a_400_is_not_retried(pclient, proxy):
    with pytest.raises(requests.HTTPError):
        pclient.get_job("no-such-job")
    assert proxy.count("GET", "/jobs/status/no-such-job") == 1


def test_an_unreachable_server_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(requests.ConnectionError):
            Client(f"http://127.0.0.1:{port}", backoff=0.01).login("key")


# ---- POSTs are never retried once they may have reached the server ------------------------------


def test_presign_is_not_retried_on_503(pclient, proxy, code):
    proxy.on("POST", PRESIGN).status(503, "overloaded")
    with pytest.raises(requests.HTTPError) as e:
        submit(pclient, code)
    assert e.value.response.status_code == 503 and "overloaded" in str(e.value)
    assert proxy.count("POST", PRESIGN) == 1
    assert proxy.count("PUT", UPLOAD) == 0


def test_presign_is_not_retried_after_a_reset(pclient, proxy, code):
    proxy.on("POST", PRESIGN).reset()
    with pytest.raises(requests.ConnectionError):
        submit(pclient, code)
    assert proxy.count("POST", PRESIGN) == 1


def test_a_lost_presign_answer_leaves_one_pending_job_to_find_by_name(pclient, proxy, code):
    """The server acted on the presign but its answer was lost: the client must not send it
    again (that would make a second job). The caller finds the job by name: it is Pending, never
    uploaded, and never starts; submitting again makes the job that runs."""
    proxy.on("POST", PRESIGN).drop_response()
    with pytest.raises(requests.ConnectionError):
        submit(pclient, code, job_name="lost-answer", labels={"cell": "7"})
    assert proxy.count("POST", PRESIGN) == 1
    found = [j for j in pclient.get_jobs()["jobs"] if j["job_name"] == "lost-answer"]
    assert len(found) == 1
    assert found[0]["status"] == "Pending" and found[0]["labels"] == {"cell": "7"}
    again = submit(pclient, code, job_name="lost-answer")
    assert wait(pclient, again["unique_job_name"])["status"] == "Completed"
    assert pclient.get_job(found[0]["unique_job_name"])["status"] == "Pending"
    assert pclient.get_jobs()["count"] == 2


def test_stop_is_not_retried(pclient, proxy):
    proxy.on("POST", "/jobs/.*/stop").status(503)
    with pytest.raises(requests.HTTPError):
        pclient.stop_job("whatever")
    assert proxy.count("POST", "/jobs/whatever/stop") == 1


def test_login_is_not_retried_after_a_reset(kaio_server, proxy, api_key):
    proxy.on("POST", "/login").reset()
    with pytest.raises(requests.ConnectionError):
        Client(proxy.url, backoff=0.01).login(api_key)
    assert proxy.count("POST", "/login") == 1


# ---- the upload is re-sent from disk ------------------------------------------------------------


@pytest.mark.parametrize("fault", ["reset", "503", "502"])
def test_upload_is_sent_again(pclient, proxy, code, fault):
    rule = proxy.on("PUT", UPLOAD)
    rule.reset() if fault == "reset" else rule.status(int(fault))
    result = submit(pclient, code)
    assert proxy.count("PUT", UPLOAD) == 2
    assert wait(pclient, result["unique_job_name"])["status"] == "Completed"


def test_upload_whose_answer_was_lost_is_sent_again_safely(pclient, proxy, code):
    # The server stored the package, then the answer vanished: the second PUT must not fail
    # the submission, and there is still exactly one job.
    proxy.on("PUT", UPLOAD).drop_response()
    result = submit(pclient, code)
    assert proxy.count("PUT", UPLOAD) == 2
    assert wait(pclient, result["unique_job_name"])["status"] == "Completed"
    assert pclient.get_jobs()["count"] == 1


def test_upload_gives_up_after_its_retries(pclient, proxy, code):
    proxy.on("PUT", UPLOAD).reset(times=None)
    with pytest.raises(requests.ConnectionError):
        submit(pclient, code)
    assert proxy.count("PUT", UPLOAD) == 1 + 4


# ---- downloads ---------------------------------------------------------------------------------


@pytest.fixture
def finished(pclient, code) -> str:
    unique = submit(pclient, code)["unique_job_name"]
    assert wait(pclient, unique)["status"] == "Completed"
    return unique


def test_a_download_cut_short_is_fetched_again_whole(pclient, proxy, finished, tmp_path):
    proxy.on("GET", "/objects/.*/outputs/out.txt").truncate(100)
    files = pclient.download_output(finished, tmp_path / "out")
    assert (tmp_path / "out/out.txt").read_text() == "x" * 5000
    assert proxy.count("GET", "/objects/.*/outputs/out.txt") == 2
    assert not list((tmp_path / "out").rglob("*.part")) and files


def test_download_retries_gateway_errors_and_resets(pclient, proxy, finished, tmp_path):
    proxy.on("GET", OUTPUT).status(503, times=2)
    proxy.on("GET", "/jobs/download/.*").reset()
    files = pclient.download_output(finished, tmp_path / "out")
    assert len(files) == 3 and (tmp_path / "out/out.txt").read_text() == "x" * 5000


def test_a_failed_download_leaves_no_partial_file(pclient, proxy, finished, tmp_path):
    proxy.on("GET", "/objects/.*/outputs/out.txt").truncate(100, times=None)
    with pytest.raises(requests.RequestException):
        pclient.download_output(finished, tmp_path / "out")
    assert not (tmp_path / "out/out.txt").exists()
    assert not list((tmp_path / "out").rglob("*.part"))


@pytest.mark.parametrize("retries", [0, 2])
def test_a_read_timeout_is_told_from_an_unreachable_server(kaio_server, proxy, retries):
    # Client.features treats the first as "no extensions here" and raises the second.
    proxy.on("GET", "/healthz").delay(2.0, times=None)
    transport = Transport(proxy.url, retries=retries, backoff=0.01)
    with pytest.raises(requests.RequestException) as silent:
        transport.request("GET", "/healthz", timeout=(5, 0.3))
    assert read_timed_out(silent.value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there once closed
    with pytest.raises(requests.ConnectionError) as refused:
        Transport(f"http://127.0.0.1:{port}", retries=retries, backoff=0.01).request("GET", "/")
    assert not read_timed_out(refused.value)
