"""The local backend: each job is a subprocess of this Python, under a CPU/memory budget.

A job runs ``python -m confpipe.worker <job folder>`` in its own session (so Ctrl-C in the
terminal does not reach it and ``cancel`` can kill its whole process group), with its
output in ``log.txt`` (for a job folder on gs://, a local spool file uploaded there when
the job ends; a status names whichever holds the log now). Jobs whose cpu/memory don't
fit the remaining budget wait, queued in submission order; the job that ends starts the
next ones that fit. No thread polls. A job can't outlive its driver (no later driver could
re-attach to it): ``close`` stops the jobs still queued or running.

``build(settings)`` makes the backend from the ``backend`` node (``BackendConf``: the
budget as the config writes it, e.g. ``memory: 16GiB``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field

from confpipe.backends import DRIVER_VAR, LOG, BackendKind, JobRequest, JobState, JobStatus
from confpipe.backends.resources import Resources, parse_size
from confpipe.backends.settings import BackendConf
from confpipe.errors import ConfigError
from confpipe.storage import local_path, store_for

logger = logging.getLogger(__name__)
WHERE = "local job"  # where its steps run, as the plan shows it
GiB = 2**30
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL on cancel
_WAITING = "waiting for the cpu/memory budget"


def build(settings: BackendConf) -> LocalBackend:
    """The local backend with the budget ``settings`` give (null: this machine's); a config's
    ``backend.memory`` must name its unit."""
    memory = None if settings.memory is None else _memory(settings.memory, plain=False)
    return LocalBackend(cpu=settings.cpu, memory=memory)


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


@dataclass(eq=False)
class _Job:
    """The handle of one local job; ``status`` is replaced whole, so reading it needs no lock."""

    request: JobRequest
    job_dir: str
    log: str  # where the worker's output goes: in the job folder, or spooled (remote folder)
    status: JobStatus = field(default_factory=lambda: JobStatus(JobState.QUEUED, _WAITING))
    proc: subprocess.Popen[bytes] | None = None
    cancelled: bool = False
    uploaded: bool = False  # a spooled log is in the job folder now
    done: threading.Event = field(default_factory=threading.Event)

    def status_for(self, state: JobState, detail: str = "") -> JobStatus:
        """A status of this job, naming where its log is now."""
        spooled = self.remote and not self.uploaded
        where = self.log if spooled else f"{self.request.job_dir.rstrip('/')}/{LOG}"
        return JobStatus(state, detail, log=where)

    @property
    def cpu(self) -> float:
        return self.request.resources.cpu

    @property
    def remote(self) -> bool:
        return "://" in self.job_dir

    @property
    def memory(self) -> int:
        return self.request.resources.memory or 0


class LocalBackend:
    """Runs jobs as local subprocesses; at most ``cpu`` CPUs and ``memory`` bytes at once.

    The budget defaults to the CPUs this process may run on and the physical memory.
    """

    kind = BackendKind.LOCAL
    reattaches = False  # a job dies with its driver (confpipe.worker watches it)

    def __init__(
        self,
        *,
        cpu: float | None = None,
        memory: int | str | None = None,
        max_poll_interval: float = 0.01,
    ) -> None:
        if cpu is not None and not 0 < cpu < math.inf:  # also refuses nan
            raise ConfigError(f"backend.cpu: must be a positive number of CPUs, got {cpu!r}")
        self.cpu = float(cpu) if cpu is not None else machine_cpus()
        self.memory = _memory(memory, plain=True) if memory is not None else machine_memory()
        self.max_poll_interval = max_poll_interval
        self._lock = threading.Lock()
        self._queue: deque[_Job] = deque()
        self._cpu_used = 0.0
        self._memory_used = 0
        self._said_full = False  # the first job that has to wait says so, once
        self._spool: str | None = None  # local logs of jobs whose folders are remote
        self._spooled = itertools.count()
        self._live: set[_Job] = set()  # submitted, not done yet (guarded by self._lock)

    def check(self, step: str, resources: Resources) -> str:
        where = f"step {step!r}: resources"
        if resources.gpu is not None:
            raise ConfigError(
                f"{where}.gpu needs backend=gcp (Cloud Batch); the local backend runs CPU jobs only"
            )
        if resources.tpu is not None:
            raise ConfigError(
                f"{where}.tpu needs backend=gcp (Cloud TPU); the local backend runs CPU jobs only"
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

    def submit(self, job: JobRequest) -> object:
        self.check(job.step, job.resources)
        job_dir = local_path(job.job_dir)
        if job_dir.startswith("memory://"):
            raise ConfigError(
                f"step {job.step!r}: a local job runs in another process, which can't see this "
                f"process's memory:// prefix ({job.job_dir}); use a folder or gs://"
            )
        handle = _Job(job, job_dir, self._log_of(job_dir))
        handle.status = handle.status_for(JobState.QUEUED, _WAITING)
        with self._lock:
            self._live.add(handle)
            self._queue.append(handle)
            self._start_fitting()
            say = handle.proc is None and not handle.done.is_set() and not self._said_full
            self._said_full = self._said_full or say
        if say:
            logger.info(
                "step %r: waits for room in the local budget (%g CPUs, %.1fGiB); jobs start in "
                "turn as others finish (backend.cpu / backend.memory set the budget)",
                job.step, self.cpu, self.memory / GiB,
            )  # fmt: skip
        return handle

    def poll(self, handle: object) -> JobStatus:
        return _job(handle).status

    def cancel(self, handle: object) -> None:
        job = _job(handle)
        with self._lock:
            if job.done.is_set() or job.cancelled:
                proc = None
            elif job.proc is None:  # still queued: it never starts
                self._queue.remove(job)
                self._live.discard(job)
                job.cancelled = True
                job.status = job.status_for(JobState.CANCELLED, "cancelled while queued")
                job.done.set()
                return
            else:
                job.cancelled = True
                proc = job.proc
        if proc is None:
            job.done.wait()
            return
        _kill_group(proc.pid, signal.SIGTERM)
        job.done.wait(KILL_GRACE)
        _kill_group(proc.pid, signal.SIGKILL)  # the leader if it lingers, and any stragglers
        job.done.wait()

    def close(self) -> None:
        """Stop the jobs still queued or running: no later driver could re-attach to them.
        The backend stays usable."""
        with self._lock:
            live = list(self._live)
        for job in live:
            self.cancel(job)

    def _log_of(self, job_dir: str) -> str:
        """The job's log file: in its folder, or for a folder on gs:// a local spool file that
        is uploaded there when the job ends (a local job can work on a remote prefix)."""
        if "://" not in job_dir:
            return os.path.join(job_dir, LOG)
        if self._spool is None:
            self._spool = os.path.join(tempfile.gettempdir(), f"confpipe-jobs-{os.getpid()}")
        return os.path.join(self._spool, f"{next(self._spooled)}-{LOG}")

    def _start_fitting(self) -> None:
        """Start queued jobs in order while the first one fits the budget (lock held)."""
        while self._queue:
            job = self._queue[0]
            if self._cpu_used + job.cpu > self.cpu + 1e-9:
                return
            if self._memory_used + job.memory > self.memory:
                return
            self._queue.popleft()
            self._start(job)

    def _start(self, job: _Job) -> None:
        """Start the job's worker (lock held)."""
        try:
            if job.remote:  # the spool folder goes when its last log is uploaded (_reap)
                os.makedirs(os.path.dirname(job.log), exist_ok=True)
            with open(job.log, "wb") as log:
                job.proc = subprocess.Popen(
                    [sys.executable, "-m", "confpipe.worker", job.job_dir],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=job_env(job.request.resources),
                    start_new_session=True,
                )
        except OSError as err:
            job.status = job.status_for(JobState.FAILED, f"could not start the worker: {err}")
            self._live.discard(job)
            job.done.set()
            return
        self._cpu_used += job.cpu
        self._memory_used += job.memory
        job.status = job.status_for(JobState.RUNNING, f"pid {job.proc.pid}")
        name = f"confpipe-job-{job.proc.pid}"
        threading.Thread(target=self._reap, args=(job, job.proc), name=name, daemon=True).start()

    def _reap(self, job: _Job, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        if job.remote:
            job.uploaded = _upload_log(job)
        with self._lock:
            if job.remote:  # the spool folder, once no job's log is in it (starts make it)
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(job.log))
            self._cpu_used -= job.cpu
            self._memory_used -= job.memory
            if job.cancelled:
                job.status = job.status_for(JobState.CANCELLED, describe_exit(code))
            elif code == 0:
                job.status = job.status_for(JobState.SUCCEEDED)
            else:
                job.status = job.status_for(JobState.FAILED, describe_exit(code))
            self._live.discard(job)
            job.done.set()
            self._start_fitting()


def _upload_log(job: _Job) -> bool:
    """Put a spooled log into the job's remote folder, then drop the spool file; whether it
    is there now."""
    try:
        with open(job.log, "rb") as f:
            store_for(job.job_dir).write(f"{job.job_dir}/{LOG}", f.read())
    except Exception as err:  # the log is kept locally: say where
        logger.warning("step %r: could not upload %s: %s", job.request.step, job.log, err)
        return False
    with contextlib.suppress(OSError):
        os.unlink(job.log)
    return True


def job_env(resources: Resources) -> dict[str, str]:
    """This process's environment, its ``sys.path`` (so user modules import) and ``env``.

    Thread pools (OpenMP, BLAS, Rayon as in HF tokenizers) are capped at the job's CPUs
    unless the user set them, so a job stays within the budget it reserved.
    """
    paths = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    pythonpath = os.pathsep.join(dict.fromkeys(p for p in paths if os.path.exists(p)))
    threads = str(max(1, int(resources.cpu)))
    caps = {name: threads for name in _THREAD_VARS if name not in os.environ}
    return {
        **os.environ,
        **caps,
        "PYTHONPATH": pythonpath,
        "PYTHONUNBUFFERED": "1",
        DRIVER_VAR: str(os.getpid()),
        **resources.env,
    }


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def machine_cpus() -> float:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return float(len(os.sched_getaffinity(0)))
    return float(os.cpu_count() or 1)


def machine_memory() -> int:
    """Physical memory in bytes."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _job(handle: object) -> _Job:
    if not isinstance(handle, _Job):
        raise TypeError(f"not a local job handle: {handle!r}")
    return handle
