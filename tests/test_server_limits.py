"""What an instance type and a volume promise holds at run time, on a real server: memory,
volume, processes and logs past their limits end the job (or the log) with a reason, and
tenants take turns on a busy platform. The limits are shrunk with the server's hidden settings
(--limits-scale, --max-processes, --log-cap-bytes) so that tests stay light."""

from __future__ import annotations

import json
import textwrap
import time

import pytest
import requests
from server_support import WAIT_FOR_GO, Api

from kaio_spec.server import leftovers, limits


def server_isolation(server) -> str:
    return requests.get(server.url + "/healthz", timeout=10).json()["isolation"]


SCALE = 1 / 32  # ml.c5.large's 4 GiB: 128 MiB; a volume of 1 GB: 32 MiB

HOLD_MEMORY = textwrap.dedent(
    """
    import time
    held = b"x" * (384 * 1024 * 1024)  # written, so resident
    print("holding", flush=True)
    time.sleep(60)
    """
)


def test_an_instance_using_more_memory_than_its_type_fails_the_job(server_factory):
    server = server_factory(limits_scale=SCALE)
    api = Api(server.url, server.add_user())
    unique = api.submit({"train.py": HOLD_MEMORY}, instance_type="ml.c5.large")
    job = api.wait(unique)
    assert job["status"] == "Failed"
    assert job["failure_reason"] == "algo-1 used more than the 128 MiB of ml.c5.large"
    log = api.get(f"/jobs/{unique}/logs").text
    assert "kaio: algo-1 used more than the 128 MiB of ml.c5.large" in log
    # Within its type's memory, a job runs as before.
    small = api.submit({"train.py": "b = b'x' * (32 * 1024 * 1024)"}, instance_type="ml.c5.large")
    assert api.wait(small)["status"] == "Completed"


FILL = textwrap.dedent(
    """
    import json, os, time
    where = os.environ["WHERE"]
    try:
        with open(where, "wb") as f:
            for _ in range(64):
                f.write(b"x" * 1024 * 1024)
        result = "wrote 64 MiB"
    except OSError as e:
        result = type(e).__name__ + ": " + (e.strerror or "")
    json.dump(result, open("report.json", "w"))
    print(result, flush=True)
    time.sleep(float(os.environ.get("HOLD", "0")))
    """
)


def test_a_job_writing_more_than_its_volume_fails_volume_exceeded(server_factory):
    server = server_factory(limits_scale=SCALE)
    api = Api(server.url, server.add_user())
    unique = api.submit(
        {"train.py": FILL}, volume_size_gb=1, env={"WHERE": "big.bin", "HOLD": "60"}
    )
    job = api.wait(unique)
    assert job["status"] == "Failed"
    assert job["failure_reason"] == (
        "VolumeExceeded: the job's files took more than the 32 MiB of its volume_size_gb=1"
    )
    # Its private /tmp (memory) holds no more than the volume either.
    tmp = api.submit({"train.py": FILL}, volume_size_gb=1, env={"WHERE": "/tmp/big.bin"})
    assert api.wait(tmp)["status"] == "Completed"
    assert json.loads(api.outputs(tmp)["report.json"]) == "OSError: No space left on device"


FILL_HOME = FILL.replace('where = os.environ["WHERE"]', 'where = os.path.expanduser("~/big.bin")')


def test_a_job_filling_its_tenants_home_past_its_volume_fails_and_the_home_goes_later(
    server_factory,
):
    """HOME (in namespaces, a folder of the tenant's kept across its jobs) is on the job's
    volume: a job cannot put more in it than its volume_size_gb; and once the tenant has run
    nothing for the retention period, its HOME is deleted with its jobs' data."""
    server = server_factory(limits_scale=SCALE, retention_days=3 / 86400)
    if server_isolation(server) != "namespaces":
        pytest.skip("HOME is the server's own without namespaces")
    api = Api(server.url, server.add_user())
    unique = api.submit({"train.py": FILL_HOME}, volume_size_gb=1, env={"HOLD": "60"})
    job = api.wait(unique)
    assert job["status"] == "Failed"
    assert job["failure_reason"].startswith("VolumeExceeded: the job's files took more than")
    homes = server.data_dir / "homes"
    assert len(list(homes.iterdir())) == 1  # the tenant's
    deadline = time.monotonic() + 30
    while any(homes.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(homes.iterdir())


LOUD = textwrap.dedent(
    """
    import sys
    for _ in range(2000):
        print("o" * 99)
        print("e" * 99, file=sys.stderr)
    print("the end", flush=True)
    """
)


def test_logs_keep_their_cap_and_say_the_rest_was_dropped(server_factory):
    server = server_factory(log_cap_bytes=5000)
    api = Api(server.url, server.add_user())
    unique = api.submit({"train.py": LOUD})
    assert api.wait(unique)["status"] == "Completed"
    marker = "\nkaio: this log reached its cap of 5000 bytes; the rest of it was dropped\n"
    for stream, char in (("stdout", "o"), ("stderr", "e")):
        log = api.get(f"/jobs/{unique}/logs", params={"stream": stream}).text
        assert log == ((char * 99 + "\n") * 100)[:5000] + marker
        assert "the end" not in log


# A bounded fork bomb: 60 processes that sleep, more than the platform's cap of 20.
FORKS = textwrap.dedent(
    """
    import subprocess, sys, time
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
                for _ in range(60)]
    time.sleep(60)
    """
)


def test_an_instance_running_too_many_processes_fails_and_harms_no_other_job(server_factory):
    server = server_factory(max_processes=20, max_instances=2)
    alice = Api(server.url, server.add_user())
    bob = Api(server.url, server.add_user())
    bomb = alice.submit({"train.py": FORKS})
    other = bob.submit({"train.py": "open('fine.txt', 'w').write('fine')"})
    job = alice.wait(bomb)
    assert job["status"] == "Failed"
    assert job["failure_reason"].startswith(
        "algo-1 ran more than 20 processes at once, the limit of an instance on this platform"
    )
    assert bob.wait(other)["status"] == "Completed"
    assert bob.outputs(other)["fine.txt"] == b"fine"
    if "pids" in limits.instance_cgroups("probe").parents:  # the kernel refused the 21st
        stderr = alice.get(f"/jobs/{bomb}/logs", params={"stream": "stderr"}).text
        assert "Resource temporarily unavailable" in stderr


def _started(api: Api, unique: str) -> str:
    job = api.wait(unique)
    assert job["status"] == "Completed", job
    return next(h["at"] for h in job["status_history"] if h["status"] == "InProgress")


def test_tenants_take_turns_on_a_busy_platform(server_factory, tmp_path):
    server = server_factory(max_instances=1)
    alice = Api(server.url, server.add_user())
    bob = Api(server.url, server.add_user())
    go = tmp_path / "go"
    first = alice.submit({"train.py": WAIT_FOR_GO}, env={"GO_FILE": str(go)})
    alice.wait_for_log(first, "ready")
    sweep = [alice.submit({"train.py": "print('a')"}) for _ in range(3)]
    late = bob.submit({"train.py": "print('b')"})
    go.touch()
    # Bob's one job comes right after alice's first, not after her whole sweep.
    order = sorted([(_started(alice, u), u) for u in sweep] + [(_started(bob, late), late)])
    assert [u for _, u in order] == [late, *sweep]


def test_max_instances_per_user_leaves_room_for_the_others(server_factory, tmp_path):
    server = server_factory(max_instances=3, max_instances_per_user=1)
    alice = Api(server.url, server.add_user())
    bob = Api(server.url, server.add_user())
    go = tmp_path / "go"
    holding = alice.submit({"train.py": WAIT_FOR_GO}, env={"GO_FILE": str(go)})
    alice.wait_for_log(holding, "ready")
    waiting = alice.submit({"train.py": WAIT_FOR_GO}, env={"GO_FILE": str(go)})
    bobs = bob.submit({"train.py": WAIT_FOR_GO}, env={"GO_FILE": str(go)})
    bob.wait_for_log(bobs, "ready")  # bob runs beside alice's first...
    assert alice.job(waiting)["status"] == "Pending"  # ...while her second waits for her first
    go.touch()
    for api, unique in ((alice, holding), (alice, waiting), (bob, bobs)):
        assert api.wait(unique)["status"] == "Completed"


def test_instances_start_in_cgroups_made_ahead_and_a_killed_server_leaves_none(server_factory):
    """Where the server may make cgroups, it keeps processes waiting in fresh ones (as many as
    its instance slots) for the next instances; killed, it leaves none of them behind."""
    if "pids" not in limits.instance_cgroups("probe").parents:
        pytest.skip("this user may make no cgroups here")
    server = server_factory(max_instances=2)
    api = Api(server.url, server.add_user())
    for name in ("first", "second"):
        assert api.wait(api.submit({"train.py": "print('ok')"}, job_name=name))["status"] == (
            "Completed"
        )
    parent = limits.instance_cgroups("probe").parents["pids"][0]
    mine = f"kaio-{leftovers.platform_id(server.data_dir)}-*"
    deadline = time.monotonic() + 10
    while len(list(parent.glob(mine))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(list(parent.glob(mine))) == 2  # the jobs' own are gone; two wait for the next
    server.kill()
    deadline = time.monotonic() + 10
    while list(parent.glob(mine)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(parent.glob(mine)) == []
