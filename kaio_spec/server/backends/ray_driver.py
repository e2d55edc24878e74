"""The platform's one Ray driver: the entrypoint of the one long-lived Ray job that runs all of
its jobs (backends/ray.py says why one, not one per platform job).

Run by its path in the platform's install (the same on every node) with the path of the queue
folder: a file per job naming its `job.json` (what backends/ray.py wrote). The driver takes an
entry once (renamed `.taken`: a driver that starts after another ended never runs it again) and
runs the job in a thread of its own: a placement group of one bundle per instance (STRICT_SPREAD
where the cluster has as many nodes, SPREAD otherwise), named by the job's unique name, and each
instance's command in a task pinned to its bundle, on workers Ray reuses from job to job. In
namespaces an instance runs in the bwrap command the platform built, with this node's bwrap,
never unconfined. The driver writes `result.json` (each instance's exit, run time, CPU time, peak
memory, node) where job.json says. The first instance that fails, or whose node is lost, ends
the job: the others are stopped; so does a `stop` file beside job.json.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

PENDING_NOTICE_S = 5.0  # a job still unplaced after this long says why in its logs
STOP_GRACE_S = 2.0  # an instance's process group: SIGTERM, then SIGKILL this much later
SCAN_S = 0.1  # how often the queue and the stop files are looked at
WAIT_S = 0.5  # how long a job's thread waits on Ray before it looks at its stop again
# Device nodes every CUDA program needs besides its GPUs' own (as namespaces.NVIDIA_CONTROL).
NVIDIA_CONTROL = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
)


def _die_with_parent() -> None:
    """In the instance's process: killed if the Ray worker running it dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]
    return []


def _end_group(pid: int, grace_s: float, confined: bool) -> None:
    """SIGTERM, then SIGKILL after `grace_s`, to the instance's process group; in namespaces
    to bwrap's child, their PID 1, which passes it on to the command's group (namespaces.py):
    bwrap killed would take the namespace, and the command's handler, with it."""
    inits = _children(pid) if confined else []
    for init in inits:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(init, signal.SIGTERM)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if not inits:
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def confined_argv(instance: dict, gpus: list, node: str | None = None) -> list[str] | str:
    """The instance's bwrap command (namespaces.py, built by the platform) as this node runs it:
    its bwrap, and the device nodes of the GPUs Ray gave this task; or why it cannot be (no
    bwrap here: the instance is not run unconfined)."""
    argv = list(instance["argv"])
    exe = argv[0] if os.access(argv[0], os.X_OK) else shutil.which("bwrap")
    if exe is None:
        node = node or node_address()
        return (
            f"{instance['host']} cannot start on Ray node {node}: bubblewrap (bwrap) is not "
            "installed there, and the platform runs jobs only in namespaces (install bwrap on "
            "every node, or run kaio server --no-sandbox)"
        )
    nodes = [f"/dev/nvidia{g}" for g in gpus] + list(NVIDIA_CONTROL) if gpus else []
    nodes += glob.glob("/dev/nvidia-caps/*") if gpus else []
    binds = [a for node in nodes if os.path.exists(node) for a in ("--dev-bind", node, node)]
    end = argv.index("--")  # bwrap's options end here; the command follows
    return [exe, *argv[1:end], *binds, *argv[end:]]


def node_address() -> str:
    """This node's address as Ray names it: the one it reaches the cluster's GCS from."""
    gcs = os.environ.get("RAY_ADDRESS", "").rpartition(":")[0] or "127.0.0.1"
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((gcs, 9))  # no packet is sent: this only picks the route
        return s.getsockname()[0]
    return socket.gethostname()


def run_command(instance: dict, gpus: list, node: str) -> dict:
    """Run one instance's command to its end here, on `node` with these GPUs (Ray's
    assignment); its exit and usage, or {"refused": why}."""
    env = dict(instance["env"])
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)  # a CPU type sees none
    argv = confined_argv(instance, gpus, node) if instance.get("confined") else instance["argv"]
    if isinstance(argv, str):
        with contextlib.suppress(OSError), open(instance["stdout"], "a") as out:
            out.write(f"kaio: {argv}\n")
        return {"refused": argv}
    with open(instance["stdout"], "ab") as out, open(instance["stderr"], "ab") as err:
        # Which process runs it, on which node (tests find the node by this pid).
        out.write(
            f"kaio: {instance['host']} runs on Ray node {node} (worker {os.getpid()})\n".encode()
        )
        out.flush()
        proc = subprocess.Popen(
            argv,
            cwd=instance["cwd"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its whole process group can be stopped
            preexec_fn=_die_with_parent,
        )
    t0, started_at = time.monotonic(), time.time()
    try:
        while True:  # polled, so that a cancellation reaches this thread
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.05)
    except BaseException:  # cancelled, or this driver's SIGTERM: the job is stopping
        _end_group(proc.pid, STOP_GRACE_S, bool(instance.get("confined")))
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # what it left running
    return {
        "exit_code": proc.returncode,
        "runtime_s": time.monotonic() - t0,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "rss_bytes": usage.ru_maxrss * 1024,
        "node": node,
        "started_at": started_at,
    }


def _log_all(spec: dict, text: str) -> None:
    for instance in spec["instances"]:
        with contextlib.suppress(OSError), open(instance["stdout"], "a") as out:
            out.write(f"kaio: {text}\n")


def unplaceable(nodes: list[dict], bundle: dict, count: int, instance_type: str) -> str | None:
    """Why `count` bundles can never be placed at once on live nodes of these resources, or
    None (the platform asks this before a one-instance job, the driver before a group)."""
    bundle = {k: v for k, v in bundle.items() if v}
    room = sum(int(min(have.get(k, 0) / v for k, v in bundle.items())) for have in nodes)
    if room == 0:
        return (
            f"cannot be placed: no node of the Ray cluster has {say(bundle)} for one "
            f"instance of {instance_type}"
        )
    if room < count:
        return (
            f"cannot be placed: the Ray cluster holds at most {room} of the {count} "
            f"instances of {instance_type} ({say(bundle)} each) at once"
        )
    return None


def place(spec: dict, stopping: threading.Event):
    """The job's placement group once placed, and its strategy; or why it never can be (or
    None, the job being stopped meanwhile)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    bundle = {k: v for k, v in spec["bundle"].items() if v}
    count = len(spec["instances"])
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    strategy = "STRICT_SPREAD" if len(nodes) >= count else "SPREAD"
    why = unplaceable(nodes, bundle, count, spec["instance_type"])
    if why:
        return None, why
    group = placement_group(
        [dict(bundle) for _ in range(count)], strategy=strategy, name=spec["ray_name"]
    )
    ready, since = group.ready(), time.monotonic()
    noticed = False
    while not ray.wait([ready], timeout=WAIT_S)[0]:
        if stopping.is_set():
            remove_placement_group(group)
            return None, None
        if not noticed and time.monotonic() - since >= PENDING_NOTICE_S:
            free = say(ray.available_resources())
            _log_all(
                spec,
                f"Pending: waiting for the Ray cluster to place {count} x {say(bundle)} "
                f"({strategy} over {len(nodes)} nodes); free now: {free}",
            )
            noticed = True
    return group, strategy


def say(resources: dict) -> str:
    parts = []
    for key in ("CPU", "GPU", "memory"):
        if key in resources:
            value = resources[key]
            parts.append(
                f"{value / 2**30:.1f} GiB memory" if key == "memory" else f"{value:g} {key}"
            )
    return ", ".join(parts) or "nothing"


def _write_result(spec: dict, result: dict) -> None:
    tmp = spec["result"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, spec["result"])


def _node_of(group, index: int) -> str:
    import ray
    from ray.util.placement_group import placement_group_table

    with contextlib.suppress(Exception):
        node_id = placement_group_table(group)["bundles_to_node_id"][index]
        for node in ray.nodes():
            if node["NodeID"] == node_id:
                return f"{node['NodeManagerAddress']} ({node_id[:12]})"
        return node_id[:12]
    return "unknown"


def run_job(spec: dict, stopping: threading.Event, run_instance) -> dict | None:
    """One platform job: its placement group, a task per instance in its bundle, the first
    failure ending the others; its result, or None where it was stopped."""
    import ray
    from ray.util.placement_group import remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    started_at = time.time()
    group, strategy = place(spec, stopping)
    if group is None:
        return {"failure": strategy, "instances": {}} if strategy else None
    placed_at, bundle = time.time(), spec["bundle"]
    refs = {}
    for index, instance in enumerate(spec["instances"]):
        options = {"num_cpus": bundle["CPU"], "num_gpus": bundle["GPU"], "memory": bundle["memory"]}
        strategy_of = PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=index
        )
        ref = run_instance.options(
            **options, scheduling_strategy=strategy_of, name=f"{spec['unique']}/{instance['host']}"
        ).remote(instance, spec["is_gpu"])
        refs[ref] = (index, instance["host"])
    results: dict[str, dict] = {}
    pending = list(refs)
    failure: str | dict | None = None  # the first: a reason, or a failed instance's exit
    while pending and failure is None and not stopping.is_set():
        done, pending = ray.wait(pending, num_returns=1, timeout=WAIT_S)
        if not done:
            continue
        index, host = refs[done[0]]
        try:
            results[host] = ray.get(done[0])
        except ray.exceptions.RayError as e:
            failure = (
                f"{host} was lost with its Ray node {_node_of(group, index)}: {type(e).__name__}"
            )
            continue
        if "refused" in results[host]:
            failure = results.pop(host)["refused"]
        elif results[host]["exit_code"] != 0:
            failure = {"host": host, "exit_code": results[host]["exit_code"]}
    for ref in pending:  # a failure, or the stop, ends the others: their process groups
        ray.cancel(ref)
    if pending:
        ray.wait(pending, num_returns=len(pending), timeout=STOP_GRACE_S + 1)
    remove_placement_group(group)
    if stopping.is_set() and failure is None:
        return None
    # The times (epoch seconds) say where a job's start goes: benchmarks/ray.py prints them.
    times = {"driver_at": started_at, "placed_at": placed_at}
    return {"failure": failure, "instances": results, "strategy": strategy, "times": times}


def serve_job(entry: str, stopping: threading.Event, run_instance) -> None:
    """The job a queue entry names, run to its end: its result.json (none where stopped: the
    platform knows), then the entry removed."""
    spec = None
    try:
        with open(entry) as f:
            spec_file = f.read().strip()
        with open(spec_file) as f:
            spec = json.load(f)
        result = run_job(spec, stopping, run_instance)
    except Exception as e:
        result = {"failure": f"the platform's Ray driver failed: {type(e).__name__}: {e}"}
        result["instances"] = {}
    if spec is not None and result is not None:
        if isinstance(result["failure"], str):
            _log_all(spec, result["failure"])
        _write_result(spec, result)
    with contextlib.suppress(OSError):
        os.unlink(entry)


def serve(queue: str) -> None:
    """The platform's one Ray driver: runs every job queued in `queue` (a file per job naming
    its job.json, written by backends/ray.py) as tasks of this one Ray job, whose workers Ray
    reuses from job to job; a job is stopped by a `stop` file beside its job.json. An entry
    taken by a driver that ended (its tasks ended with it) is not run again: the platform
    fails that job."""
    import ray

    ray.init()  # the cluster this Ray job runs on

    @ray.remote(max_retries=0)
    def run_instance(instance: dict, is_gpu: bool) -> dict:
        gpus = ray.get_gpu_ids() if is_gpu else []  # a CPU instance type sees none
        return run_command(instance, gpus, ray.util.get_node_ip_address())

    running: dict[str, tuple[threading.Thread, threading.Event, str]] = {}
    for entry in os.scandir(queue):  # taken by a driver before this one: never run twice
        if entry.name.endswith(".taken"):
            os.unlink(entry.path)
    while True:
        for entry in os.scandir(queue):
            if entry.name.endswith((".tmp", ".taken")) or entry.name in running:
                continue
            taken = entry.path + ".taken"
            os.replace(entry.path, taken)
            with open(taken) as f:
                stop_file = os.path.join(os.path.dirname(f.read().strip()), "stop")
            stopping = threading.Event()
            thread = threading.Thread(
                target=serve_job, args=(taken, stopping, run_instance), daemon=True
            )
            running[entry.name] = (thread, stopping, stop_file)
            thread.start()
        for name, (thread, stopping, stop_file) in list(running.items()):
            if not thread.is_alive():
                del running[name]
            elif not stopping.is_set() and os.path.exists(stop_file):
                stopping.set()
        time.sleep(SCAN_S)


def main() -> None:
    serve(sys.argv[1])


if __name__ == "__main__":
    main()
