"""The Ray backend: the platform's jobs run on a Ray cluster, as tasks of one long-lived Ray
job of the platform's, whose driver is ray_driver.py (run from this install, which the nodes
share).

Why one Ray job for all, not one per platform job: a Ray job costs a process of Ray's own (its
job supervisor, about 1.8 CPU seconds to start, measured by benchmarks/ray.py's cgroup), and a
driver and a worker per instance besides; tasks of one driver run on Ray workers it reuses from
job to job (a placement group and a task: about 0.2 CPU seconds a job). What a Ray job per
platform job gave is kept: the platform's job name is the job's key in the driver's queue (a
file per job on the shared folder, taken once: a restart never runs a job twice) and names its
placement group (with the job's labels) and tasks on the Ray side; a restarted platform follows
its jobs by that key; stop is a `stop` file beside the job's spec, which the driver acts on.

The driver reserves a placement group of one bundle per instance, sized from the catalog, and
runs each instance in a task of its bundle with the local runner's environment (SM_CURRENT_HOST,
SM_HOSTS, SM_RESOURCE_CONFIG, the job's env, and CUDA_VISIBLE_DEVICES from Ray's assignment),
confined as a local one is: where the platform runs jobs in namespaces, each instance runs in
the bwrap command the local runner would start.

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
import uuid
from datetime import datetime, timezone
from pathlib import Path

import ray
from ray.job_submission import JobSubmissionClient

from kaio_spec import catalog
from kaio_spec.server import filestore, leftovers, namespaces, runner, storage
from kaio_spec.server.backends import BackendUnavailable, Parts
from kaio_spec.server.runner import JobRun
from kaio_spec.server.states import JobStatus

log = logging.getLogger("kaio.server")

DRIVER = Path(__file__).with_name("ray_driver.py")
POLL_S = 0.25  # how often a job's result and queue entry are looked at (files: no request)
DRIVER_POLL_S = 1.0  # how often the platform's driver's Ray status is asked (one request)
CONNECT_TIMEOUT_S = 60.0
QUEUE = "ray-queue"  # in the data folder: a file per job queued for the driver


class RayBackend:
    name = "ray"

    def __init__(self, parts: Parts):
        self.parts = parts
        config = parts.config
        self.machine_gpus: list[int] = []  # Ray places GPUs, not the scheduler
        self.started_ray = config.ray_address is None
        self.address = config.ray_address or start_local_ray()
        self.client = connect(self.address)
        self.queue = parts.layout.data_dir / QUEUE
        self.queue.mkdir(mode=0o700, exist_ok=True)
        self._lock = threading.Lock()
        self._driver: str | None = None  # its submission id
        self._ended: dict[str, tuple[float, str | None]] = {}  # driver: asked at, why ended
        self.driver()
        confined = "in namespaces on each node" if parts.sandbox.namespaced else "unconfined"
        print(
            f"kaio server: jobs run on the Ray cluster at {self.address}, {confined}",
            file=sys.stderr,
        )

    def run(self, job: dict, gpus: list[list[int]], alone: bool) -> RayRun:
        return RayRun(job, self, attached=False)

    def reattach(self, job: dict) -> RayRun | None:
        run = RayRun(job, self, attached=True)
        if not run.queued():
            return None  # never queued (or ended unseen): nothing of it runs
        if job["status"] == JobStatus.STOPPING.value:
            run.stop("user")  # asked before the restart: asked again once it runs
        return run

    def driver(self) -> str:
        """The submission id of the platform's driver, the Ray job that runs its jobs: the one
        running for this queue, or a new one."""
        current = self._driver
        if current and self.driver_ended(current) is None:
            return current
        with self._lock:
            if self._driver and self._driver != current:  # another thread found or started one
                return self._driver
            for job in self.client.list_jobs():
                meta = job.metadata or {}
                found = job.submission_id
                if (
                    found
                    and meta.get("kaio_queue") == str(self.queue)
                    and not job.status.is_terminal()
                ):
                    self._driver = found
                    return found
            self._driver = f"kaio-driver-{uuid.uuid4().hex[:12]}"
            submit_when_an_agent_answers(
                self.client,
                # This platform's Python and driver: the same install, path, on every node.
                # -I: the driver's folder off sys.path, where this ray.py would hide Ray.
                entrypoint=shlex.join([sys.executable, "-I", str(DRIVER), str(self.queue)]),
                submission_id=self._driver,
                metadata={"kaio_queue": str(self.queue)},
                entrypoint_num_cpus=0,
            )
            return self._driver

    def driver_ended(self, driver_id: str) -> str | None:
        """Why the platform's driver `driver_id` ended, or None while it runs: asked of Ray at
        most every DRIVER_POLL_S, one request for all the jobs followed."""
        with self._lock:
            asked_at, ended = self._ended.get(driver_id, (0.0, None))
            if ended or time.monotonic() - asked_at < DRIVER_POLL_S:
                return ended
            info = self.client.get_job_info(driver_id)
            if info.status.is_terminal():
                ended = f"the platform's Ray driver (Ray job {driver_id}) ended: {info.status}"
                ended += f" {info.message}" if info.message else ""
            self._ended[driver_id] = (time.monotonic(), ended)
            return ended

    def close(self) -> None:
        if self.started_ray:
            ray.shutdown()


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
    """One job on the Ray cluster, queued for the platform's driver; set-up (requirements) and
    the end (outputs, telemetry, final status) as the local runner's."""

    def __init__(self, job: dict, backend: RayBackend, attached: bool):
        no_gpus: list[list[int]] = [[] for _ in range(job["instance_count"])]  # Ray assigns them
        super().__init__(*backend.parts.job_run(job, no_gpus, [], False))
        self.prestart = None  # local processes started ahead: not for instances on Ray
        self.backend = backend
        self.address = backend.address
        self.attached = attached
        self.detached = False  # the platform shut down: the job runs on, followed later
        self.survives_shutdown = not backend.started_ray  # a Ray of its own ends with it
        self.spec_dir = self.files.root / "ray"
        self.entry = backend.queue / self.unique

    # ---- a fresh run: JobRun's, with these steps --------------------------------------------

    def _notices(self) -> None:
        self._log_all(f"kaio: runs on the Ray cluster at {self.address}\n")

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
        """The job queued for the platform's driver, once. Its spec holds the job's env: 0600,
        on the platform's disk, never in Ray's own tables."""
        if self.queued():
            return  # queued already (a restart between the queueing and its record)
        itype = self.itype
        labels = self.job.get("labels") or {}
        if isinstance(labels, str):
            labels = json.loads(labels)
        spec = {
            "unique": self.unique,
            # The placement group's name on the Ray side: the job and its labels.
            "ray_name": json.dumps(
                {"kaio_job": self.unique, **{str(k): str(v) for k, v in labels.items()}}
            ),
            "instance_type": itype.name,
            "instances": instances,
            "bundle": bundle_of(itype, self.config.ray_scale),
            "is_gpu": itype.is_gpu,
            "result": str(self.spec_dir / "result.json"),
        }
        self.spec_dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.spec_dir / "job.json"
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f)
        (self.spec_dir / "driver").write_text(self.backend.driver())
        tmp = self.entry.with_name(self.unique + ".tmp")
        tmp.write_text(str(spec_file))
        os.replace(tmp, self.entry)  # whole, or not there: the driver takes it once

    def queued(self) -> bool:
        """Whether it was queued: its entry waits or is taken, or it ended (its result)."""
        taken = self.entry.with_name(self.unique + ".taken")
        return any(p.exists() for p in (self.entry, taken, self.spec_dir / "result.json"))

    def _monitor(self, deadline: float) -> None:
        """Follow the job to its end (its result.json, or its queue entry gone once stopped):
        stop, max runtime and a shutdown handled here."""
        asked_stop = False
        result = self.spec_dir / "result.json"
        driver_id = (self.spec_dir / "driver").read_text().strip()
        while not result.exists():
            if not self.queued():  # taken and let go without a result: stopped, or lost
                if not asked_stop:
                    self.failure = (
                        self.failure
                        or "the platform's Ray driver let the job go without a result (it was restarted)"
                    )
                return
            ended = self.backend.driver_ended(driver_id)
            if ended and not result.exists():
                self.entry.unlink(missing_ok=True)  # not for the next driver: it failed here
                self.failure = self.failure or ended
                return
            if time.monotonic() >= deadline and self.stop_reason is None:
                self._begin_runtime_stop()
            if self._stop_requested.is_set() and not asked_stop:
                if self.stop_reason == runner.SHUTDOWN_REASON and self.survives_shutdown:
                    self.detached = True  # it runs on; the next platform re-attaches
                    return
                (self.spec_dir / "stop").touch()
                asked_stop = True
            with contextlib.suppress(Exception):
                self.events.get(timeout=POLL_S)
        self._read_result()

    def _read_result(self) -> None:
        """Each instance's exit and use, and the failure, from the driver's result.json."""
        try:
            result = json.loads((self.spec_dir / "result.json").read_text())
        except (OSError, ValueError):
            result = {"instances": {}, "failure": "the job's result from Ray cannot be read"}
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
