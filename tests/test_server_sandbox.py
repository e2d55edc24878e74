"""Jobs confined with Landlock (the fallback where namespaces are unavailable; forced here with
the hidden --isolation landlock): a job reaches nothing of the platform's data folder but its own
working folders, on a real server running real job processes. The --no-sandbox server beside it shows
that each denial below is the sandbox's doing (the same job reads everything there)."""

from __future__ import annotations

import json
import os
import resource
import textwrap
from pathlib import Path

import pytest
from conftest import ServerProcess
from server_support import Api

from kaio_spec.server import auth, environments, storage
from kaio_spec.server.sandbox import confinement, landlock_abi
from kaio_spec.server.store import DB_FILE

ABI = landlock_abi()
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "specs"
needs_landlock = pytest.mark.skipif(
    not confinement(True, ABI)[0], reason=f"this kernel cannot confine jobs (Landlock ABI {ABI})"
)

# Tries each access named in $PROBES ({"name": [kind, path, pid or $VARIABLE holding a path]})
# and writes what happened to report.json: "ok:<what was read>" or the error's errno name.
PROBE = textwrap.dedent(
    """
    import ctypes, errno, json, os, tempfile
    probes, report = json.loads(os.environ["PROBES"]), {}
    for name, (kind, target) in probes.items():
        if target.startswith("$"):
            target = os.environ[target[1:]]
        try:
            if kind == "read":
                with open(target, "rb") as f:
                    result = "ok:" + f.read(64).decode("utf-8", "replace")
            elif kind == "list":
                result = "ok:" + ",".join(sorted(os.listdir(target)))
            elif kind == "write":
                with open(target, "w") as f:
                    f.write("written by the job")
                result = "ok:"
            elif kind == "link":  # a hard link in the job's own folder
                os.link(target, "linked")
                result = "ok:" + open("linked").read(64)
            elif kind == "signal":
                os.kill(int(target), 0)
                result = "ok:"
            elif kind == "ptrace":
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.ptrace(16, int(target), 0, 0) != 0:  # PTRACE_ATTACH
                    raise OSError(ctypes.get_errno(), "ptrace")
                libc.ptrace(17, int(target), 0, 0)  # PTRACE_DETACH: let it run on
                result = "ok:"
            elif kind == "tempfile":
                fd, path = tempfile.mkstemp()
                os.close(fd)
                result = "ok:" + path
        except OSError as e:
            result = errno.errorcode.get(e.errno, type(e).__name__)
        report[name] = result
    json.dump(report, open("report.json", "w"))
    """
)


def run_probes(api: Api, probes: dict[str, list[str]]) -> tuple[str, dict[str, str]]:
    unique = api.submit(
        {"probe.py": PROBE}, entrypoint="probe.py", env={"PROBES": json.dumps(probes)}
    )
    job = api.wait(unique)
    assert job["status"] == "Completed", job
    return unique, json.loads(api.outputs(unique)["report.json"])


@pytest.fixture
def confined(server_factory):
    return server_factory(max_instances=4, isolation="landlock")


@pytest.fixture
def unconfined(server_factory):
    return server_factory(max_instances=4, sandbox=False)


def other_tenants_job(server) -> Path:
    """The package of a job another tenant ran to its end on `server`, checked to be there."""
    other = Api(server.url, server.add_user())
    unique = other.submit({"train.py": "open('out.txt', 'w').write('secret result')"})
    assert other.wait(unique)["status"] == "Completed"
    package = storage.Layout(server.data_dir).job(unique).package
    assert package.is_file()
    return package


def data_folder_probes(server) -> dict[str, list[str]]:
    data = server.data_dir
    # A link beside the data folder, pointing into it: the sandbox must not follow it in.
    link = data.parent / "data-link"
    link.symlink_to(data, target_is_directory=True)
    return {
        "secret": ["read", str(data / auth.SECRET_FILE)],
        "secret hard-linked": ["link", str(data / auth.SECRET_FILE)],
        "database": ["read", str(data / DB_FILE)],
        "other tenant's package": ["read", str(other_tenants_job(server))],
        "data folder listing": ["list", str(data)],
        "jobs listing": ["list", str(data / "jobs")],
        "secret through a link": ["read", str(link / auth.SECRET_FILE)],
        "new file in the data folder": ["write", str(data / "planted.txt")],
        # Its own job's files beyond its working folder: the platform serves its logs.
        "own log": ["write", f"../../logs/algo-1/{storage.LOG_NAMES[0]}"],
        "own package": ["read", f"../../{storage.PACKAGE}"],
    }


@needs_landlock
def test_a_confined_job_reaches_nothing_of_the_data_folder_but_its_own(confined, tmp_path):
    api = Api(confined.url, confined.add_user())
    assert api.get("/healthz").json()["jobs_confined"] is True
    beside = tmp_path / "dataset.csv"  # outside the data folder: a job reads its data as before
    beside.write_text("x,y\n1,2\n")
    probes = data_folder_probes(confined)
    # A link beside the data folder to a folder outside it works as its target does.
    (confined.data_dir.parent / "datasets").symlink_to(tmp_path, target_is_directory=True)
    probes |= {
        "dataset": ["read", str(beside)],
        "dataset through a link": [
            "read",
            str(confined.data_dir.parent / "datasets" / beside.name),
        ],
        "own folder": ["write", "written.txt"],
        "resource config": ["read", "$SM_RESOURCE_CONFIG"],
    }
    probes["trace the server"] = ["ptrace", str(confined.proc.pid)]
    if ABI >= 6:
        probes["signal the server"] = ["signal", str(confined.proc.pid)]
    unique, report = run_probes(api, probes)

    allowed = ("dataset", "dataset through a link", "own folder", "resource config")
    denied = {n: r for n, r in report.items() if n not in allowed}
    # Landlock says EACCES to a path, EXDEV to a link that would gain rights, EPERM to a
    # process outside the job.
    expected = {n: "EACCES" for n in denied} | {"secret hard-linked": "EXDEV"}
    expected |= {n: "EPERM" for n in ("trace the server", "signal the server") if n in denied}
    assert denied == expected
    assert report["dataset"] == report["dataset through a link"] == "ok:x,y\n1,2\n"
    assert report["own folder"] == "ok:"
    assert report["resource config"].startswith('ok:{"current_host": "algo-1"')
    assert api.outputs(unique)["written.txt"] == b"written by the job"
    assert not (confined.data_dir / "planted.txt").exists()
    assert (confined.data_dir / auth.SECRET_FILE).stat().st_size > 0  # the server still reads it


def test_without_the_sandbox_the_same_job_reads_the_data_folder(unconfined):
    api = Api(unconfined.url, unconfined.add_user())
    assert api.get("/healthz").json()["jobs_confined"] is False
    probes = data_folder_probes(unconfined)
    _, report = run_probes(api, probes)
    secret = (unconfined.data_dir / auth.SECRET_FILE).read_bytes()[:64]
    assert report["secret"] == "ok:" + secret.decode("utf-8", "replace")
    assert report["secret hard-linked"] == report["secret"]
    assert report["other tenant's package"].startswith("ok:")
    other_job = Path(probes["other tenant's package"][1]).parent.name
    assert report["jobs listing"].startswith("ok:") and other_job in report["jobs listing"]
    assert (unconfined.data_dir / "planted.txt").read_text() == "written by the job"
    assert "unconfined (--no-sandbox)" in unconfined.log_path.read_text()


@needs_landlock
def test_a_confined_job_whose_temp_folder_is_above_the_data_folder_gets_its_own(tmp_path):
    # The server's temp folder holds its data folder: a confined job may create nothing there.
    confined = ServerProcess(
        tmp_path / "data", env={"TMPDIR": str(tmp_path)}, max_instances=2, isolation="landlock"
    )
    try:
        api = Api(confined.start().url, confined.add_user())
        unique, report = run_probes(api, {"temp file": ["tempfile", ""]})
    finally:
        confined.stop()
    job_tmp = storage.Layout(confined.data_dir).job(unique).tmp("algo-1")
    assert report["temp file"].startswith("ok:" + str(job_tmp) + os.sep)
    assert not job_tmp.exists()  # removed with the job's end
    assert "jobs are confined with Landlock" in confined.log_path.read_text()


@needs_landlock
def test_a_notebook_runs_confined_with_the_data_folder_in_a_fresh_home(tmp_path):
    # The default data folder is ~/.kaio/server: confined jobs may create nothing directly in
    # ~, so the server makes what nbconvert's first run would (~/.ipython, ~/.jupyter...).
    home = tmp_path / "home"
    home.mkdir()
    server = ServerProcess(
        home / ".kaio" / "server", env={"HOME": str(home)}, max_instances=2, isolation="landlock"
    )
    notebook = (EXAMPLES / "notebook" / "analysis.ipynb").read_text()
    try:
        api = Api(server.start().url, server.add_user())
        unique = api.submit({"analysis.ipynb": notebook}, entrypoint="analysis.ipynb")
        job = api.wait(unique)
        log = api.get(f"/jobs/{unique}/logs", params={"host": "algo-1"}).text
    finally:
        server.stop()
    assert job["status"] == "Completed", (job, log)
    assert log.startswith("kaio: this job is confined away from the platform's data folder")
    assert f"directly in {home / '.kaio'}, {home}, " in log.splitlines()[0]
    assert {".ipython", ".jupyter"} <= {p.name for p in home.iterdir()}


@needs_landlock
def test_what_appears_beside_the_data_folder_later_is_seen_by_the_next_job(confined):
    # The server keeps the entries outside the data folder open between jobs: one added after a
    # job started must reach the next job, and a new link into the data folder must not.
    api = Api(confined.url, confined.add_user())
    beside = confined.data_dir.parent
    run_probes(api, {"nothing yet": ["list", "."]})
    (beside / "new-dataset.csv").write_text("a,b\n")
    (beside / "new-link").symlink_to(confined.data_dir, target_is_directory=True)
    _, report = run_probes(
        api,
        {
            "new dataset": ["read", str(beside / "new-dataset.csv")],
            "secret through the new link": ["read", str(beside / "new-link" / auth.SECRET_FILE)],
        },
    )
    assert report == {"new dataset": "ok:a,b\n", "secret through the new link": "EACCES"}


# An in-tree build backend that needs nothing installed: pip runs it, offline, to build the
# package that requirements.txt names by its path, and prints what it says when it fails.
BACKEND = """
import errno
def _probe():
    try:
        open({target!r}).read()
        result = "ok"
    except OSError as e:
        result = errno.errorcode.get(e.errno, type(e).__name__)
    raise SystemExit("kaio-probe: " + result)
def get_requires_for_build_wheel(config_settings=None):
    _probe()
build_wheel = get_requires_for_build_wheel
"""
PYPROJECT = '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'


def build_backend_probe(server) -> str:
    """What a build backend in a job's requirements read of the server's secret, as pip said."""
    api = Api(server.url, server.add_user())
    files = {
        "train.py": "print('never run')",
        "requirements.txt": "./probe\n",
        "probe/pyproject.toml": PYPROJECT,
        "probe/backend.py": BACKEND.format(target=str(server.data_dir / auth.SECRET_FILE)),
    }
    job = api.wait(api.submit(files))
    assert job["status"] == "Failed" and "pip could not install" in job["failure_reason"], job
    log = api.get(f"/jobs/{job['unique_job_name']}/logs", params={"host": "algo-1"}).text
    return log.split("kaio-probe: ", 1)[1].split()[0]


@needs_landlock
def test_pip_runs_a_packages_build_backend_confined_too(confined, unconfined):
    assert build_backend_probe(confined) == "EACCES"
    assert build_backend_probe(unconfined) == "ok"


# A backend that builds a real (empty) wheel, and meanwhile puts a link to $TARGET where the
# platform writes the environment's READY marker once pip is done.
LINKING_BACKEND = """
import base64, hashlib, os, sys, zipfile
def _environment():
    return os.path.dirname(os.path.dirname(sys.executable))  # pip runs under its python
def get_requires_for_build_wheel(config_settings=None):
    return []
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    os.symlink(TARGET, os.path.join(_environment(), READY))
    info = "probe-1.0.dist-info/"
    files = {
        info + "METADATA": "Metadata-Version: 2.1\\nName: probe\\nVersion: 1.0\\n",
        info + "WHEEL": "Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[info + "RECORD"] = "\\n".join(record + [info + "RECORD,,"]) + "\\n"
    name = "probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
    return name
"""


@needs_landlock
def test_a_link_pip_leaves_for_the_ready_marker_is_not_written_through(confined):
    api = Api(confined.url, confined.add_user())
    secret_file = confined.data_dir / auth.SECRET_FILE
    secret = secret_file.read_bytes()
    backend = f"TARGET = {str(secret_file)!r}\nREADY = {environments.READY!r}\n" + LINKING_BACKEND
    files = {
        "train.py": "open('ran.txt', 'w').write('ran')",
        "requirements.txt": "./probe\n",
        "probe/pyproject.toml": PYPROJECT,
        "probe/backend.py": backend,
    }
    job = api.wait(api.submit(files))
    log = api.get(f"/jobs/{job['unique_job_name']}/logs", params={"host": "algo-1"}).text
    assert job["status"] == "Completed", (job, log)
    assert secret_file.read_bytes() == secret  # not truncated through the link
    assert api.outputs(job["unique_job_name"])["ran.txt"] == b"ran"


def test_the_server_may_hold_many_entries_open(server_factory):
    # The sandbox keeps the entries beside the data folder's ancestors open: the server raises
    # its soft limit on open files to 65536 (or the hard limit, if lower), from the usual 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, soft), hard))
    try:
        server = server_factory()  # inherits the low limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
    row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    assert int(row.split()[3]) >= wanted, row
