"""Base packages on a real server (docs/base-packages.md): GET/PUT /packages/<sha256>, presign with
a base package, overlays on top of it, retention, and what a cut upload leaves behind."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import tarfile
import threading
from pathlib import Path

import pytest
import requests
from apply_support import wait_for
from server_support import UNSAFE_KINDS, Api, make_package, member, unsafe_packages

from kaio_spec.server import store as store_module
from kaio_spec.server.store import Store

LOGS = {"logs/algo-1/stdout.log", "logs/algo-1/stderr.log"}


@pytest.fixture
def api(kaio_server, api_key) -> Api:
    return Api(kaio_server.url, api_key)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_base(api: Api, data: bytes, digest: str | None = None, **kw) -> requests.Response:
    return api.session.put(f"{api.url}/packages/{digest or sha(data)}", data=data, timeout=30, **kw)


def stored(api: Api, base: bytes) -> dict:
    """PUT a base package that must be accepted; its answer."""
    r = put_base(api, base)
    assert r.status_code == 200, r.text
    return r.json()


def presign_on(api: Api, base_package, entrypoint: str = "train.py", **spec) -> requests.Response:
    body = {
        "job_name": "on-base",
        "job_spec": {
            "instance_type": "ml.m5.large",
            "entrypoint": entrypoint,
            "image_uri": "local",
            **spec,
        },
        "base_package": base_package,
    }
    return api.post("/jobs/presign", json=body)


def presigned_on(api: Api, base: bytes, **kw) -> dict:
    """Presign against a base package the caller holds: the answer must say so."""
    r = presign_on(api, sha(base), **kw)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["base_package"] == sha(base)
    return answer


def user_packages(server, api: Api) -> Path:
    return server.data_dir / "packages" / api.login["project"]["id"]


def job_dir(server, unique: str) -> Path:
    return server.data_dir / "jobs" / unique


# ---- GET and PUT /packages/<sha256> -------------------------------------------------------------


def test_a_base_package_is_absent_then_stored_then_present(api, kaio_server):
    base = make_package({"data/x.txt": "x", "lib.py": "pass"})
    digest = sha(base)
    missing = api.get(f"/packages/{digest}")
    assert missing.status_code == 404 and digest in missing.json()["error"]
    assert stored(api, base) == {"sha256": digest, "size": len(base)}
    assert api.get(f"/packages/{digest}").json() == {"sha256": digest, "size": len(base)}
    assert stored(api, base) == {"sha256": digest, "size": len(base)}  # again: harmless
    folder = user_packages(kaio_server, api) / digest
    assert (folder / "package.tar.gz").read_bytes() == base
    assert (folder / "tree" / "data" / "x.txt").read_text() == "x"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["size"] == len(base) and meta["unpacked_bytes"] == len("x") + len("pass")
    assert sorted(p.name for p in folder.parent.iterdir()) == [digest]  # no temp left


def test_the_routes_need_a_token(api):
    digest = sha(b"x")
    assert requests.get(f"{api.url}/packages/{digest}").status_code == 401
    assert requests.put(f"{api.url}/packages/{digest}", data=b"x").status_code == 401


def test_an_empty_base_package_is_a_base_package(api):
    assert stored(api, make_package({}))["size"] > 0


def test_a_body_whose_sha256_is_not_the_urls_is_refused(api, kaio_server):
    base = make_package({"lib.py": "pass"})
    wrong = sha(b"something else")
    r = put_base(api, base, wrong)
    assert r.status_code == 400 and r.json()["error"].startswith("body:")
    assert sha(base) in r.json()["error"]
    assert api.get(f"/packages/{wrong}").status_code == 404
    assert list(user_packages(kaio_server, api).iterdir()) == []
    stored(api, base)  # once held, other bytes under its name are still refused
    r = put_base(api, make_package({"lib.py": "other"}), sha(base))
    assert r.status_code == 400 and r.json()["error"].startswith("body:")


BAD_SHAS = ["A" * 64, "a" * 63, "a" * 65, "g" * 64, "not-a-hash"]


@pytest.mark.parametrize("bad", BAD_SHAS)
def test_a_url_hash_that_is_not_64_lower_case_hex_is_refused(api, bad):
    for r in (api.get(f"/packages/{bad}"), api.session.put(f"{api.url}/packages/{bad}", data=b"x")):
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith("sha256:")


@pytest.mark.parametrize("bad", [*BAD_SHAS, "", 123, ["a" * 64], {"sha": "a" * 64}])
def test_a_presign_base_package_that_is_not_a_sha256_is_refused_naming_it(api, bad):
    r = presign_on(api, bad)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("base_package:")
    assert api.get("/jobs").json()["count"] == 0  # no job was made


def test_a_base_package_over_the_cap_is_refused(server_factory):
    server = server_factory(max_upload_bytes=2000)
    api = Api(server.url, server.add_user())
    big = os.urandom(3000)
    r = put_base(api, big)
    assert r.status_code == 413 and r.json()["error"].startswith("body:")

    def chunks():  # no Content-Length: the cap holds while streaming too
        for i in range(3):
            yield big[i * 1000 : (i + 1) * 1000]

    r = api.session.put(f"{api.url}/packages/{sha(big)}", data=chunks(), timeout=30)
    assert r.status_code == 413
    assert api.get(f"/packages/{sha(big)}").status_code == 404
    packages = user_packages(server, api)
    assert not packages.exists() or list(packages.iterdir()) == []
    assert stored(api, make_package({"lib.py": "pass"}))  # under the cap: fine


def _unsafe_packages(outside: Path) -> dict[str, bytes]:
    good = {"lib.py": "pass"}
    return {
        **unsafe_packages(outside, good),
        "clash": make_package({**good, "a": "file", "a/b": "x"}),
    }


@pytest.mark.parametrize("kind", [*UNSAFE_KINDS, "clash"])
def test_an_unsafe_or_unreadable_base_package_is_refused_and_nothing_stored(
    api, kaio_server, tmp_path, kind
):
    outside = tmp_path / "outside"
    outside.mkdir()
    package = _unsafe_packages(outside)[kind]
    r = put_base(api, package)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("package:")
    assert api.get(f"/packages/{sha(package)}").status_code == 404
    assert list(user_packages(kaio_server, api).iterdir()) == []
    assert list(outside.iterdir()) == []


def test_concurrent_puts_of_one_base_package_store_it_once(api, kaio_server):
    base = make_package({"data.bin": os.urandom(3 * 1024 * 1024), "lib.py": "pass"})
    answers: list[requests.Response] = []

    headers = {"Authorization": api.session.headers["Authorization"]}

    def put():  # a session each: requests.Session is not shared across threads
        answers.append(
            requests.put(f"{api.url}/packages/{sha(base)}", data=base, headers=headers, timeout=60)
        )

    threads = [threading.Thread(target=put) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in answers] == [200] * 6
    folder = user_packages(kaio_server, api)
    assert [p.name for p in folder.iterdir()] == [sha(base)]
    assert (folder / sha(base) / "package.tar.gz").read_bytes() == base


# ---- tenants ------------------------------------------------------------------------------------


def test_another_tenants_base_package_is_invisible(kaio_server, tmp_path):
    alice = Api(kaio_server.url, kaio_server.add_user())
    mallory = Api(kaio_server.url, kaio_server.add_user())
    base = make_package({"train.py": "print(open('secret.txt').read())", "secret.txt": "alice"})
    stored(alice, base)
    theirs = mallory.get(f"/packages/{sha(base)}")
    absent = mallory.get(f"/packages/{sha(b'nothing')}")
    assert theirs.status_code == absent.status_code == 404
    assert theirs.json()["error"].replace(sha(base), "X") == absent.json()["error"].replace(
        sha(b"nothing"), "X"
    )
    r = presign_on(mallory, sha(base))
    assert r.status_code == 200 and "base_package" not in r.json()
    # Mallory's job is a plain one: an overlay alone is not a job, alice's files never join it.
    put = requests.put(r.json()["upload_url"], data=make_package({"params.json": "{}"}))
    assert put.status_code == 400 and "entrypoint" in put.json()["error"]
    assert not user_packages(kaio_server, mallory).exists()
    assert alice.get(f"/packages/{sha(base)}").status_code == 200


# ---- jobs on a base package ---------------------------------------------------------------------

READS_EVERYTHING = """
import json, os
seen = {p: open(p).read() for p in ["data/a.txt", "data/b.txt", "alias", "conf/keep.txt",
                                     "params.json", "untouched.txt"]}
seen["alias is a link"] = os.path.islink("alias")
open("conf/keep.txt", "a").write("+changed")
json.dump(seen, open("result.json", "w"))
"""


def test_a_job_on_a_base_package_sees_the_base_with_the_overlay_on_top(api, kaio_server):
    base = make_package(
        {
            "train.py": READS_EVERYTHING,
            "data/a.txt": "base-a",
            "data/b.txt": "base-b",
            "conf/keep.txt": "keep",
            "untouched.txt": "u",
        },
        [member("alias", tarfile.SYMTYPE, "data/b.txt")],
    )
    stored(api, base)
    overlay = make_package(
        {"data/a.txt": "overlay-a", "alias": "overlay-alias", "params.json": '{"lr": 1}'}
    )
    for _ in range(2):  # the base package serves every job presigned against it, unchanged
        presigned = presigned_on(api, base)
        r = requests.put(presigned["upload_url"], data=overlay, timeout=30)
        assert r.status_code == 200, r.text
        unique = presigned["unique_job_name"]
        assert api.wait(unique)["status"] == "Completed"
        outputs = api.outputs(unique)
        assert json.loads(outputs["result.json"]) == {
            "data/a.txt": "overlay-a",  # the overlay's file replaced the base's
            "data/b.txt": "base-b",  # not written through the base's link
            "alias": "overlay-alias",
            "alias is a link": False,
            "conf/keep.txt": "keep",
            "params.json": '{"lr": 1}',
            "untouched.txt": "u",
        }
        # Outputs are what the job made or changed: neither the base's files nor the overlay's.
        assert set(outputs) == {"result.json", "conf/keep.txt", *LOGS}
        assert outputs["conf/keep.txt"] == b"keep+changed"
    tree = user_packages(kaio_server, api) / sha(base) / "tree"
    assert (tree / "data" / "a.txt").read_text() == "base-a"
    assert (tree / "data" / "b.txt").read_text() == "base-b"
    assert (tree / "conf" / "keep.txt").read_text() == "keep"
    assert os.readlink(tree / "alias") == "data/b.txt"


def test_the_entrypoint_may_come_from_the_overlay_alone(api):
    base = make_package({"lib.py": "VALUE = 'from the base'"})
    stored(api, base)
    presigned = presigned_on(api, base)
    overlay = make_package({"train.py": "import lib; open('o.txt', 'w').write(lib.VALUE)"})
    assert requests.put(presigned["upload_url"], data=overlay, timeout=30).status_code == 200
    unique = presigned["unique_job_name"]
    assert api.wait(unique)["status"] == "Completed"
    assert api.outputs(unique)["o.txt"] == b"from the base"


def test_an_empty_overlay_runs_the_base_package_as_it_is(api):
    base = make_package({"train.py": "open('o.txt', 'w').write('ran')"})
    stored(api, base)
    presigned = presigned_on(api, base)
    assert requests.put(presigned["upload_url"], data=make_package({})).status_code == 200
    unique = presigned["unique_job_name"]
    assert api.wait(unique)["status"] == "Completed"
    assert api.outputs(unique)["o.txt"] == b"ran"


def _refused_upload(api: Api, kaio_server, presigned: dict, overlay: bytes, status: int = 400):
    """The upload is refused with `status`, the job fails with that reason and nothing of it
    reached the job's files. The error."""
    r = requests.put(presigned["upload_url"], data=overlay, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    unique = presigned["unique_job_name"]
    job = api.job(unique)
    assert job["status"] == "Failed" and job["failure_reason"] == error
    folder = job_dir(kaio_server, unique)
    assert not (folder / "pkg").exists() and not list(folder.glob("pkg.tmp-*"))
    assert not (folder / "work").exists()
    return error


def test_an_entrypoint_in_neither_fails_the_job_with_the_reason(api, kaio_server):
    base = make_package({"lib.py": "pass", "sub/train.py": "pass"})
    stored(api, base)
    overlay = make_package(
        {"params.json": "{}"}, [member("train.py", tarfile.SYMTYPE, "sub/train.py")]
    )
    error = _refused_upload(api, kaio_server, presigned_on(api, base), overlay)
    assert error.startswith("package:") and "'train.py'" in error and "neither" in error


BASE_FOR_CLASHES = {
    "train.py": "pass",
    "data/x.txt": "x",
    "cfg": "a file",
}
CLASHES = {
    "a file over a folder": (
        {"data": "now a file"},
        [],
        "'data' is a file where the base package has a folder",
    ),
    "a folder over a file": ({}, [member("cfg", tarfile.DIRTYPE)], "'cfg' is a folder where"),
    "a path through a file": ({"cfg/a.txt": "x"}, [], "inside 'cfg', which the base package"),
    "a path through a link": ({"linked/new.txt": "x"}, [], "inside 'linked'"),
    "a link over a folder": ({}, [member("data", tarfile.SYMTYPE, "cfg")], "'data' is a file"),
    "a clash inside the overlay": (
        {"new": "file", "new/b.txt": "x"},
        [],
        "which an earlier member has as a file",
    ),
    "unsafe": ({"../../escape.txt": "x"}, [], "'..'"),
    "link out": ({}, [member("out", tarfile.SYMTYPE, "../../..")], "links outside"),
    "not gzip": (None, [], "not a readable tar.gz"),
}


@pytest.mark.parametrize("kind", list(CLASHES))
def test_an_overlay_clashing_with_its_base_or_unsafe_fails_the_job(api, kaio_server, kind):
    base = make_package(BASE_FOR_CLASHES, [member("linked", tarfile.SYMTYPE, "data")])
    stored(api, base)
    files, members, expected = CLASHES[kind]
    overlay = b"not a package" if files is None else make_package(files, members)
    error = _refused_upload(api, kaio_server, presigned_on(api, base), overlay)
    assert error.startswith("package:") and expected in error, error
    tree = user_packages(kaio_server, api) / sha(base) / "tree"
    assert sorted(p.name for p in (tree / "data").iterdir()) == ["x.txt"]  # base untouched


def _header_only(name: str, size: int) -> bytes:
    """A package whose one member says it holds `size` bytes but holds none: the size check
    refuses it on reading its header, before anything would be written."""
    info = tarfile.TarInfo(name)
    info.size = size
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024)


def test_the_base_and_the_overlay_together_must_fit_the_volume(api, kaio_server):
    base = make_package({"train.py": "pass", "data.bin": b"\0" * 4096})
    stored(api, base)
    volume = 1024**3
    # The overlay alone fits the 1 GB volume; with the base's bytes it does not.
    overlay = _header_only("big.bin", volume - 1000)
    presigned = presigned_on(api, base, volume_size_gb=1)
    error = _refused_upload(api, kaio_server, presigned, overlay)
    assert error == f"package: unpacks to more than the volume's {volume} bytes"


@pytest.mark.parametrize(
    "field, expected",
    [
        ("unpacked_bytes", "package: the base package unpacks to more than the volume's"),
        ("size", "bytes with its base package is more than half the job's 1 GB volume"),
    ],
)
def test_a_base_package_too_large_for_the_volume_fails_the_job(api, kaio_server, field, expected):
    base = make_package({"train.py": "pass"})
    stored(api, base)
    meta_file = user_packages(kaio_server, api) / sha(base) / "meta.json"
    # Made large on disk (a real 1 GB base is too slow for a test): what the checks read.
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, field: 2 * 1024**3}))
    presigned = presigned_on(api, base, volume_size_gb=1)
    error = _refused_upload(api, kaio_server, presigned, make_package({}))
    assert expected in error, error


def test_presign_with_an_unknown_base_package_is_a_plain_job(api):
    r = presign_on(api, sha(b"never uploaded"))
    assert r.status_code == 200 and "base_package" not in r.json()
    whole = make_package({"train.py": "open('o.txt', 'w').write('whole')"})
    assert requests.put(r.json()["upload_url"], data=whole, timeout=30).status_code == 200
    unique = r.json()["unique_job_name"]
    assert api.wait(unique)["status"] == "Completed"
    assert api.outputs(unique)["o.txt"] == b"whole"


def test_a_base_package_deleted_before_the_upload_answers_409_and_fails_the_job(api, kaio_server):
    base = make_package({"train.py": "pass"})
    stored(api, base)
    presigned = presigned_on(api, base)
    shutil.rmtree(user_packages(kaio_server, api) / sha(base))
    error = _refused_upload(api, kaio_server, presigned, make_package({}), status=409)
    assert error == f"base_package: {sha(base)} no longer on the platform; presign again"
    r = requests.put(presigned["upload_url"], data=make_package({}), timeout=30)
    assert r.status_code == 409  # the job ended: it takes no upload any more
    again = presign_on(api, sha(base))
    assert again.status_code == 200 and "base_package" not in again.json()


WHOLE_CLASHES = {
    "a file, then a path through it": ({"a": "file", "a/b": "x"}, [], "'a/b'"),
    "a path, then a file over its folder": ({"a/b": "x", "a": "file"}, [], "'a'"),
    "a file over the top folder": ({}, [member(".", tarfile.REGTYPE)], "'.'"),
}


@pytest.mark.parametrize("kind", list(WHOLE_CLASHES))
def test_a_whole_package_whose_members_clash_fails_the_job_not_the_server(api, kaio_server, kind):
    files, members, culprit = WHOLE_CLASHES[kind]
    package = make_package({"train.py": "pass", **files}, members)
    r = presign_on(api, None)
    assert r.status_code == 200 and "base_package" not in r.json()
    error = _refused_upload(api, kaio_server, r.json(), package)
    assert error.startswith(f"package: {culprit} clashes with an earlier member"), error


# ---- retention ----------------------------------------------------------------------------------


def test_the_retention_sweep_removes_base_packages_nobody_uses(server_factory):
    # Six seconds: `used` is presigned every poll, and a loaded machine can stall a poll for
    # seconds (at three, `used` was once swept as well).
    server = server_factory(retention_days=6 / 86400, sweep_interval=0.2)
    api = Api(server.url, server.add_user())
    unused = make_package({"lib.py": "unused"})
    used = make_package({"lib.py": "used"})
    stored(api, unused)
    stored(api, used)

    def unused_is_gone() -> bool:
        # Each presign against `used` marks it used: it must outlive `unused`.
        assert presign_on(api, sha(used)).json()["base_package"] == sha(used)
        return api.get(f"/packages/{sha(unused)}").status_code == 404

    wait_for(unused_is_gone, "the unused base package was swept")
    assert api.get(f"/packages/{sha(used)}").status_code == 200
    assert [p.name for p in user_packages(server, api).iterdir()] == [sha(used)]


# ---- cut uploads --------------------------------------------------------------------------------


def _start_put(api: Api, digest: str) -> socket.socket:
    """A PUT that sends its headers and a first piece of a body it says is much longer."""
    sock = socket.create_connection(("127.0.0.1", int(api.url.rsplit(":", 1)[1])), timeout=10)
    head = (
        f"PUT /packages/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {api.session.headers['Authorization']}\r\n"
        "Content-Length: 10000000\r\n\r\n"
    )
    sock.sendall(head.encode() + os.urandom(64 * 1024))
    return sock


def test_a_put_cut_mid_body_leaves_nothing(api, kaio_server):
    digest = sha(b"never whole")
    packages = user_packages(kaio_server, api)
    sock = _start_put(api, digest)
    wait_for(lambda: packages.is_dir() and list(packages.iterdir()), "a temp folder")
    sock.close()
    wait_for(lambda: list(packages.iterdir()) == [], "the temp folder removed")
    assert api.get(f"/packages/{digest}").status_code == 404


def test_a_server_killed_mid_put_leaves_nothing_after_a_restart(server_factory):
    server = server_factory()
    api = Api(server.url, server.add_user())
    digest = sha(b"never whole")
    packages = user_packages(server, api)
    sock = _start_put(api, digest)
    try:
        wait_for(lambda: packages.is_dir() and list(packages.iterdir()), "a temp folder")
        server.kill()
    finally:
        sock.close()
    assert [p.name.split(".")[1][:3] for p in packages.iterdir()] == ["tmp"]
    server.start()
    assert list(packages.iterdir()) == []
    api = Api(server.url, api.api_key)
    assert api.get(f"/packages/{digest}").status_code == 404


# ---- the job's record ---------------------------------------------------------------------------


def test_a_data_dir_from_before_base_packages_gets_the_column(tmp_path):
    old_schema = store_module._SCHEMA.replace(",\n    base_package TEXT", "")
    assert old_schema != store_module._SCHEMA
    db = sqlite3.connect(tmp_path / store_module.DB_FILE)
    db.executescript(old_schema)
    db.close()
    store = Store(tmp_path)
    try:
        user, _ = store.add_user("old")
        job = store.create_job(
            user["id"],
            "j",
            {
                "instance_type": "ml.m5.large",
                "instance_count": 1,
                "volume_size_gb": 5,
                "entrypoint": "train.py",
                "max_runtime_hours": 1.0,
            },
        )
        assert job["base_package"] is None
    finally:
        store.close()
    Store(tmp_path).close()  # a second start finds the column there
