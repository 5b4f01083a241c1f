"""The local backend: each job is a subprocess of this Python, within a CPU/memory/GPU budget.

A job runs ``python -m confpipe.worker <job folder>`` in its own session (so Ctrl-C in the
terminal does not reach it), with its output in ``log.txt`` (for a job folder on gs://, a
private local spool file uploaded there when the job ends: ``spool``; a status names
whichever holds the log now). Jobs whose cpu/memory/GPUs don't fit the remaining budget
wait, queued in submission order; the job that ends starts the next ones that fit. A job
with ``gpu: {count: N}`` gets N devices of ``backend.gpus`` to itself, named in its
``CUDA_VISIBLE_DEVICES`` (``devices``).

A job keeps its word (``tree``): one thread walks every running job's process tree every
``POLL_INTERVAL`` seconds, so a job over its ``resources.memory`` (the RSS of all its
processes) is killed and fails with ``exceeded its memory: 128 MiB (peak 600 MiB)``
(recorded as its ``error.json``, the worker can't), and when it ends, or is cancelled,
whatever it started is stopped too, even a child that left its process group. A job can't
outlive its driver (no later driver could re-attach to it): ``close`` stops the jobs still
queued or running.

``build(settings)`` makes the backend from the ``backend`` node (``BackendConf``: the
budget as the config writes it, e.g. ``memory: 16GiB``, ``gpus: [0, 1]``).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque

from confpipe.backends import (
    CALL_DIGEST_VAR,
    LOG,
    BackendKind,
    JobRequest,
    JobState,
    JobStatus,
)
from confpipe.backends.local.devices import DevicePool
from confpipe.backends.local.job import WAITING, Job, record_error
from confpipe.backends.local.machine import describe_exit, job_env, machine_cpus, machine_memory
from confpipe.backends.local.spool import Spool, open_private, upload_log
from confpipe.backends.local.tree import (
    POLL_INTERVAL,
    ProcessTable,
    ProcessTree,
    size_text,
    wait_exit,
)
from confpipe.backends.resources import Resources, parse_size
from confpipe.backends.settings import BackendConf
from confpipe.errors import ConfigError
from confpipe.storage import local_path

__all__ = ["WHERE", "LocalBackend", "build", "job_env"]

logger = logging.getLogger(__name__)
WHERE = "local job"  # where its steps run, as the plan shows it
GiB = 2**30
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL on cancel, and for a job's leftovers
_OPEN_LOG = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)


def build(settings: BackendConf) -> LocalBackend:
    """The local backend with the budget ``settings`` give (null: this machine's); a config's
    ``backend.memory`` must name its unit."""
    memory = None if settings.memory is None else _memory(settings.memory, plain=False)
    return LocalBackend(cpu=settings.cpu, memory=memory, gpus=settings.gpus)


def _memory(value: object, *, plain: bool) -> int:
    """``backend.memory`` in bytes, checked positive: a size in its units or, where ``plain``
    (the Python API), a number of bytes."""
    if plain and isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        try:
            size = parse_size(value, plain_bytes=False)
        except ValueError as err:
            raise ConfigError(f"backend.memory: {err}") from None
    if size <= 0:
        raise ConfigError(f"backend.memory: must be positive, got {value!r}; use e.g. 16GiB")
    return size


class LocalBackend:
    """Runs jobs as local subprocesses; at most ``cpu`` CPUs, ``memory`` bytes and the GPUs
    ``gpus`` names (a count or device ids) at once.

    The budget defaults to the CPUs this process may run on, the physical memory and the
    GPUs ``nvidia-smi -L`` lists.
    """

    kind = BackendKind.LOCAL
    reattaches = False  # a job dies with its driver (confpipe.worker watches it)

    def __init__(
        self,
        *,
        cpu: float | None = None,
        memory: int | str | None = None,
        gpus: int | list[int | str] | None = None,
        max_poll_interval: float = 0.01,
    ) -> None:
        if cpu is not None and not 0 < cpu < math.inf:  # also refuses nan
            raise ConfigError(f"backend.cpu: must be a positive number of CPUs, got {cpu!r}")
        self.cpu = float(cpu) if cpu is not None else machine_cpus()
        self.memory = _memory(memory, plain=True) if memory is not None else machine_memory()
        self.gpus = DevicePool(gpus)
        self.max_poll_interval = max_poll_interval
        self._lock = threading.Lock()
        self._queue: deque[Job] = deque()
        self._cpu_used = 0.0
        self._memory_used = 0
        self._said_full = False  # the first job that has to wait says so, once
        self._spool = Spool()  # local logs of jobs whose folders are remote
        self._live: set[Job] = set()  # submitted, not done yet (guarded by self._lock)
        self._sampler: threading.Thread | None = None  # walks the running jobs' trees

    def check(self, step: str, resources: Resources) -> str:
        where = f"step {step!r}: resources"
        if resources.gpu is not None:
            self._check_gpus(where, resources.gpu.count)
        if resources.tpu is not None:
            raise ConfigError(
                f"{where}.tpu needs backend=gcp (Cloud TPU); the local backend runs CPU and GPU "
                "jobs only"
            )
        if resources.cpu > self.cpu:
            raise ConfigError(
                f"{where}.cpu={resources.cpu:g} is more than the local backend's budget of "
                f"{self.cpu:g} CPUs on this machine; lower it or use backend=gcp"
            )
        if resources.memory is not None and resources.memory > self.memory:
            raise ConfigError(
                f"{where}.memory={resources.memory / GiB:.1f}GiB is more than the local "
                f"backend's budget of {self.memory / GiB:.1f}GiB on this machine; lower it or "
                "use backend=gcp"
            )
        missing = sorted(k for k in resources.secret_env if k not in os.environ)
        if missing:
            raise ConfigError(
                f"{where}.secret_env: the local backend can't read Secret Manager; export "
                f"{', '.join(missing)} before launching (jobs inherit the environment) or use "
                "backend=gcp"
            )
        return WHERE

    def _check_gpus(self, where: str, count: int) -> None:
        with self._lock:
            have = len(self.gpus.devices)
        if count > have:
            raise ConfigError(
                f"{where}.gpu.count={count} is more than the {have} GPU(s) of the local backend "
                f"({self.gpus.source()}); lower it, set backend.gpus or use backend=gcp"
            )

    def submit(self, job: JobRequest) -> object:
        self.check(job.step, job.resources)
        job_dir = local_path(job.job_dir)
        if job_dir.startswith("memory://"):
            raise ConfigError(
                f"step {job.step!r}: a local job runs in another process, which can't see this "
                f"process's memory:// prefix ({job.job_dir}); use a folder or gs://"
            )
        handle = Job(job, job_dir)
        handle.status = handle.status_for(JobState.QUEUED, WAITING)
        with self._lock:
            self._live.add(handle)
            self._queue.append(handle)
            self._start_fitting()
            say = handle.proc is None and not handle.done.is_set() and not self._said_full
            self._said_full = self._said_full or say
        if say:
            logger.info(
                "step %r: waits for room in the local budget (%g CPUs, %.1fGiB%s); jobs start "
                "in turn as others finish (backend.cpu / backend.memory / backend.gpus set "
                "the budget)",
                job.step, self.cpu, self.memory / GiB,
                f", GPUs {','.join(self.gpus.devices)}" if job.resources.gpu else "",
            )  # fmt: skip
        return handle

    def poll(self, handle: object) -> JobStatus:
        return _job(handle).status

    def cancel(self, handle: object) -> None:
        job = _job(handle)
        with self._lock:
            if job.done.is_set() or job.cancelled:
                tree = None
            elif job.proc is None:  # still queued: it never starts
                self._queue.remove(job)
                self._live.discard(job)
                job.cancelled = True
                job.status = job.status_for(JobState.CANCELLED, "cancelled while queued")
                job.done.set()
                return
            else:
                job.cancelled = True
                tree = job.tree
        if tree is None:
            job.done.wait()
            return
        tree.signal(signal.SIGTERM)
        if not job.done.wait(KILL_GRACE):
            tree.signal(signal.SIGKILL)  # the leader if it lingers, and any stragglers
        job.done.wait()

    def close(self) -> None:
        """Stop the jobs still queued or running: no later driver could re-attach to them.
        The backend stays usable."""
        with self._lock:
            live = list(self._live)
        for job in live:
            self.cancel(job)

    def _start_fitting(self) -> None:
        """Start queued jobs in order while the first one fits the budget (lock held)."""
        while self._queue:
            job = self._queue[0]
            if self._cpu_used + job.cpu > self.cpu + 1e-9:
                return
            if self._memory_used + job.memory > self.memory:
                return
            if not self.gpus.fits(job.gpus):
                return
            self._queue.popleft()
            self._start(job)

    def _start(self, job: Job) -> None:
        """Start the job's worker (lock held)."""
        devices = self.gpus.take(job.gpus)
        try:
            if job.remote:  # the spool folder goes when its last log is uploaded (_watch)
                job.log = self._spool.new_log()
                log = open_private(job.log)
            else:
                job.log = os.path.join(job.job_dir, LOG)
                log = os.fdopen(os.open(job.log, _OPEN_LOG, 0o644), "wb")
            with log:
                job.proc = subprocess.Popen(
                    [sys.executable, "-m", "confpipe.worker", job.job_dir],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={  # the digest: the worker runs only the call.pkl the driver sent
                        **job_env(job.request.resources, devices),
                        CALL_DIGEST_VAR: job.request.call_digest,
                    },
                    start_new_session=True,
                )
            job.tree = ProcessTree(job.proc.pid)
        except OSError as err:
            self.gpus.give_back(devices)
            if job.proc is not None:  # psutil could not see it: stop it, it can't be watched
                job.proc.kill()
                job.proc.wait()
            job.status = job.status_for(JobState.FAILED, f"could not start the worker: {err}")
            self._live.discard(job)
            self._spool.tidy()
            job.done.set()
            return
        self._cpu_used += job.cpu
        self._memory_used += job.memory
        job.devices = devices
        job.status = job.status_for(JobState.RUNNING, f"pid {job.proc.pid}")
        name = f"confpipe-job-{job.proc.pid}"
        threading.Thread(target=self._watch, args=(job,), name=name, daemon=True).start()
        if self._sampler is None:
            self._sampler = threading.Thread(target=self._sample, name="confpipe-jobs", daemon=True)
            self._sampler.start()

    def _sample(self) -> None:
        """Every POLL_INTERVAL, walk the trees of the running jobs (one scan of the process
        table for all) and kill a job over its memory; ends when no job runs (a start makes
        a new one)."""
        while True:
            time.sleep(POLL_INTERVAL)
            with self._lock:
                jobs = [j for j in self._live if j.tree is not None and not j.exited]
                if not jobs:
                    self._sampler = None
                    return
            table = ProcessTable()
            for job in jobs:
                assert job.tree is not None
                rss = job.tree.sample(table)
                if not job.memory or rss <= job.memory or job.over:
                    continue
                with self._lock:
                    if job.exited:
                        continue
                    limit, peak = size_text(job.memory), size_text(job.tree.peak)
                    job.over = f"exceeded its memory: {limit} (peak {peak})"
                logger.warning("step %r: %s; killing its job", job.request.step, job.over)
                job.tree.signal(signal.SIGKILL)

    def _watch(self, job: Job) -> None:
        """Wait for the job's end, stop what it left running, record how it ended."""
        proc, tree = job.proc, job.tree
        assert proc is not None and tree is not None
        wait_exit(proc.pid)
        with self._lock:
            job.exited = True
            over = job.over
        left = tree.end(proc.wait, KILL_GRACE)
        code = proc.returncode
        if left and not over and not job.cancelled:
            logger.warning(
                "step %r: its job left processes running when it ended; stopped them",
                job.request.step,
            )
        if over:
            record_error(job, "MemoryError", over)
        if job.remote:
            job.uploaded = upload_log(job.log, job.job_dir, job.request.step)
        with self._lock:
            if job.remote:  # the spool folder, once no job's log is in it (starts make it)
                self._spool.tidy()
            self._cpu_used -= job.cpu
            self._memory_used -= job.memory
            self.gpus.give_back(job.devices)
            if job.cancelled:
                job.status = job.status_for(JobState.CANCELLED, describe_exit(code))
            elif over:
                job.status = job.status_for(JobState.FAILED, over)
            elif code == 0:
                job.status = job.status_for(JobState.SUCCEEDED)
            else:
                job.status = job.status_for(JobState.FAILED, describe_exit(code))
            self._live.discard(job)
            job.done.set()
            self._start_fitting()


def _job(handle: object) -> Job:
    if not isinstance(handle, Job):
        raise TypeError(f"not a local job handle: {handle!r}")
    return handle
