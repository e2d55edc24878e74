"""The dashboard without a browser: how the server serves it (security headers, static files),
the one-time sign-in links behind `kaio dashboard`, the command itself, and static checks that
the page's files hold no inline code and never turn text into HTML. The browser tests are in
test_dashboard_browser.py."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from server_support import Api
from support import run_kaio

from kaio_spec.server.routes.dashboard import (
    DASHBOARD_CSP,
    DASHBOARD_DIR,
    DASHBOARD_TYPES,
    load_dashboard,
)
from kaio_spec.server.signin import SignInLinks

REPO = Path(__file__).resolve().parent.parent
EXPECTED_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def kaio(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`kaio ARGS` with no KAIO_ variable but `env`'s, and a home of its own: no saved
    `kaio login` and no auto-started local platform of the user's can answer instead."""
    home = tempfile.mkdtemp(prefix="kaio-dashboard-home-")
    own = {"KAIO_HOME": home, "XDG_CONFIG_HOME": os.path.join(home, "config")}
    return run_kaio(*args, env={**own, **(env or {})}, timeout=60)


# ---- serving the page ---------------------------------------------------------------------------


def test_root_serves_the_page_with_security_headers(kaio_server):
    r = requests.get(kaio_server.url + "/", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"] == EXPECTED_CSP == DASHBOARD_CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    assert '<script type="module" src="/dashboard/app.js"></script>' in r.text
    assert "set-cookie" not in r.headers


@pytest.mark.parametrize(
    ("name", "media"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
def test_assets_have_their_types_and_the_same_headers(kaio_server, name, media):
    r = requests.get(f"{kaio_server.url}/dashboard/{name}", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == media
    assert r.headers["content-security-policy"] == EXPECTED_CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.content == (DASHBOARD_DIR / name).read_bytes()


def test_assets_revalidate_with_etags(kaio_server):
    first = requests.get(kaio_server.url + "/dashboard/app.js", timeout=10)
    etag = first.headers["etag"]
    again = requests.get(
        kaio_server.url + "/dashboard/app.js", headers={"If-None-Match": etag}, timeout=10
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/nothing.js",
        "/dashboard/..%2Fapp.py",
        "/dashboard/%2E%2E%2F%2E%2E%2Fapp.py",
        "/dashboard/",
        "/dashboard/index.html/x",
        "/index.html",
    ],
)
def test_only_the_dashboards_own_files_are_served(kaio_server, path):
    r = requests.get(kaio_server.url + path, timeout=10)
    assert r.status_code == 404
    assert "error" in r.json()


def test_every_dashboard_file_is_served_and_packaged():
    """Each file is one the server serves (a known type) and one pyproject.toml ships."""
    # (tomllib is 3.11+; the project supports 3.10.)
    pyproject = (REPO / "pyproject.toml").read_text()
    found = re.search(r"\[tool\.setuptools\.package-data\]\s*kaio_spec = \[(.*?)\]", pyproject)
    globs = re.findall(r'"([^"]+)"', found.group(1))
    served = load_dashboard()
    files = sorted(p for p in DASHBOARD_DIR.iterdir() if p.is_file())
    assert {p.name for p in files} == set(served)
    # setuptools expands package-data patterns as recursive globs from the package folder.
    shipped = {m for g in globs for m in glob.glob(g, root_dir=REPO / "kaio_spec", recursive=True)}
    for path in files:
        assert path.suffix in DASHBOARD_TYPES
        assert path.relative_to(REPO / "kaio_spec").as_posix() in shipped, path
    assert {"index.html", "app.js", "style.css"} <= set(served)


# ---- static checks on the page's own files ------------------------------------------------------


class _Inline(HTMLParser):
    def __init__(self):
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = {k for k, _ in attrs}
        if tag == "script":
            self._in_script = True
            if "src" not in names:
                self.problems.append("a <script> without src")
        if tag == "style":
            self.problems.append("a <style> element")
        if "style" in names:
            self.problems.append(f"a style attribute on <{tag}>")
        self.problems += [f"{k} on <{tag}>" for k in names if k.startswith("on")]
        for k, v in attrs:
            if v and v.strip().lower().startswith("javascript:"):
                self.problems.append(f"a javascript: URL in {k}")
            if k in ("src", "href") and v and re.match(r"(?i)\s*(https?:)?//", v):
                self.problems.append(f"an external resource {v}")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.problems.append("an inline script body")


@pytest.mark.parametrize("page", ["index.html", "docs.html"])
def test_the_html_has_no_inline_code_and_fetches_nothing_external(page):
    parser = _Inline()
    parser.feed((DASHBOARD_DIR / page).read_text())
    assert parser.problems == []


# Sinks that parse text as HTML or code. The page builds every element with createElement and
# sets text with textContent (dom.js), so none of these may appear at all.
FORBIDDEN_JS = [
    r"\.innerHTML\b",
    r"\.outerHTML\b",
    r"insertAdjacentHTML",
    r"document\.write",
    r"\beval\s*\(",
    r"\bnew\s+Function\b",
    r"createContextualFragment",
    r"DOMParser",
    r"\bsetTimeout\s*\(\s*[\"'`]",
    r"\.style\.",
    r"localStorage",
    r"https?://(?!www\.w3\.org/2000/svg\b)",  # nothing from elsewhere; the SVG namespace is a name
]


@pytest.mark.parametrize("path", sorted(DASHBOARD_DIR.glob("*.js")), ids=lambda p: p.name)
def test_scripts_never_parse_text_as_html(path):
    text = path.read_text()
    found = [pattern for pattern in FORBIDDEN_JS if re.search(pattern, text)]
    assert found == []


def test_styles_fetch_nothing_external():
    css = (DASHBOARD_DIR / "style.css").read_text()
    assert "@import" not in css
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", css)


# ---- one-time sign-in links ---------------------------------------------------------------------


def test_a_link_code_signs_in_once(kaio_server, api_key):
    api = Api(kaio_server.url, api_key)
    r = api.post("/dashboard/links")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"code", "expires_in"}
    assert 0 < body["expires_in"] <= 120
    assert len(body["code"]) >= 40 and api_key not in body["code"]

    first = requests.post(kaio_server.url + "/login/link", json={"code": body["code"]}, timeout=10)
    assert first.status_code == 200, first.text
    login = first.json()
    assert set(login) == {"access_token", "exp", "project"}
    assert login["project"] == api.login["project"]
    jobs = requests.get(
        kaio_server.url + "/jobs",
        headers={"Authorization": f"Bearer {login['access_token']}"},
        timeout=10,
    )
    assert jobs.status_code == 200

    again = requests.post(kaio_server.url + "/login/link", json={"code": body["code"]}, timeout=10)
    assert again.status_code == 403
    assert "already used or expired" in again.json()["error"]


def test_links_need_a_token_and_codes_must_be_real(kaio_server):
    assert requests.post(kaio_server.url + "/dashboard/links", timeout=10).status_code == 401
    for body, status in [
        ({"code": "not-a-code"}, 403),
        ({"code": ""}, 400),
        ({}, 400),
        ({"code": 12}, 400),
        ({"code": "x" * 10_000}, 400),
    ]:
        r = requests.post(kaio_server.url + "/login/link", json=body, timeout=10)
        assert r.status_code == status, (body, r.text)
        assert "code" in r.json()["error"]


def test_a_link_of_a_revoked_key_does_not_sign_in(kaio_server):
    from kaio_spec.server.store import Store

    key = kaio_server.add_user()
    code = Api(kaio_server.url, key).post("/dashboard/links").json()["code"]
    store = Store(kaio_server.data_dir)
    try:
        store.revoke_key(key[:12])  # the display prefix
    finally:
        store.close()
    r = requests.post(kaio_server.url + "/login/link", json={"code": code}, timeout=10)
    assert r.status_code == 403
    assert "revoked" in r.json()["error"]


def test_codes_expire_and_are_kept_only_as_hashes():
    now = [1000.0]
    links = SignInLinks(ttl_s=60, clock=lambda: now[0])
    session_end = int(time.time()) + 3600
    early, late = links.issue("u1", 1, session_end), links.issue("u2", 2, session_end)
    assert early not in repr(links._codes) and late not in repr(links._codes)
    now[0] += 59.9
    assert links.redeem(early) == ("u1", 1, session_end)
    assert links.redeem(early) is None
    now[0] += 0.1
    assert links.redeem(late) is None  # expired at exactly its ttl
    # Expired codes are dropped when the next one is made, so the table stays small.
    for _ in range(3):
        links.issue("u3", 3, session_end)
    now[0] += 61
    links.issue("u4", 4, session_end)
    assert len(links._codes) == 1


def test_openapi_marks_the_dashboard_routes_local(kaio_server):
    paths = requests.get(kaio_server.url + "/openapi.json", timeout=10).json()["paths"]
    for path, method in [
        ("/", "get"),
        ("/dashboard/{name}", "get"),
        ("/dashboard/links", "post"),
        ("/login/link", "post"),
    ]:
        assert paths[path][method]["tags"] == ["local"], path


# ---- kaio dashboard -----------------------------------------------------------------------------


def test_kaio_dashboard_no_browser_prints_a_one_time_link(kaio_server, api_key):
    result = kaio(
        "dashboard", "--no-browser", "--api", kaio_server.url, env={"KAIO_API_KEY": api_key}
    )
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    assert re.fullmatch(re.escape(kaio_server.url) + r"/#signin=[A-Za-z0-9_-]{40,}", link)
    assert api_key not in result.stdout + result.stderr
    code = link.split("#signin=")[1]
    assert requests.post(kaio_server.url + "/login/link", json={"code": code}, timeout=10).ok
    again = requests.post(kaio_server.url + "/login/link", json={"code": code}, timeout=10)
    assert again.status_code == 403


def test_kaio_dashboard_reads_the_address_from_the_environment(kaio_server, api_key):
    result = kaio(
        "dashboard", "--no-browser", env={"KAIO_API_KEY": api_key, "KAIO_API_BASE": kaio_server.url}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(kaio_server.url + "/#signin=")


def test_kaio_dashboard_opens_the_browser_named_by_BROWSER(kaio_server, api_key, tmp_path):
    """webbrowser honours $BROWSER: a script stands in for the user's browser."""
    seen = tmp_path / "opened.txt"
    browser = tmp_path / "fake-browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s" "$1" > "{seen}"\n')
    browser.chmod(0o755)
    result = kaio(
        "dashboard",
        "--api",
        kaio_server.url,
        env={"KAIO_API_KEY": api_key, "BROWSER": str(browser), "DISPLAY": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "opened the dashboard" in result.stderr
    assert result.stdout == ""
    opened = seen.read_text()
    assert opened.startswith(kaio_server.url + "/#signin=")
    assert api_key not in opened


def test_kaio_dashboard_on_a_server_without_links_says_so():
    """The hosted API has /login but no dashboard: a clear error, not a traceback."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path == "/login":
                status, body = 200, {"access_token": "t", "exp": 0, "project": {}}
            else:
                status, body = 404, {"error": "no route"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = kaio("dashboard", "--no-browser", "--api", url, env={"KAIO_API_KEY": "k"})
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert "has no dashboard sign-in links" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["--api", "http://127.0.0.1:9"], {}, 2, "no API key for http://127.0.0.1:9"),
        (["--api", "ftp://x"], {"KAIO_API_KEY": "k"}, 2, "is not an http(s) URL"),
        (["--api", "{url}"], {"KAIO_API_KEY": "kaio_wrong"}, 2, "does not know this key"),
        (["--api", "http://127.0.0.1:9"], {"KAIO_API_KEY": "k"}, 1, "cannot reach"),
    ],
)
def test_kaio_dashboard_errors_are_one_line(kaio_server, args, env, code, message):
    args = [a.replace("{url}", kaio_server.url) for a in args]
    result = kaio("dashboard", "--no-browser", *args, env=env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
