"""One job's run: set-up, `instance_count` processes, monitoring, and the end.

Each instance is a process in its own session (so its whole process group can be signalled) and
its own copy of the package. A thread per instance starts it, isolated (in namespaces of its own,
namespaces.py, or confined with Landlock, sandbox.py) and in its cgroups where the server may
make them (limits.py), its output through pipes into capped logs, then reaps it with wait4 (exit
status and resource usage, exact even for a job that lives for milliseconds) and reports to one
event queue; the monitor loop reads that queue, samples CPU, memory, processes and the volume
with psutil, and enforces stop, the runtime limit and the limits of limits.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from kaio_spec import catalog
from kaio_spec.server import (
    environments,
    filestore,
    gpu,
    leftovers,
    limits,
    namespaces,
    prestart,
    storage,
)
from kaio_spec.server.config import ServerConfig
from kaio_spec.server.sandbox import Sandbox
from kaio_spec.server.states import JobStatus
from kaio_spec.server.store import Store

log = logging.getLogger("kaio.server")

SAMPLE_INTERVAL_S = 0.5
VOLUME_SAMPLE_INTERVAL_S = 2.0  # at least: ten times what walking the job's files took
GPU_SAMPLE_INTERVAL_S = 2.0
# An instance's use over time (GET /jobs/<unique>/telemetry) keeps at most this many points: when
# full, every other one is dropped and points are kept half as often, so a long job's series
# spans its whole run at a coarser step, in bounded memory and one small row at the end.
MAX_SAMPLES = 240
MAX_RUNTIME_REASON = "MaxRuntimeExceeded"
SHUTDOWN_REASON = "the platform shut down while the job ran"


@dataclass
class Instance:
    host: str
    gpus: list[int]
    proc: subprocess.Popen | None = None
    exit_code: int | None = None
    runtime_s: float | None = None
    cpu_seconds: float | None = None
    rss_bytes: int = 0
    peak_cpu: float = 0.0
    peak_gpu_util: float | None = None
    peak_gpu_mem: float | None = None
    watched: dict[int, psutil.Process] = field(default_factory=dict)
    cgroups: dict[str, Path] = field(default_factory=dict)  # where it may have them (limits.py)
    gpu_now: tuple[float, float] | None = None  # the last GPU sample: (util %, memory MB)
    # [seconds since the job started, CPU %, RSS bytes, GPU util %, GPU memory MB]
    samples: list[list] = field(default_factory=list)
    keep_every: int = 1  # of the samples taken, every n-th is kept (doubles when full)
    taken: int = 0

    def record(self, t: float, cpu: float, rss: int) -> None:
        self.taken += 1
        if (self.taken - 1) % self.keep_every:
            return
        gpu_util, gpu_mem = self.gpu_now or (None, None)
        self.samples.append([round(t, 1), round(cpu, 1), rss, gpu_util, gpu_mem])
        if len(self.samples) > MAX_SAMPLES:
            self.samples = self.samples[::2]
            self.keep_every *= 2

    @property
    def done(self) -> bool:
        return self.exit_code is not None


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def exit_description(host: str, code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"{host} was killed by signal {name}"
    return f"{host} exited with code {code}"


def job_relative(text: str, folder: Path) -> str:
    """`text` with the paths inside the job's working folder made relative to it: a traceback in
    a failure reason names `train.py`, as the user's folder has it, not the platform's path."""
    for prefix in {str(folder), os.path.realpath(folder)}:
        text = text.replace(prefix + os.sep, "")
    return text


class JobRun:
    """Runs one job to its end on a thread of its own; `stop()` may be called from any thread."""

    def __init__(
        self,
        job: dict,
        config: ServerConfig,
        store: Store,
        files: storage.JobFiles,
        envs_dir: Path,
        gpus: list[list[int]],
        machine_gpus: list[int],
        alone_notice: bool,
        sandbox: Sandbox,
        platform: str,
    ):
        self.job = job
        self.unique = job["unique_job_name"]
        self.config = config
        self.store = store
        self.files = files
        self.envs_dir = envs_dir
        self.itype = catalog.INSTANCE_TYPES[job["instance_type"]]
        self.limits = limits.Limits.of(job, config)
        self.cgroups = limits.instance_cgroups(platform)
        # Instances started ahead, inside their cgroups, where moving into one costs (not with
        # Landlock: its confinement comes from the thread that starts a process).
        self.prestart = (
            prestart.pool(platform, config.max_instances)
            if self.cgroups.parents and not sandbox.active
            else None
        )
        self._pumps: list[limits.LogPump] = []
        self._next_volume_sample = 0.0
        self.hosts = storage.hosts_of(job)
        self.is_notebook = job["entrypoint"].endswith(".ipynb")
        self.instances = [Instance(h, g) for h, g in zip(self.hosts, gpus, strict=True)]
        self.machine_gpus = machine_gpus
        self.alone_notice = alone_notice
        self.sandbox = sandbox
        self.mark = leftovers.mark(platform, self.unique)  # in the environment of its processes
        self.events: queue.Queue = queue.Queue()
        self.stop_reason: str | None = None  # "user", MAX_RUNTIME_REASON or SHUTDOWN_REASON
        self.failure: str | None = None
        self._stop_requested = threading.Event()
        self.grace_s = config.stop_grace_s
        self._logs: dict[str, tuple] = {}
        self._original: dict[str, tuple[int, int]] | None = None  # what the package held
        self.listing: list[tuple[str, str, Path]] | None = None  # its outputs, once it ended
        self.thread = threading.Thread(target=self._run, name=f"job-{self.unique}", daemon=True)
        self.started = time.monotonic()  # samples' times count from here

    # ---- the public face ---------------------------------------------------------------------

    def start(self, on_release, on_end) -> None:
        """Run on a thread. `on_release(run)` is called once no process of the job is left (its
        capacity is free again), `on_end(run)` once its final status is recorded."""
        self._on_release = on_release
        self._on_end = on_end
        self.thread.start()

    def samples(self) -> dict[str, list[list]]:
        """Each instance's use over time so far (see Instance.samples), copied."""
        return {inst.host: list(inst.samples) for inst in self.instances}

    def stop(self, reason: str, grace_s: float | None = None) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if grace_s is not None:
            self.grace_s = min(self.grace_s, grace_s)
        self._stop_requested.set()
        self.events.put(("stop", None))

    # ---- the run -----------------------------------------------------------------------------

    def _run(self) -> None:
        final, reason = JobStatus.FAILED, None
        try:
            if not self.store.transition(self.unique, JobStatus.IN_PROGRESS):
                final = JobStatus.STOPPED  # stopped between the queue and here
                return
            self._touch_home()
            self._open_logs()
            self._notices()
            if self.job["base_package"]:  # its files are links to the base's until now
                storage.own_package(self.files)  # before pip or the job can write to them
            deadline = time.monotonic() + self.job["max_runtime_hours"] * 3600
            python = self._setup(deadline)
            if python is not None:
                self._launch(python)
                self._monitor(deadline)
            final, reason = self._outcome()
        except environments.SetupFailed as e:
            self._log_all(f"kaio: {e}\n")
            final, reason = JobStatus.FAILED, str(e)
        except Exception as e:  # a bug: the job fails with the reason, the platform carries on
            log.exception("job %s: platform error", self.unique)
            final, reason = JobStatus.FAILED, f"platform error: {type(e).__name__}: {e}"
        finally:
            self._finish(final, reason)

    def _open_logs(self) -> None:
        storage.prepare_run(self.files, self.hosts)  # done already, unless queued by a restart
        for inst in self.instances:
            folder = self.files.logs(inst.host)
            # Open for the job's life, closed in _finish.
            self._logs[inst.host] = (
                open(folder / "stdout.log", "ab", buffering=0),  # noqa: SIM115
                open(folder / "stderr.log", "ab", buffering=0),  # noqa: SIM115
            )

    def _log_all(self, text: str) -> None:
        for out, _ in self._logs.values():
            with contextlib.suppress(ValueError, OSError):
                out.write(text.encode("utf-8", "replace"))

    def _notices(self) -> None:
        # The first line of the log, as the issue asks: a GPU job without a GPU says so.
        if self.itype.is_gpu and not self.machine_gpus:
            self._log_all(
                f"kaio: no NVIDIA GPU on this machine: {self.itype.name} runs on the CPU\n"
            )
        if self.alone_notice:
            self._log_all(
                f"kaio: this job has {len(self.instances)} instances (GPUs: "
                f"{self.itype.gpus if self.itype.is_gpu else 0} each) but this platform runs "
                f"at most {self.config.max_instances} instances and has "
                f"{len(self.machine_gpus)} GPUs; it runs alone, all instances at once\n"
            )
        if notice := self.sandbox.notice():
            self._log_all(notice + "\n")

    def _setup(self, deadline: float) -> str | None:
        """The interpreter, or None if the job was stopped during set-up."""

        def should_stop() -> bool:
            if time.monotonic() >= deadline and self.stop_reason is None:
                self._begin_runtime_stop()
            return self._stop_requested.is_set()

        try:
            return environments.prepare(
                self.files.pkg,
                self.envs_dir,
                self._log_all,
                should_stop,
                self.files.root,
                self._start_setup_process,
            )
        except environments.SetupInterrupted:
            return None

    def _start_setup_process(self, writable: Path, **popen_args) -> subprocess.Popen:
        """pip, confined like the job (it runs the package's build backends), writing only
        beneath the package (built in place) and `writable` (the environment it installs into)."""
        env = self._base_env()
        # The server's pip settings (an index, a proxy), for pip alone; not its cache, in the
        # server's home.
        env.update(
            (k, v)
            for k, v in os.environ.items()
            if k.startswith("PIP_") and k not in namespaces.HOME_VARIABLES
        )
        env[leftovers.MARK] = self.mark
        folders = [self.files.pkg, writable]
        if self.sandbox.namespaced:
            popen_args["args"] = self.sandbox.command(
                popen_args["args"], popen_args["cwd"], folders, [self.envs_dir], home=self.home
            )
        if self.sandbox.private_tmp:
            folders.append(self._private_tmp("setup"))
            env["TMPDIR"] = str(folders[-1])
        return self.sandbox.spawn(
            folders, [self.envs_dir], lambda: subprocess.Popen(env=env, **popen_args)
        )

    @property
    def home(self) -> Path:
        """The tenant's HOME, in namespaces."""
        return self.sandbox.home_of(self.job["user_id"])

    def _touch_home(self) -> None:
        """Mark the tenant's HOME used now: the retention sweep deletes those long unused
        (leftovers.sweep_homes)."""
        if self.sandbox.namespaced:
            with contextlib.suppress(OSError):
                os.utime(self.home)

    def _base_env(self) -> dict[str, str]:
        """What a job's processes inherit of the server's environment: in namespaces, with the
        tenant's HOME and a private /tmp instead of the server's."""
        env = _server_env()
        return namespaces.environment(env, self.home) if self.sandbox.namespaced else env

    def _private_tmp(self, name: str) -> Path:
        tmp = self.files.tmp(name)
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def _instance_folders(self, inst: Instance, python: str) -> tuple[list[Path], list[Path]]:
        """What an instance may write beneath (its working folder, a notebook's Jupyter folder,
        its temp folder: not its logs, which the platform serves) and only read (its resource
        config, its Python)."""
        writable = [self.files.work(inst.host)]
        if self.is_notebook:
            writable.append(self.files.jupyter(inst.host))
        if self.sandbox.private_tmp:
            writable.append(self.files.tmp(inst.host))
        readable = [
            self.files.config(inst.host),
            self.envs_dir,
            *filestore.readable(self.files.root),
        ]
        if python != sys.executable:
            readable.append(Path(python).parent.parent)  # a venv of the job's own folder
        return writable, readable

    def _instance_env(self, inst: Instance, python: str, job_env: dict[str, str]) -> dict:
        env = self._base_env()
        env.update(job_env)
        if python != sys.executable:
            bin_dir = str(Path(python).parent)
            env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
            env["VIRTUAL_ENV"] = str(Path(python).parent.parent)
        config_file = self.files.config(inst.host)
        env.update(
            SM_CURRENT_HOST=inst.host,
            SM_HOSTS=",".join(self.hosts),
            SM_RESOURCE_CONFIG=str(config_file),
            PYTHONUNBUFFERED="1",  # logs can be followed while the job runs
            PYTHONDONTWRITEBYTECODE="1",  # no __pycache__ among the outputs
            **{leftovers.MARK: self.mark},  # after the job's env: a job cannot unmark itself
        )
        if self.is_notebook:  # the kernel's connection files, out of the outputs
            env["JUPYTER_RUNTIME_DIR"] = str(self.files.jupyter(inst.host))
        if self.sandbox.private_tmp:
            env["TMPDIR"] = str(self._private_tmp(inst.host))
        cuda = gpu.cuda_visible_devices(self.itype, inst.gpus, self.machine_gpus)
        if cuda is not None:
            env["CUDA_VISIBLE_DEVICES"] = cuda
        return env

    def _command(self, python: str) -> list[str]:
        entry = self.job["entrypoint"]
        if self.is_notebook:
            # Executed in place: the executed notebook is a changed file, so an output. The
            # kernel is pinned to the interpreter running nbconvert (the job's environment).
            return [
                python,
                "-m",
                "nbconvert",
                "--to",
                "notebook",
                "--execute",
                "--inplace",
                "--ExecutePreprocessor.kernel_name=python3",
                entry,
            ]
        return [python, entry]

    def _sandboxed_command(
        self,
        inst: Instance,
        python: str,
        writable: list[Path],
        readable: list[Path],
        gpus: list[int],
    ) -> list[str]:
        """The instance's command as the sandbox starts it (in namespaces: bwrap's)."""
        return self.sandbox.command(
            self._command(python),
            self.files.work(inst.host),
            writable,
            readable,
            home=self.home,
            gpus=gpus,
            tmp_bytes=self.limits.volume_bytes,
        )

    def _launch(self, python: str) -> None:
        # Inputs (filestore.py): linked in before the package is handed out; their variables win.
        job_env = {**self.files.read_env(), **filestore.mount(self.files.root, self.files.pkg)}
        self._original = storage.hand_out_package(self.files, self.hosts)
        # Each instance's process is kept as it starts: should a later one fail to start,
        # _finish kills those that did.
        for inst in self.instances:
            self._start_instance(inst, python, self._instance_env(inst, python, job_env))

    def _start_instance(self, inst: Instance, python: str, env: dict[str, str]) -> None:
        """Start the instance's process from a thread of its own, which then waits for it to
        exit (_reap): confined there (each instance has its own disk), as a confinement holds
        for the thread that asks for it and for what it starts. Raises what starting raised."""
        writable, readable = self._instance_folders(inst, python)
        cwd = self.files.work(inst.host)
        argv = self._sandboxed_command(inst, python, writable, readable, inst.gpus)
        if self.is_notebook:  # a folder made costs (storage.py): only where it serves
            self.files.jupyter(inst.host).mkdir(parents=True, exist_ok=True)
        ready = self._prestarted(argv, cwd, env)
        if ready is not None:
            inst.cgroups, out, err = ready.cgroups, ready.stdout, ready.stderr
        else:
            inst.cgroups = self.cgroups.create(f"{self.unique}-{inst.host}", self.limits)
            argv = self.cgroups.command(inst.cgroups, argv)
            # Through pipes, so that each log holds at most its cap (limits.LogPump).
            (out, out_w), (err, err_w) = os.pipe(), os.pipe()
        for read_fd, log_file, stream in zip(
            (out, err), self._logs[inst.host], ("stdout", "stderr"), strict=True
        ):
            name = f"{self.unique}-{inst.host}-{stream}"
            self._pumps.append(limits.LogPump(read_fd, log_file, self.limits.log_cap_bytes, name))
        started: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()

        def life() -> None:
            if ready is not None:
                inst.proc = ready.proc  # its own pipes were closed here as it started
                t0 = time.monotonic()
                started.put(None)
                return self._reap(inst, t0)
            try:
                self.sandbox.confine_this_thread(writable, readable)
                inst.proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=err_w,
                    start_new_session=True,
                )
            except BaseException as e:  # handed to the job's thread
                started.put(e)
                return
            finally:
                os.close(out_w)  # the job's now: its pumps end when the job's copies close
                os.close(err_w)
            t0 = time.monotonic()
            started.put(None)
            self._reap(inst, t0)

        threading.Thread(target=life, name=f"{self.unique}-{inst.host}", daemon=True).start()
        if (error := started.get()) is not None:
            raise error

    def _prestarted(self, argv: list[str], cwd: Path, env: dict[str, str]):
        """A process of the platform's prestart.Pool, made into this instance (in its cgroups,
        their limits set), or None: start it directly (no pool here, none ready, an
        environment the shell cannot export)."""
        if self.prestart is None or (text := prestart.script(argv, env, cwd)) is None:
            return None
        while (ready := self.prestart.take()) is not None:
            # (A cgroup whose limit could not be set holds the process to nothing: harmless.)
            self.cgroups.restrict(ready.cgroups, self.limits)
            if ready.run(text):
                return ready
            self.cgroups.remove(ready.cgroups)
        return None

    def _reap(self, inst: Instance, t0: float) -> None:
        assert inst.proc is not None
        _, status, usage = os.wait4(inst.proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if self.sandbox.namespaced:
            code = namespaces.exit_code(code)  # bwrap's own says a signal as 128+N
        inst.proc.returncode = code  # reaped here, so Popen must not try again
        inst.runtime_s = time.monotonic() - t0
        inst.cpu_seconds = usage.ru_utime + usage.ru_stime
        # ru_maxrss: KiB on Linux, bytes on macOS.
        maxrss = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
        inst.rss_bytes = max(inst.rss_bytes, maxrss)
        self.events.put(("exit", (inst, code)))

    def _monitor(self, deadline: float) -> None:
        kill_at: float | None = None
        term_sent: float | None = None
        # No sample at once: wait4's resource usage covers short jobs exactly, and walking the
        # process table right at the start would only slow them down.
        next_sample = time.monotonic() + SAMPLE_INTERVAL_S
        next_gpu_sample = time.monotonic()
        while not all(i.done for i in self.instances):
            now = time.monotonic()
            if now >= next_sample:
                self._sample()
                next_sample = now + SAMPLE_INTERVAL_S
            if now >= next_gpu_sample and any(i.gpus for i in self.instances):
                self._sample_gpus()
                next_gpu_sample = now + GPU_SAMPLE_INTERVAL_S
            if now >= deadline and self.stop_reason is None:
                self._begin_runtime_stop()
            if self._stop_requested.is_set():
                if term_sent is None:
                    term_sent = now
                    self._signal_all(signal.SIGTERM)
                kill_at = term_sent + self.grace_s  # a shutdown may shorten the grace
            if kill_at is not None and now >= kill_at:
                self._signal_all(signal.SIGKILL)
            wake = [next_sample, deadline] + ([kill_at] if kill_at else [])
            try:
                kind, payload = self.events.get(timeout=max(0.0, min(wake) - time.monotonic()))
            except queue.Empty:
                continue
            if kind == "exit":
                inst, code = payload
                inst.exit_code = code
                if code != 0 and self.failure is None and not self._stop_requested.is_set():
                    self.failure = self._failure_reason(inst, code)
                    # The first failure ends the job: the other instances are stopped.
                    self._stop_requested.set()

    def _begin_runtime_stop(self) -> None:
        if self.store.transition(self.unique, JobStatus.STOPPING):
            self._log_all(
                f"kaio: the job reached max_runtime_hours={self.job['max_runtime_hours']} "
                "and is being stopped\n"
            )
        self.stop(MAX_RUNTIME_REASON)

    def _signal_all(self, sig: int) -> None:
        for inst in self.instances:
            if inst.proc is None or inst.done:
                continue
            if self.sandbox.namespaced:
                namespaces.signal_job(inst.proc.pid, sig)
            else:
                kill_group(inst.proc.pid, sig)

    def _failure_reason(self, inst: Instance, code: int) -> str:
        last = job_relative(
            storage.tail(self.files.logs(inst.host) / "stderr.log"), self.files.work(inst.host)
        )
        reason = exit_description(inst.host, code)
        # What the kernel held it to, in its cgroups, is what it died of, most likely.
        if self.cgroups.hit(inst.cgroups, "memory"):
            reason = self.limits.memory_exceeded(inst.host)
            self._log_all(f"kaio: {reason}\n")
        elif self.cgroups.hit(inst.cgroups, "pids"):
            reason = self.limits.processes_exceeded(inst.host)
            self._log_all(f"kaio: {reason}\n")
        return f"{reason}; last lines of its stderr:\n{last}" if last else reason

    def _sample(self) -> None:
        for inst in self.instances:
            if inst.proc is None or inst.done:
                continue
            try:
                leader = inst.watched.get(inst.proc.pid) or psutil.Process(inst.proc.pid)
                tree = [leader, *leader.children(recursive=True)]
            except psutil.Error:
                continue
            cpu, rss = 0.0, 0
            for p in tree:
                p = inst.watched.setdefault(p.pid, p)  # cpu_percent needs the same object
                with contextlib.suppress(psutil.Error):
                    cpu += p.cpu_percent(None)
                    rss += p.memory_info().rss
            inst.peak_cpu = max(inst.peak_cpu, cpu)
            inst.rss_bytes = max(inst.rss_bytes, rss)
            inst.record(time.monotonic() - self.started, cpu, rss)
            if rss > self.limits.memory_bytes or self.cgroups.hit(inst.cgroups, "memory"):
                self._exceeded(self.limits.memory_exceeded(inst.host))
            elif len(tree) > self.limits.max_processes or self.cgroups.hit(inst.cgroups, "pids"):
                self._exceeded(self.limits.processes_exceeded(inst.host))
        if time.monotonic() >= self._next_volume_sample:
            self._sample_volume()

    def _sample_volume(self) -> None:
        t0 = time.monotonic()
        folders = [self.files.root / name for name in ("work", "jupyter", "tmp", "venv")]
        if self.sandbox.namespaced:  # its tenant's HOME is on its volume too
            folders.append(self.home)
        if limits.disk_usage(folders) > self.limits.volume_bytes:
            self._exceeded(self.limits.volume_exceeded())
        took = time.monotonic() - t0
        self._next_volume_sample = t0 + took + max(VOLUME_SAMPLE_INTERVAL_S, 10 * took)

    def _exceeded(self, reason: str) -> None:
        """An instance went past a limit: the job fails with `reason`, all of it killed now."""
        if self.failure is not None or self._stop_requested.is_set():
            return
        self.failure = reason
        self._log_all(f"kaio: {reason}: the job is stopped\n")
        self.grace_s = 0.0
        self._stop_requested.set()

    def _sample_gpus(self) -> None:
        usage = gpu.gpu_usage()
        for inst in self.instances:
            seen = [usage[g] for g in inst.gpus if g in usage]
            if seen:
                inst.gpu_now = (max(u for u, _ in seen), sum(m for _, m in seen))
                inst.peak_gpu_util = max(inst.peak_gpu_util or 0.0, *(u for u, _ in seen))
                inst.peak_gpu_mem = max(inst.peak_gpu_mem or 0.0, sum(m for _, m in seen))

    def _outcome(self) -> tuple[JobStatus, str | None]:
        # A failure is only recorded before any stop, so it came first and wins.
        if self.stop_reason == SHUTDOWN_REASON:
            return JobStatus.FAILED, SHUTDOWN_REASON
        if self.failure:
            return JobStatus.FAILED, self.failure
        if self.stop_reason == MAX_RUNTIME_REASON:
            return JobStatus.STOPPED, MAX_RUNTIME_REASON
        if self.stop_reason == "user":
            return JobStatus.STOPPED, None
        return JobStatus.COMPLETED, None

    # ---- the end -----------------------------------------------------------------------------

    def _telemetry(self) -> dict[str, dict]:
        rows = {}
        for inst in self.instances:
            avg = (
                100 * inst.cpu_seconds / inst.runtime_s
                if inst.cpu_seconds is not None and inst.runtime_s
                else 0.0
            )
            rows[inst.host] = {
                "runtime_s": inst.runtime_s,
                "exit_code": inst.exit_code,
                "cpu_seconds": inst.cpu_seconds,
                "peak_cpu_percent": max(inst.peak_cpu, avg),
                "peak_rss_bytes": inst.rss_bytes or None,
                "peak_gpu_util_percent": inst.peak_gpu_util,
                "peak_gpu_memory_mb": inst.peak_gpu_mem,
                "samples": json.dumps(inst.samples, separators=(",", ":")),
            }
        return rows

    def _finish(self, final: JobStatus, reason: str | None) -> None:
        try:
            for inst in self.instances:
                if inst.proc is not None:
                    kill_group(inst.proc.pid)  # whatever the instance left running
        except Exception:
            log.exception("job %s: killing what is left", self.unique)
        for inst in self.instances:
            self.cgroups.remove(inst.cgroups, wait_s=1.0)
        self._touch_home()
        # Nothing of the job runs any more: the next job may start while this one is wrapped up.
        self._on_release(self)
        try:
            deadline = time.monotonic() + 5.0  # what the instances wrote last, in their logs
            for pump in self._pumps:
                pump.thread.join(max(0.0, deadline - time.monotonic()))
            for out, err in self._logs.values():
                out.close()
                err.close()
            self.files.forget_env()
            if self.sandbox.private_tmp:
                self.files.remove_tmp()
            # Outputs are in place before the status turns final: a client that sees the end
            # can list them at once. How it ended is kept first, for a restart in between.
            self.files.record_outcome(final.value, reason)
            storage.collect_outputs(self.files, self.hosts, self._original)
            # Listed once, now that nothing changes them, for every client that downloads them.
            self.listing = storage.list_outputs(self.files, self.hosts)
            telemetry = self._telemetry()
        except Exception:
            log.exception("job %s: cleaning up", self.unique)
            telemetry = None
        finally:
            if reason and len(reason) > 4000:
                reason = reason[:4000] + "..."
            end_job(self.store, self.unique, final, reason, telemetry)
            self._on_end(self)


# What a job's processes get of the server's environment: what programs need to run as they
# would on the machine (locale, time zone, the server's Python's search path, GPU libraries, a
# proxy to reach the network through, its certificates). Nothing else: the server's process may
# hold credentials (a cloud key, a database URL, its KAIO_* settings) that are no tenant's.
JOB_ENV_NAMES = frozenset(
    {
        *("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LANGUAGE", "TZ", "TMPDIR"),
        *("PYTHONPATH", "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH"),
        *("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"),
        *("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"),
    }
)
JOB_ENV_PREFIXES = ("LC_", "NVIDIA_")


def _server_env() -> dict[str, str]:
    """The variables of the server's environment that jobs get (JOB_ENV_NAMES)."""
    return {
        k: v for k, v in os.environ.items() if k in JOB_ENV_NAMES or k.startswith(JOB_ENV_PREFIXES)
    }


def end_job(
    store: Store, unique: str, final: JobStatus, reason: str | None, telemetry: dict | None = None
) -> None:
    """Move a job to `final`, with its instances' telemetry; if a stop raced in (the job is
    Stopping), it ends Stopped."""
    fields: dict[str, Any] = {"failure_reason": reason, "telemetry": telemetry}
    if store.transition(unique, final, **fields):
        return
    status = JobStatus(store.get_job(unique)["status"])
    if status is JobStatus.STOPPING:
        store.transition(unique, JobStatus.STOPPED, **fields)
    elif status is JobStatus.PENDING:  # never started: a stop on a queued job
        store.transition(unique, JobStatus.STOPPING)
        store.transition(unique, JobStatus.STOPPED, **fields)
