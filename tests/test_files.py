"""files.write_atomic: the one atomic write every module uses (state, keys, the server's files)."""

from __future__ import annotations

import os
import stat

import pytest

from kaio_spec.files import write_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_private_file_is_its_owners_only_whatever_the_umask(tmp_path):
    path = tmp_path / "key"
    old = os.umask(0)  # a umask that would leave 0o666 files readable by all
    try:
        write_atomic(path, "secret\n")
    finally:
        os.umask(old)
    assert path.read_text() == "secret\n"
    assert _mode(path) == 0o600


def test_a_shared_file_gets_the_mode_open_would_give_it(tmp_path):
    path = tmp_path / "results.csv"
    old = os.umask(0o022)
    try:
        write_atomic(path, b"a,b\n", mode=None, fsync=False)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"a,b\n"
    assert _mode(path) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(path, "old")
    with pytest.raises(TypeError):
        write_atomic(path, 42)  # type: ignore[arg-type]  # fails after the temp file is made
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_replacing_a_file_keeps_the_new_mode_not_the_old_one(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{}")
    path.chmod(0o644)
    write_atomic(path, '{"api_key": "k"}')
    assert _mode(path) == 0o600
    assert path.read_text() == '{"api_key": "k"}'
