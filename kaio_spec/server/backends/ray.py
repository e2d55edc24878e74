"""The Ray backend: each platform job one Ray job (Ray Jobs API) on a Ray cluster.

The Ray job's submission id is the platform's job name, so a restart never submits twice and a
restarted platform follows the jobs still running (`reattach`); labels travel as its metadata.
Its driver (ray_driver.py, run from this install, which the nodes share) runs a one-instance job
itself, Ray having placed the driver in the instance's resources (the entrypoint's CPUs, memory
and GPUs: no placement group, no Ray worker, no Ray import: each is a process start, about a CPU
second); for N instances it reserves a placement group of one bundle per instance, sized from
the catalog, and runs each instance there. Each instance gets the local runner's environment (SM_CURRENT_HOST, SM_HOSTS, SM_RESOURCE_CONFIG, the job's env, and
CUDA_VISIBLE_DEVICES from Ray's assignment), confined as a local one is: where the platform
runs jobs in namespaces, each instance runs in the bwrap command the local runner would start.

The data folder is shared: every node sees it at the same path (one machine, or NFS), so each
instance works in, and logs to, the same folders as a local one (algo-N/, logs/algo-N/): logs
stream while it runs and outputs are collected as the local runner's are. Requirements go into
the platform's own cached environments (environments.py), prepared once per requirements file
here, on that shared folder, instead of Ray's runtime_env pip: it works offline, is the cache
the local runner uses, and a sweep's 100 jobs install nothing 99 times.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import ray
from ray.job_submission import JobStatus as RayStatus
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_nodes

from kaio_spec import catalog
from kaio_spec.server import filestore, leftovers, namespaces, runner, storage
from kaio_spec.server.backends import BackendUnavailable, Parts, ray_driver
from kaio_spec.server.runner import JobRun
from kaio_spec.server.states import JobStatus

log = logging.getLogger("kaio.server")

DRIVER = Path(__file__).with_name("ray_driver.py")
POLL_S = 0.25  # how often the Ray jobs' statuses are listed (one request for all of them)
NODE_DEATH_S = 30.0  # how long a failed job's node may still be listed alive after it was lost
NODES_TTL_S = 5.0  # how long the cluster's nodes, as last listed, are taken as they are
CONNECT_TIMEOUT_S = 60.0
PENDING_S = ray_driver.PENDING_NOTICE_S
STOPPED_ON_RAY = "the Ray job was stopped on the Ray cluster, not through this platform"


class RayBackend:
    name = "ray"

    def __init__(self, parts: Parts):
        self.parts = parts
        config = parts.config
        self.machine_gpus: list[int] = []  # Ray places GPUs, not the scheduler
        self.started_ray = config.ray_address is None
        self.address = config.ray_address or start_local_ray()
        self.client = connect(self.address)
        self.statuses = Statuses(self.client)
        self._nodes: tuple[float, list] = (0.0, [])
        self._nodes_lock = threading.Lock()
        confined = "in namespaces on each node" if parts.sandbox.namespaced else "unconfined"
        print(f"kaio server: jobs run as Ray jobs on {self.address}, {confined}", file=sys.stderr)

    def run(self, job: dict, gpus: list[list[int]], alone: bool) -> RayRun:
        return RayRun(job, self, attached=False)

    def reattach(self, job: dict) -> RayRun | None:
        try:
            self.client.get_job_info(job["unique_job_name"])
        except Exception:  # unknown to Ray (never submitted, or the cluster is another)
            return None
        run = RayRun(job, self, attached=True)
        if job["status"] == JobStatus.STOPPING.value:
            run.stop("user")  # asked before the restart: asked again of Ray once it runs
        return run

    def nodes(self, fresh: bool = False) -> list:
        """The cluster's nodes (ray.util.state's NodeState), dead ones included; listed again
        once NODES_TTL_S old, or when asked `fresh`."""
        with self._nodes_lock:
            listed_at, nodes = self._nodes
            if fresh or time.monotonic() - listed_at >= NODES_TTL_S:
                nodes = list_nodes(
                    address=self.address, limit=10_000, raise_on_missing_output=False
                )
                self._nodes = (time.monotonic(), nodes)
            return nodes

    def close(self) -> None:
        if self.started_ray:
            ray.shutdown()


class Statuses:
    """Every Ray job's status, from one listing per POLL_S shared by all the runs that follow
    one (not a request per running job per round); asked of the job itself where a listing
    does not have it yet."""

    def __init__(self, client: JobSubmissionClient):
        self.client = client
        self._lock = threading.Lock()
        self._listed_at = 0.0
        self._statuses: dict[str, RayStatus] = {}

    def of(self, submission_id: str) -> RayStatus:
        with self._lock:
            if time.monotonic() - self._listed_at >= POLL_S:
                listing = self.client.list_jobs()
                self._statuses = {j.submission_id: j.status for j in listing if j.submission_id}
                self._listed_at = time.monotonic()
            status = self._statuses.get(submission_id)
        return status if status is not None else self.client.get_job_status(submission_id)


def start_local_ray() -> str:
    """A single-node Ray in this process, its job API on loopback; its address."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = ray.init(
        address="local",
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
    )
    return f"http://{context.dashboard_url}"


def connect(address: str) -> JobSubmissionClient:
    """A client of the cluster's job API, once it answers (a cluster just started takes a few
    seconds); RuntimeError naming the address if it never does."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        try:
            client = JobSubmissionClient(address)
            client.list_jobs()
            return client
        except Exception as e:
            if time.monotonic() >= deadline:
                raise BackendUnavailable(
                    f"the Ray cluster's job API at {address} does not answer: {e}"
                ) from None
            time.sleep(0.5)


def submit_when_an_agent_answers(client: JobSubmissionClient, **job) -> None:
    """client.submit_job(**job), tried again while the cluster says its job agent is not up yet
    (a cluster just started answers listings some seconds before it takes jobs)."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        try:
            client.submit_job(**job)
            return
        except RuntimeError as e:
            if "try again later" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def bundle_of(itype: catalog.InstanceType, scale: float = 1.0) -> dict[str, float]:
    """One instance's share of a node: the instance type's vCPUs and memory (times `scale`, for
    tests on tiny nodes) and GPUs, as Ray's resources of a bundle and of its task."""
    return {
        "CPU": itype.vcpus * scale,
        "memory": int(itype.memory_gb * 2**30 * scale),
        "GPU": itype.gpus if itype.is_gpu else 0,
    }


class RayRun(JobRun):
    """One job as one Ray job; set-up (requirements) and the end (outputs, telemetry, final
    status) as the local runner's, the instances on the cluster."""

    def __init__(self, job: dict, backend: RayBackend, attached: bool):
        no_gpus: list[list[int]] = [[] for _ in range(job["instance_count"])]  # Ray assigns them
        super().__init__(*backend.parts.job_run(job, no_gpus, [], False))
        self.prestart = None  # local processes started ahead: not for instances on Ray
        self.backend = backend
        self.client = backend.client
        self.address = backend.address
        self.attached = attached
        self.detached = False  # the platform shut down: the Ray job runs on, followed later
        self.survives_shutdown = not backend.started_ray  # a Ray of its own ends with it
        self.spec_dir = self.files.root / "ray"

    # ---- a fresh run: JobRun's, with these steps --------------------------------------------

    def _notices(self) -> None:
        self._log_all(f"kaio: runs as Ray job {self.unique} on the Ray cluster at {self.address}\n")

    def _launch(self, python: str) -> None:
        # As JobRun._launch: inputs (filestore.py) linked in before the package is handed out.
        job_env = {**self.files.read_env(), **filestore.mount(self.files.root, self.files.pkg)}
        self._original = storage.hand_out_package(self.files, self.hosts)
        instances = [self._instance_spec(inst, python, job_env) for inst in self.instances]
        self._submit(instances)

    def _instance_spec(self, inst: runner.Instance, python: str, job_env: dict[str, str]) -> dict:
        """What the driver runs for one instance: in namespaces, the bwrap command the local
        runner would start (data folder hidden but for the job's own folders, the tenant's
        HOME, a private /tmp), which the node runs with its bwrap and the GPUs Ray gave it."""
        writable, readable = self._instance_folders(inst, python)
        cwd = self.files.work(inst.host)
        if self.is_notebook:
            self.files.jupyter(inst.host).mkdir(parents=True, exist_ok=True)
        # Ray assigns the GPUs on the node: the driver binds their device nodes there.
        argv = self._sandboxed_command(inst, python, writable, readable, gpus=[])
        env = self._instance_env(inst, python, job_env)
        # A restarted platform on a node would kill it as a leftover of its own.
        env.pop(leftovers.MARK, None)
        return {
            "host": inst.host,
            "argv": argv,
            "confined": self.sandbox.namespaced,
            "cwd": str(cwd),
            "env": env,
            "stdout": str(self.files.logs(inst.host) / "stdout.log"),
            "stderr": str(self.files.logs(inst.host) / "stderr.log"),
        }

    def _submit(self, instances: list[dict]) -> None:
        """The Ray job, once. Its spec holds the job's env: 0600, on the platform's disk, never
        in Ray's own tables. The driver runs from this install (the same on every node), not
        from a working_dir: jobs started at once shared one cached working_dir (the same
        files), which one job's clean-up removed under another's driver (benchmarks/ray.py)."""
        itype = self.itype
        bundle = bundle_of(itype, self.config.ray_scale)
        spec = {
            "unique": self.unique,
            "instance_type": itype.name,
            "instances": instances,
            "bundle": bundle,
            "is_gpu": itype.is_gpu,
            "result": str(self.spec_dir / "result.json"),
        }
        # One instance: the driver runs it, placed by Ray in its resources; or, where no node
        # can ever hold it, fails saying why (on the head node, holding nothing).
        resources = {}
        if len(instances) == 1:
            alive = [n.resources_total for n in self.backend.nodes() if n.state == "ALIVE"]
            spec["refused"] = ray_driver.unplaceable(alive, bundle, 1, itype.name)
            if not spec["refused"]:
                resources = {
                    "entrypoint_num_cpus": bundle["CPU"],
                    "entrypoint_memory": bundle["memory"],
                    "entrypoint_num_gpus": bundle["GPU"],
                }
        self.spec_dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.spec_dir / "job.json"
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f)
        labels = self.job.get("labels") or {}
        if isinstance(labels, str):
            labels = json.loads(labels)
        try:
            submit_when_an_agent_answers(
                self.client,
                # This platform's Python and driver: the same install, path, on every node.
                # -I: the driver's folder off sys.path, where this ray.py would hide Ray.
                entrypoint=shlex.join([sys.executable, "-I", str(DRIVER), str(spec_file)]),
                submission_id=self.unique,
                metadata={"kaio_job": self.unique, **{str(k): str(v) for k, v in labels.items()}},
                **(resources or {"entrypoint_num_cpus": 0}),
            )
        except Exception as refused:
            # Submitted already (a restart between the submission and its record): follow it.
            try:
                self.client.get_job_info(self.unique)
            except Exception:
                raise refused from None

    def _monitor(self, deadline: float) -> None:
        """Follow the Ray job to its end: stop, max runtime and a shutdown handled here. The
        driver's result.json (on the shared folder) says that the instances ended at once;
        Ray's status, a moment later (its supervisor polls the driver), is waited for only
        where the driver wrote none (stopped, or lost)."""
        asked_stop, pending_since = False, time.monotonic()
        result = self.spec_dir / "result.json"
        while True:
            if result.exists():
                status = None
                break
            status = self.backend.statuses.of(self.unique)
            if status.is_terminal():
                break
            if status == RayStatus.PENDING and time.monotonic() - pending_since > PENDING_S:
                self._say_pending()
                pending_since = float("inf")
            if time.monotonic() >= deadline and self.stop_reason is None:
                self._begin_runtime_stop()
            if self._stop_requested.is_set() and not asked_stop:
                if self.stop_reason == runner.SHUTDOWN_REASON and self.survives_shutdown:
                    self.detached = True  # it runs on; the next platform re-attaches
                    return
                self.client.stop_job(self.unique)
                asked_stop = True
            with contextlib.suppress(Exception):
                self.events.get(timeout=POLL_S)
        self._read_result(status)

    def _say_pending(self) -> None:
        """A one-instance job Ray has not placed yet says what it waits for (the driver of
        a group says it itself)."""
        if len(self.instances) == 1:
            need = ray_driver.say(
                {k: v for k, v in bundle_of(self.itype, self.config.ray_scale).items() if v}
            )
            self._log_all(f"kaio: Pending: waiting for the Ray cluster to place 1 x {need}\n")

    def _read_result(self, status: RayStatus | None) -> None:
        """Each instance's exit and use, and the failure, from the driver's result.json."""
        try:
            result = json.loads((self.spec_dir / "result.json").read_text())
        except (OSError, ValueError):
            result = {"instances": {}, "failure": None}
        for inst in self.instances:
            done = result["instances"].get(inst.host)
            if done:
                inst.exit_code = self._exit_code(done["exit_code"])
                inst.runtime_s = done["runtime_s"]
                inst.cpu_seconds = done["cpu_seconds"]
                inst.rss_bytes = done["rss_bytes"]
        failure = result.get("failure")
        if self.failure is not None or (self.stop_reason and not failure):
            return
        if isinstance(failure, dict):
            inst = next(i for i in self.instances if i.host == failure["host"])
            node = result["instances"][inst.host].get("node", "?")
            code = self._exit_code(failure["exit_code"])
            self.failure = f"{self._failure_reason(inst, code)}\n(on node {node})"
        elif failure:
            self.failure = failure
        elif status == RayStatus.STOPPED:
            self.failure = STOPPED_ON_RAY
        elif status == RayStatus.FAILED:
            info = self.client.get_job_info(self.unique)
            self.failure = self._lost_with_node(info) or f"the Ray job failed: {info.message}"

    def _lost_with_node(self, info) -> str | None:
        """A one-instance job whose driver (and so its instance) died with its node: the
        reason naming the node."""
        died = "SUPERVISOR_ACTOR_DIED" in str(info.error_type)
        if len(self.instances) != 1 or not died or not info.driver_node_id:
            return None
        deadline = time.monotonic() + NODE_DEATH_S
        while True:  # the cluster may say the node is dead a little after its job failed
            node = next(
                (n for n in self.backend.nodes(fresh=True) if n.node_id == info.driver_node_id),
                None,
            )
            if node is not None and node.state != "ALIVE":
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(1.0)
        host = self.instances[0].host
        return f"{host} was lost with its Ray node {node.node_ip} ({node.node_id[:12]}): {info.message}"

    def _exit_code(self, code: int) -> int:
        # bwrap says a signal that killed the command as 128+N, as the local runner reads it.
        return namespaces.exit_code(code) if self.sandbox.namespaced else code

    # ---- a run re-attached after a restart ----------------------------------------------------

    def _run(self) -> None:
        if not self.attached:
            return super()._run()
        final, reason = JobStatus.FAILED, None
        try:
            self._open_logs()
            self._log_all("kaio: the platform restarted; following the Ray job again\n")
            self._monitor(self._deadline_after_restart())
            final, reason = self._outcome()
        except Exception as e:
            log.exception("job %s: following its Ray job", self.unique)
            final, reason = JobStatus.FAILED, f"platform error: {type(e).__name__}: {e}"
        finally:
            self._finish(final, reason)

    def _deadline_after_restart(self) -> float:
        limit_s = self.job["max_runtime_hours"] * 3600
        with contextlib.suppress(KeyError, TypeError, ValueError):
            started = datetime.fromisoformat(self.job["start_time"])
            if started.tzinfo is None:
                started = started.replace(tzinfo=timezone.utc)
            limit_s -= (datetime.now(timezone.utc) - started).total_seconds()
        return time.monotonic() + limit_s

    def _finish(self, final: JobStatus, reason: str | None) -> None:
        if not self.detached:
            (self.spec_dir / "job.json").unlink(missing_ok=True)  # it holds the job's env
            return super()._finish(final, reason)
        # The platform shut down under a job that runs on: nothing recorded, followed later.
        self._on_release(self)
        for out, err in self._logs.values():
            out.close()
            err.close()
        self._on_end(self)
