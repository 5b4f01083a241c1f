"""The Backend seam: where jobs run. A backend checks, submits, polls, cancels and closes;
waiting, retries, timeouts, log tails and cancellation live once, in
``confpipe.engine.remote.run_job``. Write a new one by implementing ``Backend`` and passing
``tests/test_backend_contract.py``; ``confpipe.backends.registry`` maps each kind to its
builder, and ``confpipe.backends.settings`` holds the ``backend`` node its settings extend.

The job protocol is defined here too, once: a step's records live in ``{output}/.confpipe/``
(``RECORDS``), and each job in a job folder (``{output}/.confpipe/jobs/{job_id}/``), written
by the driver and the worker:

    call.pkl      the cloudpickled ``(fn, kwargs, options)``; ``options``:
                  ``{"log_level": "INFO"}`` (a bare ``(fn, kwargs)`` runs at INFO)
    result.json   ``{"value": ...}`` when ``fn`` returned
    error.json    ``{"type", "message", "traceback"}`` when it raised (``"returned": true``
                  when it returned a value no result record can hold)
    log.txt       the job's stdout and stderr, and its logging records (``LOG_FORMAT``)

The bucket is not trusted to say what a job runs: the job's own spec is (its environment,
sent through the backend's API). The driver puts the sha256 of ``call.pkl`` in the job's
``CONFPIPE_CALL_SHA256`` (``CALL_DIGEST_VAR``) and the worker refuses a ``call.pkl`` of
another digest before unpickling it (``integrity_error``), as ``vm`` does a staged code
archive, writing an ``error.json`` of type ``IntegrityError`` and exiting 1.

May import: ``confpipe.storage``, ``confpipe.errors``, ``confpipe.cancel`` (never
``confpipe.engine``, ``confpipe.config`` or ``confpipe.cli``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from confpipe.backends import results
from confpipe.backends.resources import Resources
from confpipe.errors import StepFailed

RECORDS = ".confpipe"  # the records folder beside each output
CALL = "call.pkl"
RESULT = "result.json"
ERROR = "error.json"
LOG = "log.txt"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # a step's logging records
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"  # in its log, in a thread or in a job
DRIVER_VAR = "CONFPIPE_DRIVER_PID"  # set for a local job: the worker dies with this process
CALL_DIGEST_VAR = "CONFPIPE_CALL_SHA256"  # the sha256 of the call.pkl the driver sent
INTEGRITY = "IntegrityError"  # the error record's type when a staged file isn't what was sent


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
    call_digest: str = ""  # the sha256 (hex) of the call.pkl staged in job_dir: the job checks it


@dataclass(frozen=True)
class JobStatus:
    """What ``poll`` saw; ``detail`` says why (``exit code 1``, a status event, ...).

    ``log`` is where the job's log can be read now, through its store (a local file or a
    URL: the job folder's ``log.txt``, a local spool, a failing host's folder); None: the job
    folder's. ``log_label`` names whose log it is when a job has several (``host 1 of 2``).
    """

    state: JobState
    detail: str = ""
    log: str | None = None
    log_label: str = ""


class Backend(Protocol):
    """Where jobs run. Implementations keep ``poll`` cheap: it is called with backoff.

    A handle is whatever ``submit`` returns; only the backend that made it looks inside.
    """

    kind: BackendKind
    max_poll_interval: float  # cap of the polling backoff, seconds
    reattaches: bool  # a restarted driver finds this backend's live jobs: detach may apply

    def check(self, step: str, resources: Resources) -> str:
        """Raise ConfigError if this backend can't serve ``resources`` (before anything runs);
        else say where the step will run, as the plan shows it (``local job``, ``batch``)."""
        ...

    def submit(self, job: JobRequest) -> object:
        """Start (or queue) the job whose call is staged in ``job.job_dir``; a handle."""
        ...

    def poll(self, handle: object) -> JobStatus:
        """The job's state now, and where its log can be read."""
        ...

    def cancel(self, handle: object) -> None:
        """Stop the job (queued or running) and return once it has; a finished job is left
        alone, and cancelling twice is cancelling once."""
        ...

    def close(self) -> None:
        """Release what the backend holds (API channels, jobs that can't outlive the run);
        called when a run ends. Safe to call again; a later call opens what it needs anew."""
        ...


def integrity_error(name: str, data: bytes, expected: str) -> str | None:
    """Why ``data`` (the staged file ``name``) is not what the job was sent, whose sha256 is
    ``expected`` (hex); None if it is."""
    actual = hashlib.sha256(data).hexdigest()
    if actual == expected.strip().lower():
        return None
    return f"integrity check failed: {name}'s sha256 is {actual}, the job was sent {expected}"


def encode_result(step: str, value: Any) -> bytes:
    """The result record (``result.json``) of a step's or a job's return value, converted as
    ``confpipe.backends.results`` says; a value it can't hold (or too large a one) fails the
    step with the key path of the bad part, before anything is recorded."""
    try:
        return results.dumps(value)
    except results.NotJSON as err:
        failure = StepFailed(step, str(err))
        failure.returned = True  # type: ignore[attr-defined]  # the work is done: keep it
        raise failure from err


def decode_result(data: bytes) -> Any:
    """The value a result record holds (nan and infinities as floats); ValueError if the
    record is not one (not JSON, or no ``value``)."""
    record = json.loads(data)
    if not isinstance(record, dict) or "value" not in record:
        raise ValueError('not a result record (expected {"value": ...})')
    return record["value"]
