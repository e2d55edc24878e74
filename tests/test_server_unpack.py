"""Unpacking never writes outside the job's folder, whatever the package holds: hostile packages
PUT to a real server through both upload routes (a job's package, a base package) and as an
overlay on a base package."""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from server_support import Api, make_package, member

from kaio_spec.server import ingest, storage, unpack

CANARY = "canary beside the data folder: never to change\n"
LINK_CHAIN_STEPS = "abcdefghijklmnop"  # 16 nested levels, a link at each


@pytest.fixture
def api(kaio_server, api_key) -> Api:
    return Api(kaio_server.url, api_key)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def past_path_max(levels_up: int, victim: str, streamed: bool = False) -> tuple[bytes, str]:
    """The CVE-2025-4517 package: 16 nested 247-character folders with a link to each, a
    254-character link `../`x16 at the end of the chain (which resolves to the folder unpacked
    into), a link `escape` through it `levels_up` folders further up, and a file
    `escape/<victim>`. Read textually every link stays inside; resolved, `escape` is outside,
    and the data filter's realpath gives up past PATH_MAX. The package and the chain link's
    name. `streamed`: random bytes first make it larger than ingest.SMALL_BODY_BYTES, so the
    server unpacks it as it arrives, not in one go once it is whole."""
    folder = "d" * 247
    members, path = [], ""
    for step in LINK_CHAIN_STEPS:
        members.append(member(posixpath.join(path, folder), tarfile.DIRTYPE))
        members.append(member(posixpath.join(path, step), tarfile.SYMTYPE, folder))
        path = posixpath.join(path, folder)
    chain = posixpath.join(*LINK_CHAIN_STEPS, "l" * 254)
    members.append(member(chain, tarfile.SYMTYPE, "../" * len(LINK_CHAIN_STEPS)))
    members.append(member("escape", tarfile.SYMTYPE, chain + "/.." * levels_up))
    data = b"written by a hostile package\n"
    payload = tarfile.TarInfo(f"escape/{victim}")
    payload.size = len(data)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        train = tarfile.TarInfo("train.py")
        tf.addfile(train, io.BytesIO(b""))
        if streamed:
            pad = tarfile.TarInfo("pad.bin")
            pad.size = 2 * ingest.SMALL_BODY_BYTES
            tf.addfile(pad, io.BytesIO(os.urandom(pad.size)))
        for m in members:
            tf.addfile(m)
        tf.addfile(payload, io.BytesIO(data))
    return buf.getvalue(), chain


def _guards(server) -> tuple[Path, bytes]:
    """A canary file beside the data folder, and the platform secret's bytes as they are."""
    canary = server.data_dir.parent / "canary.txt"
    canary.write_text(CANARY)
    secret = next(p for p in server.data_dir.iterdir() if "secret" in p.name)
    return canary, secret.read_bytes()


def _nothing_written_outside(server, canary: Path, secret: bytes) -> None:
    assert canary.read_text() == CANARY
    assert next(p for p in server.data_dir.iterdir() if "secret" in p.name).read_bytes() == secret
    assert sorted(
        p.name for p in server.data_dir.parent.iterdir() if p.name.startswith("canary")
    ) == ["canary.txt"]


def _refused_naming(r: requests.Response, name: str) -> str:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error.startswith("package:") and repr(name) in error, error
    return error


# Folders between where each route unpacks and the data folder's parent:
# <data>/jobs/<job>/pkg.tmp-*/ and <data>/packages/<user>/<sha>.tmp-*/tree/.
JOB_LEVELS_UP = 4
BASE_LEVELS_UP = 5
# Each route unpacks a small body in one go once it is whole, a larger one as it arrives.
STREAMED = pytest.mark.parametrize("streamed", [False, True], ids=["small", "streamed"])


@STREAMED
def test_a_link_chain_past_path_max_cannot_write_outside_through_a_job_package(
    server_factory, streamed
):
    server = server_factory(max_instances=2)
    api = Api(server.url, server.add_user())
    canary, secret = _guards(server)
    package, chain = past_path_max(JOB_LEVELS_UP, "canary.txt", streamed)
    presigned = api.presign(job_name="escape")
    r = requests.put(presigned["upload_url"], data=package, timeout=60)
    _nothing_written_outside(server, canary, secret)
    error = _refused_naming(r, chain)
    job = api.job(presigned["unique_job_name"])
    assert job["status"] == "Failed" and job["failure_reason"] == error


@STREAMED
def test_a_link_chain_past_path_max_cannot_write_outside_through_a_base_package(
    server_factory, streamed
):
    server = server_factory(max_instances=2)
    api = Api(server.url, server.add_user())
    canary, secret = _guards(server)
    package, chain = past_path_max(BASE_LEVELS_UP, "canary.txt", streamed)
    r = api.session.put(f"{api.url}/packages/{sha(package)}", data=package, timeout=60)
    _nothing_written_outside(server, canary, secret)
    _refused_naming(r, chain)
    assert api.get(f"/packages/{sha(package)}").status_code == 404


@STREAMED
def test_a_link_chain_past_path_max_cannot_write_outside_through_an_overlay(
    server_factory, streamed
):
    server = server_factory(max_instances=2)
    api = Api(server.url, server.add_user())
    canary, secret = _guards(server)
    base = make_package({"train.py": "pass"})
    assert api.session.put(f"{api.url}/packages/{sha(base)}", data=base, timeout=30).ok
    presigned = api.post(
        "/jobs/presign",
        json={
            "job_name": "on-base",
            "job_spec": {"instance_type": "ml.m5.large", "entrypoint": "train.py"},
            "base_package": sha(base),
        },
    ).json()
    assert presigned["base_package"] == sha(base)
    package, chain = past_path_max(JOB_LEVELS_UP, "canary.txt", streamed)
    r = requests.put(presigned["upload_url"], data=package, timeout=60)
    _nothing_written_outside(server, canary, secret)
    _refused_naming(r, chain)


# ---- the rules, one at a time -------------------------------------------------------------------


def in_order(*entries: tuple[str, bytes, str]) -> bytes:
    """A tar.gz of (name, tar type, content or link target) entries, in this order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, text in [("train.py", tarfile.REGTYPE, "pass"), *entries]:
            if kind == tarfile.REGTYPE:
                info = tarfile.TarInfo(name)
                info.size = len(text.encode())
                tf.addfile(info, io.BytesIO(text.encode()))
            else:
                tf.addfile(member(name, kind, text))
    return buf.getvalue()


FILE, DIR, SYM, HARD = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
LONG_NAME = "/".join(["y" * 200] * 21)
LINK_RULES = {
    # A member under a link of the same package: refused, even when the link points inside.
    "a path through a link": (
        [("sub", DIR, ""), ("alias", SYM, "sub"), ("alias/f.txt", FILE, "x")],
        "alias/f.txt",
    ),
    # Textually inside (`s/../x` is `x`), outside once `s` is resolved (to `.`).
    "a link leaving once resolved": ([("s", SYM, "."), ("t", SYM, "s/../x")], "t"),
    # The same, the other way round: `t` looked inside when it came; `s` made it leave.
    "a link made to leave by a later one": ([("t", SYM, "s/../x"), ("s", SYM, ".")], "t"),
    "a hard link to a link": ([("soft", SYM, "train.py"), ("hard", HARD, "soft")], "hard"),
    "a hard link to the folder itself": ([("hard", HARD, ".")], "hard"),
    "a component over 255 bytes": ([("x" * 256 + "/f.txt", FILE, "x")], "x" * 256 + "/f.txt"),
    "a name over 4095 bytes": ([(LONG_NAME, FILE, "x")], LONG_NAME),
    "a NUL in a link target": ([("nul", SYM, "a\0" + "b" * 200)], "nul"),
}


@pytest.mark.parametrize("kind", list(LINK_RULES))
def test_a_package_breaking_a_rule_is_refused_naming_the_member(api, kaio_server, kind):
    entries, culprit = LINK_RULES[kind]
    presigned = api.presign(job_name="rules")
    r = requests.put(presigned["upload_url"], data=in_order(*entries), timeout=30)
    error = _refused_naming(r, culprit)
    job = api.job(presigned["unique_job_name"])
    assert job["status"] == "Failed" and job["failure_reason"] == error
    assert not (kaio_server.data_dir / "jobs" / presigned["unique_job_name"] / "pkg").exists()


def test_links_inside_a_package_still_work(api):
    package = make_package(
        {"train.py": "print(open('alias/f.txt').read(), open('hard').read())", "sub/f.txt": "in"},
        [
            member("alias", tarfile.SYMTYPE, "sub"),
            member("up", tarfile.SYMTYPE, "sub/../sub/f.txt"),
            member("hard", tarfile.LNKTYPE, "sub/f.txt"),
        ],
    )
    unique = api.submit(package, job_name="links")
    job = api.wait(unique)
    assert job["status"] == "Completed", job
    assert api.get(f"/jobs/{unique}/logs").text == "in in\n"


def test_folders_count_toward_the_volume(api):
    # 300k folders in 1.4 MB of archive once took 1.37 GB. Here: a file that alone would fit
    # the 1 GB volume (its header says so; no byte is ever written) after 1,000 folders,
    # which take more than the 1 MB left.
    volume = 1024**3
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i in range(1000):
            tf.addfile(member(f"d{i}", tarfile.DIRTYPE))
        big = tarfile.TarInfo("big.bin")
        big.size = volume - 1024**2
        tf.fileobj.write(big.tobuf(format=tarfile.GNU_FORMAT))
    presigned = api.presign(job_name="folders", volume_size_gb=1)
    r = requests.put(presigned["upload_url"], data=buf.getvalue(), timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == f"package: unpacks to more than the volume's {volume} bytes"


def test_modes_and_times_of_members_are_kept_safely(api, kaio_server):
    script = (
        "import os, stat\n"
        "for p in ('tool.sh', 'data.txt', 'dir'):\n"
        "    st = os.stat(p)\n"
        "    print(p, oct(stat.S_IMODE(st.st_mode)), int(st.st_mtime))\n"
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, mode, data in (
            ("train.py", 0o644, script.encode()),
            ("tool.sh", 0o4777, b"#!/bin/sh\n"),
            ("data.txt", 0o400, b"x"),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
        d = member("dir", tarfile.DIRTYPE)
        d.mode, d.mtime = 0o500, 1_600_000_000
        tf.addfile(d)
    unique = api.submit(buf.getvalue(), job_name="modes")
    assert api.wait(unique)["status"] == "Completed"
    assert api.get(f"/jobs/{unique}/logs").text.splitlines() == [
        "tool.sh 0o755 1600000000",  # no setuid, no write for others
        "data.txt 0o600 1600000000",  # the owner may always read and write
        "dir 0o700 1600000000",
    ]
    assert os.path.isdir(kaio_server.data_dir)


# ---- the floor: unpack.Tree follows no link, whatever the checks let through --------------------


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "walk"])
def test_the_tree_writes_through_no_link_even_one_no_check_saw(tmp_path, openat2):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "sub").mkdir()
    (root / "out").symlink_to(outside)
    (root / "sub" / "up").symlink_to("../../outside")
    with unpack.Tree(root, openat2=openat2) as tree:
        for way in [("out", "f.txt"), ("sub", "up", "f.txt"), ("sub", "up", "new", "f.txt")]:
            with pytest.raises(unpack.LinkInTheWay):
                tree.write_file(way, io.BytesIO(b"x"), 0o644, 0, 1024)
            with pytest.raises(unpack.LinkInTheWay):
                tree.make_folder(way, 0o755, 0)
            with pytest.raises(unpack.LinkInTheWay):
                tree.symlink(way, "x")
        with pytest.raises(unpack.LinkInTheWay):
            tree.hardlink(("h",), ("out", "secret"))
        tree.write_file(("sub", "deep", "ok.txt"), io.BytesIO(b"ok"), 0o644, 0, 1024)
        tree.finish()
    assert list(outside.iterdir()) == []
    assert (root / "sub" / "deep" / "ok.txt").read_bytes() == b"ok"


def test_link_targets_are_resolved_through_the_links_on_their_way(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "here").symlink_to(".")
    (tmp_path / "a" / "b" / "top").symlink_to("../..")
    with unpack.Tree(tmp_path) as tree:
        assert unpack.resolves_inside(tree, ("x",), "a/b/top/a")
        assert not unpack.resolves_inside(tree, ("x",), "a/b/top/..")
        assert not unpack.resolves_inside(tree, ("x",), "here/../x")
        assert unpack.resolves_inside(tree, ("a", "x"), "../here/a")
        assert not unpack.resolves_inside(tree, ("x",), "/etc")


def test_copies_for_more_instances_than_the_disk_holds_are_refused_before_any(tmp_path):
    """The free-space check, on a 1 MiB tmpfs (root only: mounting needs it)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        files = storage.JobFiles(disk / "job")
        (files.pkg).mkdir(parents=True)
        (files.pkg / "data.bin").write_bytes(b"\1" * 400 * 1024)
        hosts = ["algo-1", "algo-2", "algo-3"]
        storage.prepare_run(files, hosts)
        with pytest.raises(storage.NoRoom, match=r"2 copies .* need 819200 bytes"):
            storage.hand_out_package(files, hosts)
        assert not files.work("algo-1").exists()  # nothing half-copied fills the disk
        assert storage.hand_out_package(files, hosts[:2])  # one copy fits
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@given(st.text(alphabet="/.a\\", min_size=1, max_size=12))
def test_names_are_refused_as_pathlib_reads_them(name):
    """check_member splits a name by hand: it must refuse exactly the names that are absolute or
    hold a '..' component (or a backslash) as PurePosixPath reads them."""
    unsafe = PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts or "\\" in name
    info = tarfile.TarInfo(name)
    try:
        storage.check_member(info)
    except storage.PackageError:
        assert unsafe, name
    else:
        assert not unsafe, name
