"""The platform's pure parts: job lifecycle, GPU assignment, requirement checks, package checks."""

from __future__ import annotations

import io
import tarfile

import pytest

from kaio_spec import catalog
from kaio_spec.server import environments, gpu, sandbox, storage
from kaio_spec.server.states import JobStatus, can_become

T = catalog.INSTANCE_TYPES


def test_lifecycle_allows_only_the_documented_moves():
    P, R, S, C, F, X = (
        JobStatus.PENDING,
        JobStatus.IN_PROGRESS,
        JobStatus.STOPPING,
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    )
    allowed = {(P, R), (P, S), (P, F), (R, C), (R, F), (R, S), (S, X), (S, F)}
    for a in JobStatus:
        for b in JobStatus:
            assert can_become(a, b) == ((a, b) in allowed), (a, b)
    assert {s for s in JobStatus if s.is_final} == {C, F, X}
    assert {s.value.lower() for s in JobStatus if s.is_final} == catalog.FINAL_STATUSES


def test_nvidia_smi_output_is_parsed_with_or_without_units():
    text = "0, NVIDIA H200, 143771 MiB\n1, Tesla T4, 15360\n\ngarbage line\n"
    assert gpu.parse_gpus(text) == [
        gpu.Gpu(0, "NVIDIA H200", 143771),
        gpu.Gpu(1, "Tesla T4", 15360),
    ]
    assert gpu.parse_gpus("") == []


def test_gpu_instances_get_their_catalog_share():
    machine = [0, 1, 2, 3]
    two_g4 = gpu.assign_gpus(T["ml.g4dn.xlarge"], 2, machine, machine)
    assert two_g4 == [[0], [1]]
    assert gpu.assign_gpus(T["ml.p3.8xlarge"], 1, [1, 2, 3, 0], machine) == [[1, 2, 3, 0]]
    assert gpu.assign_gpus(T["ml.p3.8xlarge"], 1, [1, 2], machine) is None  # waits
    assert gpu.assign_gpus(T["ml.m5.large"], 3, [], machine) == [[], [], []]  # CPU type
    # No GPUs here: a GPU type runs on the CPU.
    assert gpu.assign_gpus(T["ml.g5.xlarge"], 2, [], []) == [[], []]
    # More than the machine has: alone (all free), sharing round robin.
    assert gpu.assign_gpus(T["ml.p3.16xlarge"], 1, [0, 1], [0, 1]) == [[0, 1]]
    assert gpu.assign_gpus(T["ml.g4dn.xlarge"], 3, [0, 1], [0, 1]) == [[0], [1], [0]]
    assert gpu.assign_gpus(T["ml.g4dn.xlarge"], 3, [1], [0, 1]) is None


def test_cuda_visible_devices_per_instance():
    g4, m5 = T["ml.g4dn.xlarge"], T["ml.m5.large"]
    assert gpu.cuda_visible_devices(g4, [2], [0, 1, 2]) == "2"
    assert gpu.cuda_visible_devices(m5, [], [0, 1]) == ""  # a CPU instance sees no GPU
    assert gpu.cuda_visible_devices(g4, [], []) is None  # no GPUs at all: left alone
    assert gpu.gpus_needed(T["ml.p3.8xlarge"], 2, 8) == 8
    assert gpu.gpus_needed(T["ml.p3.8xlarge"], 2, 0) == 0


def test_requirements_satisfied_here_need_no_environment():
    assert environments.unsatisfied("psutil\nnbconvert>=7\n# a comment\n\nGPUtil\n") == []
    assert environments.unsatisfied("pytest ; python_version < '3'\n") == []  # not for here
    assert environments.unsatisfied("psutil<1\n") == ["psutil<1"]
    assert environments.unsatisfied("no-such-dist-kaio\n") == ["no-such-dist-kaio"]
    assert environments.unsatisfied("-r other.txt\n") == ["-r other.txt"]
    assert environments.unsatisfied("pkg @ https://x/y.whl\n") == ["pkg @ https://x/y.whl"]
    key = environments.environment_key
    assert key("a\nb\n") == key("a\n\nb # why\n") != key("a\n")
    assert environments.is_cacheable("psutil\n/abs/path.whl\n")
    assert not environments.is_cacheable("-e ./mylib\n")
    assert environments.is_cacheable("extra-pkg\n")


def _tar(*members: tuple[str, bytes, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            tf.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


@pytest.mark.parametrize(
    "members,ok",
    [
        ([("train.py", tarfile.REGTYPE, ""), ("d/l", tarfile.SYMTYPE, "../train.py")], True),
        ([("train.py", tarfile.REGTYPE, ""), ("d/l", tarfile.SYMTYPE, "../../x")], False),
        ([("train.py", tarfile.REGTYPE, ""), ("./a/../../b", tarfile.REGTYPE, "")], False),
        ([("train.py", tarfile.REGTYPE, ""), ("h", tarfile.LNKTYPE, "train.py")], True),
        ([("train.py", tarfile.REGTYPE, ""), ("h", tarfile.LNKTYPE, "../t")], False),
        ([("./train.py", tarfile.REGTYPE, "")], True),
        ([("sub/train.py", tarfile.REGTYPE, "")], False),  # the entrypoint must be at the top
        ([("train.py", tarfile.DIRTYPE, "")], False),
    ],
)
def test_package_checks(tmp_path, members, ok):
    path = tmp_path / "p.tar.gz"
    path.write_bytes(_tar(*members))
    # The upload's one-pass check and unpack; it leaves nothing of a refused package.
    dest = tmp_path / "pkg"
    if ok:
        storage.unpack_package(path, dest, "train.py", 10**6)
        assert (dest / "train.py").is_file()
    else:
        with pytest.raises(storage.PackageError, match=r"^package: "):
            storage.unpack_package(path, dest, "train.py", 10**6)
        assert [p.name for p in tmp_path.iterdir()] == ["p.tar.gz"]


def test_a_package_of_several_gzip_members_is_read_whole(tmp_path):
    """Packaging may write a tar as several concatenated gzip members; gzip reads them as one."""
    import gzip

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in ("train.py", "data.txt"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
    raw = buf.getvalue()
    half = len(raw) // 2
    path = tmp_path / "multi.tar.gz"
    path.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    storage.unpack_package(path, tmp_path / "one", "train.py", 10**6)
    assert (tmp_path / "one" / "data.txt").read_bytes() == b"abc"


def test_an_unpacked_size_over_the_volume_is_refused(tmp_path):
    path = tmp_path / "p.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("train.py")
        info.size = 2000
        tf.addfile(info, io.BytesIO(b"\0" * 2000))
    path.write_bytes(buf.getvalue())
    with pytest.raises(storage.PackageError, match="volume"):
        storage.unpack_package(path, tmp_path / "pkg", "train.py", 1000)
    assert not (tmp_path / "pkg").exists()


# ---- outputs ------------------------------------------------------------------------------------


def _tree(root) -> set[str]:
    return {str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*")}


def _handed_out(tmp_path, hosts: list[str]) -> tuple[storage.JobFiles, dict]:
    files = storage.JobFiles(tmp_path / "job")
    (files.pkg / "sub").mkdir(parents=True)
    for rel in ("train.py", "data.txt", "sub/same.txt"):
        (files.pkg / rel).write_text("as packaged")
    storage.prepare_run(files, hosts)
    return files, storage.hand_out_package(files, hosts)


def test_a_run_is_prepared_once_and_nothing_of_it_is_an_output(tmp_path):
    import json

    files, original = _handed_out(tmp_path, ["algo-1", "algo-2"])
    assert set(original) == {"train.py", "data.txt", "sub/same.txt"}
    for host in ("algo-1", "algo-2"):
        assert files.logs(host).is_dir()
        assert json.loads(files.config(host).read_text()) == {
            "current_host": host,
            "hosts": ["algo-1", "algo-2"],
        }
    files.config("algo-1").write_text("changed")
    storage.prepare_run(files, ["algo-1", "algo-2"])  # prepared already: left alone
    assert files.config("algo-1").read_text() == "changed"
    assert storage.collect_outputs(files, ["algo-1", "algo-2"], original) == 0
    assert not files.outputs.exists()


@pytest.mark.parametrize("from_memory", [True, False], ids=["in-memory", "pkg-files.json"])
def test_outputs_are_only_the_files_a_job_created_or_changed(tmp_path, from_memory):
    files, original = _handed_out(tmp_path, ["algo-1"])
    work = files.work("algo-1")
    (work / "data.txt").write_text("changed")
    (work / "new" / "deep").mkdir(parents=True)
    (work / "new" / "deep" / "r.txt").write_text("made")
    (work / "empty").mkdir()
    (work / "link").symlink_to("data.txt")
    (work / "folder-link").symlink_to("sub")
    kept = storage.collect_outputs(files, ["algo-1"], original if from_memory else None)
    assert kept == 2
    assert _tree(files.outputs) == {"data.txt", "new/", "new/deep/", "new/deep/r.txt"}
    assert not work.exists()


def test_several_instances_keep_their_outputs_apart_and_none_is_no_folder(tmp_path):
    files, original = _handed_out(tmp_path, ["algo-1", "algo-2", "algo-3"])
    (files.work("algo-1") / "a.txt").write_text("1")
    (files.work("algo-3") / "data.txt").write_text("3")
    assert storage.collect_outputs(files, ["algo-1", "algo-2", "algo-3"], original) == 2
    assert _tree(files.outputs) == {"algo-1/", "algo-1/a.txt", "algo-3/", "algo-3/data.txt"}
    assert not (files.root / "work").exists() or not any((files.root / "work").iterdir())


def test_a_collection_a_crash_cut_short_is_completed_on_restart(tmp_path):
    files, _ = _handed_out(tmp_path, ["algo-1"])
    (files.work("algo-1") / "late.txt").write_text("after the crash")
    files.outputs.mkdir()
    (files.outputs / "early.txt").write_text("before the crash")
    assert storage.collect_outputs(files, ["algo-1"]) == 1  # read back from pkg-files.json
    assert _tree(files.outputs) == {"early.txt", "late.txt"}
    assert not files.work("algo-1").exists()


# ---- sandbox: when jobs are confined --------------------------------------------------------


@pytest.mark.parametrize(
    ("enabled", "abi", "confined", "says"),
    [
        (True, 7, True, "jobs are confined with Landlock (ABI 7): none reaches this data folder"),
        (True, 2, True, "(ABI 2): none reaches this data folder (from Linux 6.2, nor truncate"),
        (True, 1, False, "WARNING: jobs run unconfined: this kernel has Landlock ABI 1, which"),
        (True, 0, False, "WARNING: jobs run unconfined: this kernel has no Landlock (Linux 5.19+"),
        (False, 7, False, "jobs run unconfined (--no-sandbox): a job can read this data folder"),
    ],
)
def test_jobs_are_confined_from_landlock_abi_2_unless_told_not_to(enabled, abi, confined, says):
    assert sandbox.confinement(enabled, abi)[0] is confined
    assert says in sandbox.confinement(enabled, abi)[1]


# ---- leftovers: which processes carry a platform's mark ------------------------------------------


def test_marked_processes_read_the_mark_wherever_it_sits_in_the_environment(tmp_path):
    import subprocess
    import sys

    from kaio_spec.server import leftovers

    platform = leftovers.platform_id(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path)
    assert platform == leftovers.platform_id(tmp_path / "link")  # one folder, one platform
    assert platform != leftovers.platform_id(tmp_path / "other")
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    envs = {
        "first": {leftovers.MARK: leftovers.mark(platform, "first"), "PATH": "/usr/bin"},
        "last": {"PATH": "/usr/bin", leftovers.MARK: leftovers.mark(platform, "last")},
        "other platform": {leftovers.MARK: leftovers.mark(platform[:-1] + "x", "j")},
        "a longer id": {leftovers.MARK: leftovers.mark(platform + "0", "j")},
        "another name": {"X" + leftovers.MARK: leftovers.mark(platform, "j")},
    }
    procs = {name: subprocess.Popen(sleeper, env=env) for name, env in envs.items()}
    try:
        found = leftovers.marked_processes(platform)
        assert {
            pid: job for pid, job in found.items() if pid in {p.pid for p in procs.values()}
        } == {
            procs["first"].pid: "first",
            procs["last"].pid: "last",
        }
        killed = leftovers.kill_leftovers(platform, lambda: {"first"})
        assert killed == 1 and procs["last"].wait(10) == -9
        assert procs["first"].poll() is None and procs["other platform"].poll() is None
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
