"""GET /jobs/<unique>/telemetry (local): each instance's CPU, memory and GPU use over time, on a
real server with real job processes; only its owner sees it."""

from __future__ import annotations

import itertools
import textwrap

import pytest
from server_support import Api
from support import poll

from kaio_spec.server.runner import MAX_SAMPLES, Instance

# Holds 64 MB and keeps a core busy until GO_FILE exists.
BUSY = textwrap.dedent(
    """
    import os, time
    block = bytearray(64 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    print("allocated", flush=True)
    while not os.path.exists(os.environ["GO_FILE"]):
        sum(range(10000))
    print("done", flush=True)
    """
)
MB = 1024 * 1024


def test_a_jobs_use_over_time_while_it_runs_and_after_and_only_for_its_owner(kaio_server, tmp_path):
    alice = Api(kaio_server.url, kaio_server.add_user())
    bob = Api(kaio_server.url, kaio_server.add_user())
    go = tmp_path / "go"
    unique = alice.submit(
        {"train.py": BUSY}, job_name="busy", instance_count=2, env={"GO_FILE": str(go)}
    )
    alice.wait_for_log(unique, "allocated")
    alice.wait_for_log(unique, "allocated", host="algo-2")

    def telemetry() -> dict:
        r = alice.get(f"/jobs/{unique}/telemetry")
        assert r.status_code == 200, r.text
        return r.json()

    def busy_on_both(doc: dict) -> bool:
        return all(
            any(s[2] >= 64 * MB and s[1] > 20 for s in inst["samples"]) for inst in doc["instances"]
        )

    live = poll(telemetry, busy_on_both, "samples of both instances using 64 MB and a core")
    assert live["status"] == "InProgress"
    assert live["sample_fields"] == [
        "seconds",
        "cpu_percent",
        "rss_bytes",
        "gpu_util_percent",
        "gpu_memory_mb",
    ]
    assert [i["host"] for i in live["instances"]] == ["algo-1", "algo-2"]
    assert live["instances"][0]["peak_rss_bytes"] is None  # totals come at the end

    # Another tenant: exactly what a missing job answers, and nothing of alice's.
    theirs = bob.get(f"/jobs/{unique}/telemetry")
    other = unique[:-7] + "missing"
    missing = bob.get(f"/jobs/{other}/telemetry")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text.replace(unique, "X") == missing.text.replace(other, "X")

    go.touch()
    assert alice.wait(unique)["status"] == "Completed"
    ended = telemetry()
    assert ended["status"] == "Completed"
    for inst in ended["instances"]:
        times = [s[0] for s in inst["samples"]]
        assert times == sorted(times) and len(times) >= 1
        assert inst["peak_rss_bytes"] >= 64 * MB and inst["exit_code"] == 0
        assert inst["peak_gpu_util_percent"] is None  # no GPU asked for
    assert bob.get(f"/jobs/{unique}/telemetry").status_code == 404


def test_a_long_runs_samples_stay_bounded_and_span_the_whole_run():
    inst = Instance("algo-1", [])
    for n in range(10_000):  # 83 minutes at one sample every half second
        inst.record(n * 0.5, 50.0, n)
    times = [s[0] for s in inst.samples]
    assert MAX_SAMPLES // 2 <= len(times) <= MAX_SAMPLES
    assert times[0] == 0.0 and times[-1] >= 0.5 * 10_000 * 0.95
    steps = {round(b - a, 1) for a, b in itertools.pairwise(times)}
    assert len(steps) == 1  # evenly spaced


@pytest.mark.parametrize("route", ["/jobs/nope/telemetry"])
def test_an_unknown_job_is_a_404_naming_it(kaio_server, route):
    api = Api(kaio_server.url, kaio_server.add_user())
    r = api.get(route)
    assert r.status_code == 404
    assert r.json() == {"error": "unique_job_name: no job 'nope'"}
