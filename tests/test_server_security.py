"""Tenants, keys, tokens, presigned URLs, unsafe packages and env values on a real server."""

from __future__ import annotations

import tarfile
import textwrap
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from server_support import UNSAFE_KINDS, WAIT_FOR_GO, Api, make_package, member, unsafe_packages

from kaio_spec.server import auth, storage


@pytest.fixture
def api(kaio_server, api_key) -> Api:
    return Api(kaio_server.url, api_key)


# ---- tenants ------------------------------------------------------------------------------------

TENANT_ROUTES = [
    ("GET", "/jobs/status/{u}"),
    ("POST", "/jobs/{u}/stop"),
    ("GET", "/jobs/download/{u}"),
    ("DELETE", "/jobs/{u}/data"),
    ("POST", "/jobs/{u}/archive"),
    ("POST", "/jobs/{u}/restore"),
    ("GET", "/jobs/{u}/logs"),
    ("GET", "/jobs/{u}/telemetry"),
]


def test_another_tenants_job_answers_exactly_like_a_missing_one(kaio_server, tmp_path):
    alice = Api(kaio_server.url, kaio_server.add_user())
    mallory = Api(kaio_server.url, kaio_server.add_user())
    go = tmp_path / "go"
    unique = alice.submit({"train.py": WAIT_FOR_GO}, job_name="private", env={"GO_FILE": str(go)})
    alice.wait_for_log(unique, "ready")
    missing = unique[:-7] + "missing"
    for method, route in TENANT_ROUTES:
        theirs = mallory.session.request(method, mallory.url + route.format(u=unique))
        absent = mallory.session.request(method, mallory.url + route.format(u=missing))
        assert theirs.status_code == absent.status_code == 404, (method, route, theirs.text)
        assert theirs.json()["error"].replace(unique, "X") == absent.json()["error"].replace(
            missing, "X"
        )
    assert mallory.get("/jobs").json() == {"jobs": [], "count": 0}
    assert mallory.get("/jobs", params={"include_archived": "true"}).json()["count"] == 0
    job = alice.job(unique)  # untouched by all of that
    assert job["status"] == "InProgress" and not job["archived"] and not job["data_deleted"]
    go.touch()
    assert alice.wait(unique)["status"] == "Completed"
    assert mallory.get(f"/jobs/download/{unique}").status_code == 404


def test_a_listings_etag_reveals_and_unlocks_nothing_across_tenants(kaio_server):
    alice = Api(kaio_server.url, kaio_server.add_user())
    mallory = Api(kaio_server.url, kaio_server.add_user())
    mine = alice.submit({"train.py": "pass"}, job_name="mine")
    alice.wait(mine)
    alice_tag = alice.get("/jobs").headers["ETag"]
    theirs = mallory.submit({"train.py": "pass"}, job_name="theirs")
    mallory.wait(theirs)
    # Another tenant's jobs changing is no change of mine...
    assert alice.get("/jobs", headers={"If-None-Match": alice_tag}).status_code == 304
    # ...and neither's tag stands for the other's list.
    r = mallory.get("/jobs", headers={"If-None-Match": alice_tag})
    assert r.status_code == 200 and [j["unique_job_name"] for j in r.json()["jobs"]] == [theirs]
    mallory_tag = r.headers["ETag"]
    r = alice.get("/jobs", headers={"If-None-Match": mallory_tag})
    assert r.status_code == 200 and [j["unique_job_name"] for j in r.json()["jobs"]] == [mine]


# ---- keys and tokens ----------------------------------------------------------------------------


def test_keys_are_stored_only_as_hashes(kaio_server):
    key = kaio_server.add_user()
    Api(kaio_server.url, key)  # in use, so it is surely in the database by now
    stored = b"".join(p.read_bytes() for p in kaio_server.data_dir.glob("kaio.db*"))
    assert key.encode() not in stored
    assert auth.hash_key(key).encode() in stored
    assert key[: auth.DISPLAY_PREFIX_LEN].encode() in stored  # the display prefix, for revocation


def test_login_refuses_bad_keys_and_routes_refuse_bad_tokens(kaio_server, api_key):
    url = kaio_server.url
    assert requests.post(f"{url}/login", json={"api_key": "kaio_nope"}).status_code == 403
    assert requests.post(f"{url}/login", json={"api_key": api_key + "x"}).status_code == 403
    assert requests.get(f"{url}/jobs").status_code == 401
    garbage = {"Authorization": "Bearer not.a.jwt"}
    assert requests.get(f"{url}/jobs", headers=garbage).status_code == 401
    basic = {"Authorization": "Basic dXNlcjpwdw=="}
    assert requests.get(f"{url}/jobs", headers=basic).status_code == 401

    secret = (kaio_server.data_dir / auth.SECRET_FILE).read_text()
    assert (kaio_server.data_dir / auth.SECRET_FILE).stat().st_mode & 0o077 == 0
    login = requests.post(f"{url}/login", json={"api_key": api_key}).json()
    claims = auth.Tokens(bytes.fromhex(secret), 3600).verify(login["access_token"])
    user_id, key_id = claims.user_id, claims.key_id
    expired, _ = auth.Tokens(bytes.fromhex(secret), -10).issue(user_id, key_id)
    r = requests.get(f"{url}/jobs", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and "expired" in r.json()["error"]
    forged, _ = auth.Tokens(b"another secret", 3600).issue(user_id, key_id)
    assert (
        requests.get(f"{url}/jobs", headers={"Authorization": f"Bearer {forged}"}).status_code
        == 401
    )
    assert login["exp"] > time.time() + 3000 and login["project"]["id"] == user_id


def test_a_token_the_server_has_seen_before_still_expires(server_factory):
    server = server_factory(token_ttl=2)
    api = Api(server.url, server.add_user())
    assert api.get("/jobs").status_code == 200  # checked once; the server remembers it
    time.sleep(max(0.0, api.login["exp"] - time.time()) + 0.1)
    r = api.get("/jobs")
    assert r.status_code == 401 and "expired" in r.json()["error"]


def test_the_cli_manages_users_and_revoked_keys_stop_working(server_factory):
    import subprocess
    import sys

    server = server_factory()
    cli = [sys.executable, "-m", "kaio_spec.cli", "server"]
    data = ["--data-dir", str(server.data_dir)]
    added = subprocess.run([*cli, "user", "add", "carol", *data], capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert added.stdout == key + "\n" and key.startswith(auth.KEY_PREFIX)  # alone on stdout
    api = Api(server.url, key)  # the running server sees a user added by another process
    assert api.login["project"]["name"] == "carol"
    second = subprocess.run([*cli, "key", "create", "carol", *data], capture_output=True, text=True)
    second_key = second.stdout.strip()
    listing = subprocess.run([*cli, "user", "list", *data], capture_output=True, text=True).stdout
    assert "carol" in listing and key[:12] in listing and second_key[:12] in listing
    assert key not in listing

    dup = subprocess.run([*cli, "user", "add", "carol", *data], capture_output=True, text=True)
    assert dup.returncode == 2 and "already exists" in dup.stderr

    revoked = subprocess.run(
        [*cli, "key", "revoke", key[:12], *data], capture_output=True, text=True
    )
    assert revoked.returncode == 0, revoked.stderr
    assert requests.post(f"{server.url}/login", json={"api_key": key}).status_code == 403
    assert api.get("/jobs").status_code == 401  # its tokens die with it
    assert Api(server.url, second_key).get("/jobs").status_code == 200


# ---- presigned URLs -----------------------------------------------------------------------------


def _with_query(url: str, **changes) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


def test_changed_expired_and_misused_urls_are_refused(api, kaio_server):
    first = api.presign(job_name="url-a")
    other = api.presign(job_name="url-b")
    put_url = first["upload_url"]
    package = make_package({"train.py": "open('o.txt', 'w').write('o')"})
    sig = parse_qs(urlsplit(put_url).query)["signature"][0]
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    refused = {
        "changed signature": _with_query(put_url, signature=flipped),
        "changed expiry": _with_query(
            put_url, expires=int(parse_qs(urlsplit(put_url).query)["expires"][0]) + 1
        ),
        "no signature": put_url.split("?")[0],
        "another object": put_url.replace(first["unique_job_name"], other["unique_job_name"]),
    }
    for why, url in refused.items():
        r = requests.put(url, data=package)
        assert r.status_code == 403, (why, r.text)
        assert "signature" in r.json()["error"]
    assert requests.get(put_url).status_code == 403  # a PUT URL does not allow GET

    secret = bytes.fromhex((kaio_server.data_dir / auth.SECRET_FILE).read_text())
    signer = storage.Signer(secret, 3600)
    key = storage.package_key(first["unique_job_name"])
    expired = api.url + signer.path("PUT", key, expires=int(time.time()) - 1)
    r = requests.put(expired, data=package)
    assert r.status_code == 403 and "expired" in r.json()["error"]

    assert requests.put(put_url, data=package).status_code == 200  # the real one still works
    unique = first["unique_job_name"]
    api.wait(unique)
    urls = {rel: url for rel, _, url in api.get(f"/jobs/download/{unique}").json()["output_files"]}
    get_url = urls["o.txt"]
    assert requests.get(get_url).content == b"o"
    assert requests.put(get_url, data=b"x").status_code == 403  # a GET URL does not allow PUT
    assert requests.get(get_url.replace("o.txt", "logs/algo-1/stdout.log")).status_code == 403
    # Correctly signed, but for a path out of the job's outputs (%2E: requests would fold "..").
    sneaky = signer.path("GET", storage.output_key(unique, "../../secret")).replace("..", "%2E%2E")
    r = requests.get(api.url + sneaky)
    assert r.status_code == 404, r.text


def test_a_retried_upload_of_the_same_bytes_succeeds_and_other_bytes_conflict(api):
    presigned = api.presign(job_name="retry")
    package = make_package({"train.py": "pass"})
    first = requests.put(presigned["upload_url"], data=package)
    again = requests.put(presigned["upload_url"], data=package)
    assert first.status_code == again.status_code == 200
    assert first.headers["ETag"] == again.headers["ETag"]
    other = requests.put(presigned["upload_url"], data=make_package({"train.py": "1"}))
    assert other.status_code == 409


def test_uploads_over_the_cap_are_refused(server_factory):
    server = server_factory(max_upload_bytes=2000)
    api = Api(server.url, server.add_user())
    presigned = api.presign(job_name="big")
    r = requests.put(presigned["upload_url"], data=b"x" * 3000)
    assert r.status_code == 413 and "error" in r.json()

    def chunks():  # no Content-Length: the cap holds while streaming too
        for _ in range(3):
            yield b"y" * 1000

    r = requests.put(presigned["upload_url"], data=chunks())
    assert r.status_code == 413
    assert api.job(presigned["unique_job_name"])["status"] == "Pending"  # may still be uploaded
    ok = requests.put(presigned["upload_url"], data=make_package({"train.py": "pass"}))
    assert ok.status_code == 200
    assert api.wait(presigned["unique_job_name"])["status"] == "Completed"
    assert not list((server.data_dir / "jobs").glob("*/*.part-*"))


# ---- unsafe packages ----------------------------------------------------------------------------


def _slip_packages(outside: Path) -> dict[str, bytes]:
    good = {"train.py": "open('ran.txt', 'w').write('should never run')"}
    return {**unsafe_packages(outside, good), "no entrypoint": make_package({"other.py": "pass"})}


@pytest.mark.parametrize("kind", [*UNSAFE_KINDS, "no entrypoint"])
def test_an_unsafe_or_unreadable_package_fails_the_job_and_writes_nothing(
    api, kaio_server, tmp_path, kind
):
    outside = tmp_path / "outside"
    outside.mkdir()
    package = _slip_packages(outside)[kind]
    presigned = api.presign(job_name="slip")
    r = requests.put(presigned["upload_url"], data=package)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("package:")
    unique = presigned["unique_job_name"]
    job = api.job(unique)
    assert job["status"] == "Failed" and job["failure_reason"] == r.json()["error"]
    assert list(outside.iterdir()) == []
    job_dir = kaio_server.data_dir / "jobs" / unique
    assert not (job_dir / "pkg").exists() and not (job_dir / "work").exists()
    assert not (kaio_server.data_dir / "jobs" / "dd.txt").exists()
    # Nothing ran, so nothing came out but the (empty) listing.
    assert api.get(f"/jobs/download/{unique}").json() == {"output_files": []}


def test_links_inside_the_package_are_fine(api):
    inside = make_package(
        {"train.py": "print(open('alias').read())", "data/real.txt": "real"},
        [member("alias", tarfile.SYMTYPE, "data/real.txt")],
    )
    unique = api.submit(inside, job_name="links")
    assert api.wait(unique)["status"] == "Completed"
    assert api.get(f"/jobs/{unique}/logs").text == "real\n"


def test_a_colon_in_a_file_name_is_an_ordinary_posix_name(api):
    package = make_package({"train.py": "print(open('a:b.csv').read())", "a:b.csv": "1,2"})
    unique = api.submit(package, job_name="colon")
    assert api.wait(unique)["status"] == "Completed"
    assert api.get(f"/jobs/{unique}/logs").text == "1,2\n"


# ---- env values ---------------------------------------------------------------------------------


def test_env_values_reach_the_job_but_no_response_log_or_database(api, kaio_server):
    value = "s3cr3t-" + str(time.time_ns())
    presigned = api.presign(job_name="env", env={"TOKEN": value, "OTHER": "x"})
    assert value not in str(presigned) and presigned["env_names"] == ["OTHER", "TOKEN"]
    code = (
        "import hashlib, os\n"
        "open('h.txt', 'w').write(hashlib.sha256(os.environ['TOKEN'].encode()).hexdigest())\n"
    )
    requests.put(presigned["upload_url"], data=make_package({"train.py": code})).raise_for_status()
    unique = presigned["unique_job_name"]
    job = api.wait(unique)
    assert job["status"] == "Completed" and job["env_names"] == ["OTHER", "TOKEN"]
    import hashlib

    assert api.outputs(unique)["h.txt"] == hashlib.sha256(value.encode()).hexdigest().encode()
    responses = [api.get("/jobs").text, api.get(f"/jobs/status/{unique}").text]
    responses.append(api.get(f"/jobs/download/{unique}").text)
    assert all(value not in text for text in responses)
    everything = [p for p in kaio_server.data_dir.rglob("*") if p.is_file()]
    everything.append(kaio_server.log_path)
    leaks = [p for p in everything if value.encode() in p.read_bytes()]
    assert leaks == []
    assert not (kaio_server.data_dir / "jobs" / unique / "env.json").exists()


# Once $GO_FILE exists, puts instead of out.txt a link to $TARGET, and instead of pipe.txt a
# FIFO no reader could get past.
SWAP = textwrap.dedent(
    """
    import os, time
    while not os.path.exists(os.environ["GO_FILE"]):
        time.sleep(0.02)
    os.remove("out.txt")
    os.symlink(os.environ["TARGET"], "out.txt")
    os.remove("pipe.txt")
    os.mkfifo("pipe.txt")
    open("swapped", "w").close()
    """
)
# Writes out.txt, then leaves SWAP behind: in its own session (the job's end does not stop it),
# started again without the platform's mark (so it is not killed as a leftover either).
LEFT_BEHIND = textwrap.dedent(
    f"""
    import os, sys
    open("out.txt", "w").write("the result")
    open("pipe.txt", "w").write("the result")
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            env = {{k: v for k, v in os.environ.items() if k != "KAIO_JOB_RUN"}}
            os.execve(sys.executable, [sys.executable, "-c", {SWAP!r}], env)
        os._exit(0)
    """
)


def test_a_process_the_job_left_behind_cannot_make_its_outputs_serve_another_file(
    api, kaio_server, tmp_path
):
    go = tmp_path / "go"
    target = kaio_server.data_dir / auth.SECRET_FILE
    unique = api.submit({"train.py": LEFT_BEHIND}, env={"GO_FILE": str(go), "TARGET": str(target)})
    assert api.wait(unique)["status"] == "Completed"
    urls = {rel: url for rel, _, url in api.get(f"/jobs/download/{unique}").json()["output_files"]}
    go.write_text("")
    outputs = storage.Layout(kaio_server.data_dir).job(unique).outputs
    deadline = time.monotonic() + 30
    while not (outputs / "swapped").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (outputs / "out.txt").is_symlink() and (outputs / "pipe.txt").is_fifo()

    for rel in ("out.txt", "pipe.txt"):
        r = requests.get(urls[rel], timeout=10)  # a FIFO would hang an open that waits
        assert r.status_code == 404, (rel, r.status_code, r.content[:100])
        assert target.read_bytes() not in r.content
