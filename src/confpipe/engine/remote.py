"""The one job wrapper: ``@remote`` marks a function, ``as_job`` makes a step a job, ``run_job``
drives one job to its result.

The decorator only marks: the function is returned unchanged (calling it still just calls
it, and it pickles and imports by its own name). The pipeline decides where a step runs:
the step's explicit resources win over the decorator's (``step_resources``), and a step
with resources is wrapped with ``as_job``, which submits each call to a backend and waits.

``run_job`` is the one place that drives a job, whatever the backend: staging the
cloudpickled call in a fresh job folder, waiting with backoff (woken at once by a cancel),
cancelling on Ctrl-C or a lost lease, retrying preemptions, enforcing ``resources.timeout``
and turning the worker's records into a value or a ``StepFailed`` that ends with the tail
of the job's log (read through its store, wherever the backend's last status says it is).
A bucket that does not answer is tried again with backoff while the step is ours
(``backends.patience``).
While the job runs, the new lines of its log are echoed, and when it ends its log becomes
the step's ``.confpipe/log.txt`` (``confpipe.engine.joblog``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import ParamSpec, TypeVar, cast

import cloudpickle

from confpipe import cancel
from confpipe.backends import (
    CALL,
    ERROR,
    LOG,
    RESULT,
    Backend,
    JobRequest,
    JobState,
    JobStatus,
    decode_result,
)
from confpipe.backends.patience import JOB_PATIENCE, patiently
from confpipe.backends.resources import Resources
from confpipe.backends.results import MAX_RESULT_BYTES, StoredResult
from confpipe.cancel import CancelScope
from confpipe.engine import status
from confpipe.engine.joblog import LogFollower, StepJobLogs
from confpipe.errors import StepFailed
from confpipe.storage import Store, store_for

P = ParamSpec("P")
R = TypeVar("R")

MARK = "__confpipe_remote__"
FIRST_POLL_INTERVAL = 0.005
LOG_TAIL_LINES = 40  # of a failed job's log, in its StepFailed
_LOG_TAIL_BYTES = 64 * 1024  # read from the end of the log for them

logger = logging.getLogger(__name__)


def remote(*, resources: Resources) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a function to be submitted as a job with ``resources`` when run as a step."""
    if not isinstance(resources, Resources):
        raise TypeError(f"@remote(resources=...) takes a confpipe.Resources, got {resources!r}")

    def mark(fn: Callable[P, R]) -> Callable[P, R]:
        setattr(fn, MARK, resources)
        return fn

    return mark


def resources_of(fn: Callable[..., object]) -> Resources | None:
    """The resources ``@remote`` marked ``fn`` with, or None."""
    marked = getattr(fn, MARK, None)
    return marked if isinstance(marked, Resources) else None


def step_resources(explicit: Resources | None, fn: Callable[..., object]) -> Resources | None:
    """What a step runs with: its own ``resources`` if given, else the decorator's, else None."""
    return explicit if explicit is not None else resources_of(fn)


def as_job(
    fn: Callable[P, R],
    *,
    step: str,
    resources: Resources,
    backend: Backend,
    detach: bool = False,
    echo: Callable[[str], None] | None = None,
    log_level: str = "INFO",
    stored: bool = False,
) -> Callable[P, R]:
    """``fn`` with the same signature, each call run as a job on ``backend``.

    Call it as ``fn(output_path=..., **config)`` (keywords only): the job folder goes under
    ``status.jobs_dir(output_path)``, the job's log ends in ``status.log_path(output_path)``
    (each new line given to ``echo`` as the job runs) and the current cancel scope stops the
    job. With ``stored``, a call returns the job's result record unread (a ``StoredResult``,
    which the step's records move into place) instead of its value.
    """

    @functools.wraps(fn)
    def job(*args: P.args, **kwargs: P.kwargs) -> R:
        if args:
            raise TypeError(f"step {step!r}: a job is called with keyword arguments only")
        output_path = kwargs.get("output_path")
        if not isinstance(output_path, str):
            raise TypeError(f"step {step!r}: a job needs output_path=<str>, got {output_path!r}")
        value = run_job(
            backend,
            step,
            status.jobs_dir(output_path),
            fn,
            kwargs,
            resources,
            scope=cancel.current(),
            detach=detach,
            log_to=status.log_path(output_path),
            echo=echo,
            log_level=log_level,
            stored=stored,
        )
        return cast(R, value)

    setattr(job, MARK, resources)
    return job


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
    log_to: str | None = None,
    echo: Callable[[str], None] | None = None,
    log_level: str = "INFO",
    stored: bool = False,
) -> object:
    """Run ``fn(**kwargs)`` as a job on ``backend`` and return its value (with ``stored``:
    its result record, unread, as a ``StoredResult``).

    Each attempt gets a fresh folder under ``job_root`` (``status.jobs_dir(output)``).
    Preemptions are retried up to ``resources.max_retries`` times, failures never. When
    ``scope`` is cancelled the job is cancelled too, except on Ctrl-C with ``detach``,
    which leaves it running; either way ``StepFailed`` is raised. The job logs from
    ``log_level`` up; ``echo`` gets each new line of its log as it runs, and when it ends
    (however it ends) its log is copied to ``log_to``.
    """
    payload = cloudpickle.dumps((fn, dict(kwargs), {"log_level": log_level}))
    digest = hashlib.sha256(payload).hexdigest()  # in the job's spec: the job checks call.pkl
    store = store_for(job_root)
    attempts = resources.max_retries + 1
    logs = StepJobLogs(log_to, echo)
    for attempt in range(attempts):
        if scope.is_set():
            raise StepFailed(step, f"cancelled: {scope.reason}")
        job_dir = f"{job_root.rstrip('/')}/{_job_id(attempt)}"
        stage = functools.partial(store.write, f"{job_dir}/{CALL}", payload)
        _patiently(step, scope, f"writing {job_dir}/{CALL}", stage)
        handle = backend.submit(JobRequest(step, job_dir, resources, attempt, digest))
        logger.debug("step %r: submitted job %s (%s)", step, job_dir, resources.describe())
        follower = LogFollower(f"{job_dir}/{LOG}", echo)
        try:
            status = _wait(backend, handle, step, job_dir, resources, scope, detach, follower)
        except BaseException:
            logs.ended(follower, job_dir, attempt, "stopped")
            raise
        logs.ended(follower, job_dir, attempt, status.state.value, status)
        if status.state is JobState.SUCCEEDED:
            read = functools.partial(_result, store, status, step, job_dir, stored)
            return _patiently(step, scope, f"reading {job_dir}/{RESULT}", read)
        if status.state is JobState.PREEMPTED and attempt + 1 < attempts:
            why = status.detail or "no detail"
            logger.warning("step %r: job %s preempted (%s), retrying", step, job_dir, why)
            continue
        if status.state is JobState.PREEMPTED:
            what = (
                f"job preempted {attempts} time(s) ({status.detail or 'no detail'}); "
                "raise resources.max_retries to retry more often"
            )
            raise _failure(status, step, job_dir, what)
        error = functools.partial(_job_error, store, status, step, job_dir)
        raise _patiently(step, scope, f"reading {job_dir}/{ERROR}", error)
    raise AssertionError("unreachable: the loop returns or raises")


def _patiently(step: str, scope: CancelScope, what: str, op: Callable[[], R]) -> R:
    """``op()`` (a job record's read or write), tried again with backoff while the bucket
    does not answer, as long as the step is ours (``scope``: a lost lease or Ctrl-C ends
    it) and for at most ``JOB_PATIENCE`` seconds."""
    deadline = time.monotonic() + JOB_PATIENCE

    def wait(delay: float) -> bool:
        return time.monotonic() + delay > deadline or scope.wait(delay)

    def tell(err: BaseException, delay: float) -> None:
        logger.warning("step %r: %s: %s; trying again in %gs", step, what, err, delay)

    return patiently(op, wait, tell)


def _wait(
    backend: Backend,
    handle: object,
    step: str,
    job_dir: str,
    resources: Resources,
    scope: CancelScope,
    detach: bool,
    follower: LogFollower,
) -> JobStatus:
    """Poll until the job is done, backing off, following its log; a cancel or timeout stops
    the job and raises."""
    interval = FIRST_POLL_INTERVAL
    running_since: float | None = None
    while True:
        status = backend.poll(handle)
        follower.at(status)
        if status.state.done:
            return status
        follower.follow()
        if status.state is JobState.RUNNING and running_since is None:
            running_since = time.monotonic()
        elif status.state is JobState.QUEUED:  # requeued (a retried preemption): a new attempt
            running_since = None
        timeout = resources.timeout
        if timeout and running_since is not None and time.monotonic() - running_since > timeout:
            backend.cancel(handle)
            what = f"timed out after running {timeout:g}s (resources.timeout); job cancelled"
            raise _failure(backend.poll(handle), step, job_dir, what)
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


def _result(store: Store, status: JobStatus, step: str, job_dir: str, stored: bool) -> object:
    """The job's value; with ``stored``, where its record is (it is not read: the step's
    record is made by moving it, and the driver never holds a large value twice)."""
    path = f"{job_dir}/{RESULT}"
    if stored:
        try:
            size = int(store.fs.info(path)["size"])
        except FileNotFoundError:
            raise _failure(status, step, job_dir, f"job succeeded but wrote no {RESULT}") from None
        if size > MAX_RESULT_BYTES:  # written by a worker of another version
            what = f"its result is {size:,} bytes, over the {MAX_RESULT_BYTES:,} a result may hold"
            raise _failure(status, step, job_dir, what)
        return StoredResult(path, size)
    blob = store.read(path)
    if blob is None:
        raise _failure(status, step, job_dir, f"job succeeded but wrote no {RESULT}")
    try:
        return decode_result(blob.data)
    except ValueError as err:
        raise _failure(status, step, job_dir, f"its {RESULT} is unreadable: {err}") from err


def _job_error(store: Store, status: JobStatus, step: str, job_dir: str) -> StepFailed:
    """The StepFailed for a job that failed: the remote error if it wrote one, else the exit."""
    blob = store.read(f"{job_dir}/{ERROR}")
    if blob is None:
        what = f"job {status.state.value} ({status.detail or 'no detail'}) without writing a record"
        return _failure(status, step, job_dir, what)
    try:
        record = json.loads(blob.data)
        what = f"{record['type']}: {record['message']}"
    except (ValueError, TypeError, KeyError):
        what = f"job {status.state.value}; its {ERROR} is unreadable"
        return _failure(status, step, job_dir, what)
    err = _failure(status, step, job_dir, what)
    err.remote_traceback = str(record.get("traceback", ""))
    if record.get("returned"):  # its value could not be recorded: the step's files are kept
        err.returned = True  # type: ignore[attr-defined]
    return err


def _failure(status: JobStatus, step: str, job_dir: str, what: str) -> StepFailed:
    """``what``, then where the job folder is and the tail of the log ``status`` names."""
    log = status.log or f"{job_dir}/{LOG}"
    lines = log_tail(log, LOG_TAIL_LINES)
    if lines and status.log_label:  # one of the job's logs: say whose
        lines = [f"--- {status.log_label}: {log} ---", *lines[1 - LOG_TAIL_LINES :]]
    tail = "\n".join(lines).rstrip()
    text = f"{what}\n  job folder: {job_dir}"
    if tail:
        indented = "\n".join(f"    {line}" for line in tail.splitlines())
        text += f"\n  last lines of {LOG}:\n{indented}"
    err = StepFailed(step, text)
    err.log_path = log
    return err


def log_tail(path: str, lines: int) -> list[str]:
    """The last ``lines`` lines of the log at ``path`` (a file or a URL), read through its
    store from the end; none if there is no log (yet)."""
    if lines <= 0:
        return []
    try:
        with store_for(path).fs.open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _LOG_TAIL_BYTES))
            text: str = f.read().decode(errors="replace")
    except Exception as err:  # none yet, or unreadable: the failure must still be told
        logger.debug("no log tail from %s: %s", path, err)
        return []
    return text.splitlines()[-lines:]


def _job_id(attempt: int) -> str:
    """Sortable and unique: ``20250101-120000.123-0-1a2b3c4d`` (UTC, milliseconds, attempt)."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now * 1000) % 1000:03d}-{attempt}-{uuid.uuid4().hex[:8]}"
