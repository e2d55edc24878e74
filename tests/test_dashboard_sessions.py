"""Sessions that end, headers that keep credentials out of caches, URLs that name the server's
own address, and an origin that loads nothing from elsewhere: against a real `kaio server`. The
browser side of the same (the Sign out button, a link arriving in a signed-in tab, /docs offline)
is in test_dashboard_browser_hardening.py."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
import requests
from server_support import Api
from support import run_kaio

from kaio_spec.server import auth


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def jobs_status(url: str, token: str) -> int:
    return requests.get(url + "/jobs", headers=bearer(token), timeout=10).status_code


def redeem_link(url: str, token: str) -> dict:
    """A sign-in link made with `token`, redeemed: the login it gives."""
    r = requests.post(url + "/dashboard/links", headers=bearer(token), timeout=10)
    assert r.status_code == 200, r.text
    r = requests.post(url + "/login/link", json={"code": r.json()["code"]}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


# ---- sign-out ---------------------------------------------------------------------------------


def test_logout_ends_the_token_and_only_that_one(kaio_server, api_key):
    url = kaio_server.url
    mine, other = Api(url, api_key), Api(url, api_key)  # two sessions of the same key
    token = mine.login["access_token"]
    assert jobs_status(url, token) == 200  # checked once: the server remembers it
    r = requests.post(url + "/logout", headers=bearer(token), timeout=10)
    assert r.status_code == 204, r.text
    r = requests.get(url + "/jobs", headers=bearer(token), timeout=10)
    assert r.status_code == 401 and "signed out" in r.json()["error"]
    # It cannot make a sign-in link either, nor sign out twice.
    assert requests.post(url + "/dashboard/links", headers=bearer(token)).status_code == 401
    assert requests.post(url + "/logout", headers=bearer(token), timeout=10).status_code == 401
    assert other.get("/jobs").status_code == 200  # the key's other session goes on
    assert requests.post(url + "/logout", timeout=10).status_code == 401  # no token: nothing


def test_a_signed_out_token_stays_out_after_a_restart(server_factory):
    server = server_factory()
    api = Api(server.url, server.add_user())
    token = api.login["access_token"]
    assert requests.post(server.url + "/logout", headers=bearer(token)).status_code == 204
    server.restart()
    assert jobs_status(server.url, token) == 401
    assert Api(server.url, api.api_key).get("/jobs").status_code == 200
    revoked = server.data_dir / auth.REVOKED_FILE
    assert revoked.stat().st_mode & 0o077 == 0
    assert token not in revoked.read_text()  # ids only, never a token


def test_revoked_ids_are_forgotten_once_their_tokens_expired(tmp_path):
    now = [1000.0]
    path = tmp_path / auth.REVOKED_FILE
    revoked = auth.RevokedTokens(path, clock=lambda: now[0])
    for i in range(100):
        revoked.revoke(f"old-{i}", 1500)
    revoked.revoke("late", 5000)
    assert "old-1" in revoked and "late" in revoked
    now[0] = 2000.0
    for i in range(200):  # enough new ones to prune the file
        revoked.revoke(f"new-{i}", 3000)
    assert "old-1" not in revoked and "late" in revoked
    reread = auth.RevokedTokens(path, clock=lambda: now[0])
    assert "old-1" not in reread and "late" in reread and "new-199" in reread
    assert "old-1" not in path.read_text()


# ---- sign-in links do not renew a session -----------------------------------------------------


def test_a_token_cannot_renew_itself_through_links(server_factory):
    """A token makes a link, the link gives a token, that one makes a link, ...: each keeps the
    expiry of the session an API key started, so the chain ends with it."""
    server = server_factory(token_ttl=4)
    api = Api(server.url, server.add_user())
    first = api.login
    time.sleep(1.2)  # so that a fresh token would expire later than the first
    second = redeem_link(server.url, first["access_token"])
    assert second["exp"] == first["exp"]
    time.sleep(1.2)
    third = redeem_link(server.url, second["access_token"])
    assert third["exp"] == first["exp"]
    assert jobs_status(server.url, third["access_token"]) == 200
    time.sleep(max(0.0, first["exp"] - time.time()) + 0.2)
    assert jobs_status(server.url, third["access_token"]) == 401
    # A key starts a new session, as ever.
    assert Api(server.url, api.api_key).get("/jobs").status_code == 200


def test_a_link_made_just_before_its_session_ends_gives_nothing_after(server_factory):
    server = server_factory(token_ttl=2)
    api = Api(server.url, server.add_user())
    code = api.post("/dashboard/links").json()["code"]
    time.sleep(max(0.0, api.login["exp"] - time.time()) + 0.2)
    r = requests.post(server.url + "/login/link", json={"code": code}, timeout=10)
    assert r.status_code == 403 and "code" in r.json()["error"]


# ---- headers ----------------------------------------------------------------------------------

OUTPUT_JOB = 'open("page.html", "w").write("<script>alert(1)</script>")\nprint("\\x1b[31mred")\n'


@pytest.fixture(scope="module")
def finished(kaio_server):
    """A tenant and a completed job of theirs with an HTML output."""
    api = Api(kaio_server.url, kaio_server.add_user())
    unique = api.submit({"train.py": OUTPUT_JOB}, job_name="outputs")
    assert api.wait(unique)["status"] == "Completed"
    return api, unique


def assert_private(r: requests.Response) -> None:
    assert r.headers.get("cache-control") == "no-store", (r.url, r.headers)
    assert r.headers.get("x-content-type-options") == "nosniff", (r.url, r.headers)


def test_credentials_and_tenant_data_are_never_cached(kaio_server, finished):
    api, unique = finished
    url = kaio_server.url
    answers = [
        requests.post(url + "/login", json={"api_key": api.api_key}, timeout=10),
        requests.post(url + "/login", json={"api_key": "kaio_nope"}, timeout=10),  # an error
        api.get("/jobs"),
        api.get(f"/jobs/status/{unique}"),
        api.get(f"/jobs/download/{unique}"),
        api.get(f"/jobs/{unique}/logs"),
        api.post("/dashboard/links"),
        api.get("/healthz"),
    ]
    for r in answers:
        assert r.status_code in (200, 403), r.text
        assert_private(r)
    assert answers[2].headers["etag"]  # GET /jobs still answers If-None-Match
    assert (
        api.get("/jobs", headers={"If-None-Match": answers[2].headers["etag"]}).status_code == 304
    )


def test_objects_are_downloads_that_are_never_cached(finished):
    api, unique = finished
    listing = api.get(f"/jobs/download/{unique}").json()["output_files"]
    page = next(u for rel, _, u in listing if rel == "page.html")
    r = requests.get(page, timeout=10)
    assert r.status_code == 200 and r.content == b"<script>alert(1)</script>"
    assert_private(r)
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == (
        "attachment; filename=\"page.html\"; filename*=UTF-8''page.html"
    )
    # A well-formed signature that is wrong (a malformed one is a 400): refused, not cached.
    signature = page.split("signature=")[1][:64]
    wrong = ("0" if signature[0] != "0" else "1") + signature[1:]
    bad = requests.get(page.replace(signature, wrong), timeout=10)
    assert bad.status_code == 403
    assert_private(bad)
    malformed = requests.get(page.replace("signature=", "signature=0"), timeout=10)
    assert malformed.status_code == 400
    assert_private(malformed)


def test_dashboard_files_keep_revalidating(kaio_server):
    r = requests.get(kaio_server.url + "/dashboard/app.js", timeout=10)
    assert r.headers["cache-control"] == "no-cache" and r.headers["etag"]


# ---- URLs name the server's configured address ------------------------------------------------


def raw_get(url: str, path: str, host: str, token: str) -> str:
    """GET with a Host header of our choosing (requests would send the URL's)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode()


def test_download_urls_ignore_the_host_header(kaio_server, finished):
    api, unique = finished
    answer = raw_get(
        kaio_server.url, f"/jobs/download/{unique}", "evil.example", api.login["access_token"]
    )
    assert " 200 " in answer.split("\r\n")[0]
    assert "evil.example" not in answer
    urls = re.findall(r'"(http[^"]+/objects/[^"]+)"', answer)
    assert urls and all(u.startswith(kaio_server.url + "/objects/") for u in urls)


def test_public_url_names_the_address_in_presigned_urls(server_factory):
    server = server_factory(public_url="https://kaio.example.org:8443/")
    api = Api(server.url, server.add_user())
    presigned = api.presign()
    assert presigned["upload_url"].startswith("https://kaio.example.org:8443/objects/")


@pytest.mark.parametrize(
    "value", ["ftp://x", "not a url", "http://", "http://h/?q=1", "http://u:p@h", "http://h:x"]
)
def test_a_bad_public_url_is_refused_with_exit_2(tmp_path, value):
    command = [sys.executable, "-m", "kaio_spec.cli", "server", "--data-dir", str(tmp_path / "d")]
    r = subprocess.run(
        [*command, "--port", "0", "--public-url", value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "--public-url" in r.stderr and repr(value) in r.stderr  # names the value, says why
    assert "Traceback" not in r.stderr


# ---- nothing from elsewhere -------------------------------------------------------------------


class _References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href", "action") and v]


def test_no_page_of_the_origin_references_another_host(kaio_server):
    """/ and /docs (Swagger UI, from the package's pinned copy) name only this origin's files,
    which all exist and carry the strict CSP; the HTML ones name no other host."""
    url = kaio_server.url
    for page in ("/", "/docs"):
        r = requests.get(url + page, timeout=10)
        assert r.status_code == 200
        assert "default-src 'self'" in r.headers["content-security-policy"]
        parser = _References()
        parser.feed(r.text)
        assert parser.refs, page
        for ref in parser.refs:
            if ref.startswith("#"):  # a place in the page itself
                continue
            assert ref.startswith("/") and not ref.startswith("//"), (page, ref)
            asset = requests.get(url + ref, timeout=10)
            assert asset.status_code == 200, (page, ref)
            assert asset.headers["content-security-policy"] == r.headers["content-security-policy"]
        assert not re.search(r"(?i)https?://|cdn", r.text), page
    assert requests.get(url + "/openapi.json", timeout=10).json()["paths"]


def test_kaio_dashboard_signs_its_own_token_out(server_factory, tmp_path):
    """The command logs in only to make the link: its token is signed out once the link is made,
    and the link still signs the tab in."""
    server = server_factory()
    key = server.add_user()
    env = {"KAIO_HOME": str(tmp_path / "home"), "KAIO_API_KEY": key}
    result = run_kaio("dashboard", "--no-browser", "--api", server.url, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = (server.data_dir / auth.REVOKED_FILE).read_text().splitlines()
    assert len(lines) == 1
    code = result.stdout.strip().rsplit("#signin=", 1)[1]
    r = requests.post(server.url + "/login/link", json={"code": code}, timeout=10)
    assert r.status_code == 200 and jobs_status(server.url, r.json()["access_token"]) == 200
