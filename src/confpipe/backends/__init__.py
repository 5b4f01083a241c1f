"""The small Backend seam, and ``run_job``: the one place that drives a job to its result.

A backend only submits, polls, cancels and tails logs. Everything else lives here, once:
staging the cloudpickled call in a fresh job folder, waiting with backoff (woken at once by
a cancel), cancelling on Ctrl-C or a lost lease, retrying preemptions, enforcing
``resources.timeout`` and turning the worker's records into a value or a ``StepFailed``.

Job folder (``{output}/.confpipe/jobs/{job_id}/``), written by the driver and the worker:

    call.pkl      the cloudpickled ``(fn, kwargs)``
    result.json   ``{"value": ...}`` when ``fn`` returned
    error.json    ``{"type", "message", "traceback"}`` when it raised
    log.txt       the job's stdout and stderr
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import cloudpickle

from confpipe.cancel import CancelScope
from confpipe.errors import StepFailed
from confpipe.spec import Resources
from confpipe.storage import Store, store_for

CALL = "call.pkl"
RESULT = "result.json"
ERROR = "error.json"
LOG = "log.txt"
DRIVER_VAR = "CONFPIPE_DRIVER_PID"  # set for a local job: the worker dies with this process
LOG_TAIL_LINES = 40
FIRST_POLL_INTERVAL = 0.005

logger = logging.getLogger(__name__)


class BackendKind(Enum):
    LOCAL = "local"
    GCP = "gcp"


class JobState(Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PREEMPTED = "preempted"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class JobRequest:
    """One attempt of one step's call, staged in ``job_dir``."""

    step: str
    job_dir: str
    resources: Resources
    attempt: int = 0


@dataclass(frozen=True)
class JobStatus:
    """What ``poll`` saw; ``detail`` says why (``exit code 1``, a status event, ...)."""

    state: JobState
    detail: str = ""


class Backend(Protocol):
    """Where jobs run. Implementations keep ``poll`` cheap: it is called with backoff."""

    kind: BackendKind
    max_poll_interval: float  # cap of the polling backoff, seconds
    reattaches: bool  # a restarted driver finds this backend's live jobs: detach may apply

    def check(self, step: str, resources: Resources) -> None:
        """Raise ConfigError if this backend can't serve ``resources`` (before anything runs)."""
        ...

    def submit(self, job: JobRequest) -> object:
        """Start (or queue) the job whose call is staged in ``job.job_dir``; a handle."""
        ...

    def poll(self, handle: object) -> JobStatus: ...

    def cancel(self, handle: object) -> None:
        """Stop the job (queued or running); a finished job is left alone."""
        ...

    def logs(self, handle: object, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the job's log ("" if there is none yet)."""
        ...


def run_job(
    backend: Backend,
    step: str,
    job_root: str,
    fn: Callable[..., object],
    kwargs: Mapping[str, object],
    resources: Resources,
    *,
    scope: CancelScope,
    detach: bool = False,
) -> object:
    """Run ``fn(**kwargs)`` as a job on ``backend`` and return its value.

    Each attempt gets a fresh folder under ``job_root`` (``status.jobs_dir(output)``).
    Preemptions are retried up to ``resources.max_retries`` times, failures never. When
    ``scope`` is cancelled the job is cancelled too, except on Ctrl-C with ``detach``,
    which leaves it running; either way ``StepFailed`` is raised.
    """
    payload = cloudpickle.dumps((fn, dict(kwargs)))
    store = store_for(job_root)
    attempts = resources.max_retries + 1
    for attempt in range(attempts):
        if scope.is_set():
            raise StepFailed(step, f"cancelled: {scope.reason}")
        job_dir = f"{job_root.rstrip('/')}/{_job_id(attempt)}"
        store.write(f"{job_dir}/{CALL}", payload)
        handle = backend.submit(JobRequest(step, job_dir, resources, attempt))
        logger.debug("step %r: submitted job %s (%s)", step, job_dir, resources.describe())
        status = _wait(backend, handle, step, job_dir, resources, scope, detach)
        if status.state is JobState.SUCCEEDED:
            return _result(store, backend, handle, step, job_dir)
        if status.state is JobState.PREEMPTED and attempt + 1 < attempts:
            why = status.detail or "no detail"
            logger.warning("step %r: job %s preempted (%s), retrying", step, job_dir, why)
            continue
        if status.state is JobState.PREEMPTED:
            what = (
                f"job preempted {attempts} time(s) ({status.detail or 'no detail'}); "
                "raise resources.max_retries to retry more often"
            )
            raise _failure(backend, handle, step, job_dir, what)
        raise _job_error(store, backend, handle, step, job_dir, status)
    raise AssertionError("unreachable: the loop returns or raises")


def _wait(
    backend: Backend,
    handle: object,
    step: str,
    job_dir: str,
    resources: Resources,
    scope: CancelScope,
    detach: bool,
) -> JobStatus:
    """Poll until the job is done, backing off; a cancel or timeout stops the job and raises."""
    interval = FIRST_POLL_INTERVAL
    running_since: float | None = None
    while True:
        status = backend.poll(handle)
        if status.state.done:
            return status
        if status.state is JobState.RUNNING and running_since is None:
            running_since = time.monotonic()
        elif status.state is JobState.QUEUED:  # requeued (a retried preemption): a new attempt
            running_since = None
        timeout = resources.timeout
        if timeout and running_since is not None and time.monotonic() - running_since > timeout:
            backend.cancel(handle)
            what = f"timed out after running {timeout:g}s (resources.timeout); job cancelled"
            raise _failure(backend, handle, step, job_dir, what)
        if scope.wait(interval):
            if detach and scope.interrupted and backend.reattaches:
                raise StepFailed(
                    step, f"cancelled: {scope.reason}; job left running (detach): {job_dir}"
                )
            if detach and scope.interrupted:  # a job no restarted driver could re-attach to
                logger.warning(
                    "step %r: detach=true leaves only cloud jobs running (a restarted driver "
                    "re-attaches to those); a %s job stops with its driver",
                    step, backend.kind.value,
                )  # fmt: skip
            backend.cancel(handle)
            raise StepFailed(step, f"cancelled: {scope.reason}")
        interval = min(interval * 2, backend.max_poll_interval)


def _result(store: Store, backend: Backend, handle: object, step: str, job_dir: str) -> object:
    blob = store.read(f"{job_dir}/{RESULT}")
    if blob is None:
        raise _failure(backend, handle, step, job_dir, f"job succeeded but wrote no {RESULT}")
    return json.loads(blob.data)["value"]


def _job_error(
    store: Store, backend: Backend, handle: object, step: str, job_dir: str, status: JobStatus
) -> StepFailed:
    """The StepFailed for a job that failed: the remote error if it wrote one, else the exit."""
    blob = store.read(f"{job_dir}/{ERROR}")
    if blob is None:
        what = f"job {status.state.value} ({status.detail or 'no detail'}) without writing a record"
        return _failure(backend, handle, step, job_dir, what)
    record = json.loads(blob.data)
    err = _failure(backend, handle, step, job_dir, f"{record['type']}: {record['message']}")
    err.remote_traceback = record.get("traceback", "")
    return err


def _failure(backend: Backend, handle: object, step: str, job_dir: str, what: str) -> StepFailed:
    """``what``, then where the job folder is and the tail of its log."""
    tail = backend.logs(handle, LOG_TAIL_LINES).rstrip()
    text = f"{what}\n  job folder: {job_dir}"
    if tail:
        lines = "\n".join(f"    {line}" for line in tail.splitlines())
        text += f"\n  last lines of {LOG}:\n{lines}"
    err = StepFailed(step, text)
    where = getattr(backend, "log_path", None)  # optional: a multi-host job's failing host
    err.log_path = (where(handle) if where is not None else None) or f"{job_dir}/{LOG}"
    return err


def _job_id(attempt: int) -> str:
    """Sortable and unique: ``20250101-120000.123-0-1a2b3c4d`` (UTC, milliseconds, attempt)."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now * 1000) % 1000:03d}-{attempt}-{uuid.uuid4().hex[:8]}"
