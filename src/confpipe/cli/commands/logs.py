"""``confpipe logs STEP [--follow]``: print a step's log, and follow it while the step runs.

The log is ``{output}/.confpipe/log.txt``; while a job runs and that isn't written yet, it is
the newest job's own ``log.txt`` (``.confpipe/jobs/<id>/log.txt``). ``--follow`` prints new
bytes as they come (every 0.5 s on local files, every 5 s on a remote store, where the log
is uploaded every few seconds) until the step's status is no longer RUNNING, or no launch
holds its lease any more (the launch was killed).

Exit codes: 0 the log was printed (with ``--follow``: and the step ended SUCCESS), or the
step succeeded printing nothing (it has no log); 1 the step has no log otherwise (it never
ran, or ran before confpipe kept logs), or, with ``--follow``, it
ended FAILED or DEP_FAILED — as a run of it would have — or its launch was killed.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable

from confpipe.backends import LOG
from confpipe.cli.commands import print_err, words
from confpipe.cli.commands.args import Request
from confpipe.cli.commands.target import Target
from confpipe.cli.history import StepHistory
from confpipe.engine.lock import read_holder
from confpipe.engine.plan import StepPlan
from confpipe.engine.status import Status, StepState, log_path, newest_job_dir, read_status
from confpipe.errors import ConfigError
from confpipe.storage import split_protocol, store_for

__all__ = ["Follower", "poll_interval", "run", "source"]

LOCAL_POLL = 0.5  # seconds between reads of a local log being followed
REMOTE_POLL = 5.0  # of a log on a remote store (uploaded every few seconds anyway)
_CHUNK = 1 << 20


def run(target: Target, request: Request) -> int:
    plan = _one(target, request.steps[0])
    status = _status(plan)
    path = source(plan.output)
    if path is None and not (request.follow and _running(status)):
        if status is not None and status.state is StepState.SUCCESS:  # a silent step
            print_err(f"step {plan.label} printed nothing: {_why_none(status)}")
            return 0
        print_err(f"step {plan.label} has written no log: {_why_none(status)}")
        return 1
    if not request.follow:
        assert path is not None
        _copy(path)
        return 0
    follower = Follower(plan.output, _write)
    while _running(status):
        follower.step()
        if not _held(plan, target.lease_timeout):
            status = _status(plan)  # it may have ended between the two reads
            if _running(status):
                follower.step()
                print_err(
                    f"step {plan.label} is RUNNING, but no launch holds its lease: its launch "
                    "was stopped (the next run takes the step over)"
                )
                return 1
            break
        time.sleep(poll_interval(plan.output))
        status = _status(plan)
    follower.step()  # what was written before the status changed
    if status is not None and status.state is not StepState.SUCCESS:
        print_err(f"step {plan.label} ended {words.state(_hist(plan, status))}")
        return 1
    return 0


def source(output: str) -> str | None:
    """The log to print: log.txt, else the newest job's log (a job still running); None: none."""
    fs = store_for(output).fs
    path = log_path(output)
    if _exists(fs, path):
        return path
    job = newest_job_dir(output)
    if job is not None and _exists(fs, f"{job}/{LOG}"):
        return f"{job}/{LOG}"
    return None


def poll_interval(output: str) -> float:
    return LOCAL_POLL if split_protocol(output)[0] in (None, "file", "local") else REMOTE_POLL


class Follower:
    """Writes what is new in a step's log at each ``step()``; when the log moves (from the
    job's log to log.txt), continues where it was if the new one starts with what was
    written, else writes the new one whole under a header naming it."""

    def __init__(self, output: str, write: Callable[[bytes], None]) -> None:
        self.output, self.write = output, write
        self.path: str | None = None
        self._fresh()

    def _fresh(self) -> None:
        """Nothing written of the log yet: its length and digest so far (not its bytes: a
        chatty job's log can be hundreds of MiB)."""
        self.written, self.digest = 0, hashlib.sha256()

    def step(self) -> None:
        path = source(self.output)
        if path is None:
            return
        if path != self.path:
            data = _read(path, 0)
            if data is None:
                return
            same = hashlib.sha256(data[: self.written]).digest() == self.digest.digest()
            if self.path is not None and not (len(data) >= self.written and same):
                self.write(f"--- {path} ---\n".encode())
                self._fresh()
            self.path = path
            self._emit(data[self.written :])
            return
        data = _read(path, self.written)
        if data is None:  # shorter than what was written: rewritten from the start
            self.write(f"--- {path} (rewritten) ---\n".encode())
            self._fresh()
            data = _read(path, 0) or b""
        self._emit(data)

    def _emit(self, data: bytes) -> None:
        if data:
            self.write(data)
            self.written += len(data)
            self.digest.update(data)


def _one(target: Target, name: str) -> StepPlan:
    plans = target.pick([name])
    if len(plans) > 1:
        names = ", ".join(p.spec.identity for p in plans)
        raise ConfigError(
            f"{name}: {len(plans)} steps of this sweep have that name; name one: {names}"
        )
    return plans[0]


def _status(plan: StepPlan) -> Status | None:
    status = read_status(store_for(plan.output), plan.output)
    return None if status is None else status.of(plan.spec.hash)


def _held(plan: StepPlan, lease_timeout: float) -> bool:
    """A launch holds the step's lease and its heartbeat is fresh."""
    holder = read_holder(store_for(plan.output), plan.output)
    return holder is not None and holder.age < lease_timeout


def _running(status: Status | None) -> bool:
    return status is not None and status.state is StepState.RUNNING


def _why_none(status: Status | None) -> str:
    if status is None:
        return "it never ran"
    if status.state is StepState.DEP_FAILED:
        return f"it never ran, {status.failed_dep or 'a dependency'} failed (DEP_FAILED)"
    if status.state is StepState.RUNNING:
        return "it is RUNNING and printed nothing yet (--follow waits for it)"
    when = words.local_time(status.time)
    if status.state is StepState.SUCCESS:
        return f"it succeeded at {when} without printing or logging (at log_level) a line"
    return f"it ended {status.state.value} at {when}, printing nothing or before logs were kept"


def _hist(plan: StepPlan, status: Status) -> StepHistory:
    return StepHistory(plan, status, None)


def _exists(fs: object, path: str) -> bool:
    try:
        return bool(fs.exists(path))  # type: ignore[attr-defined]
    except OSError:
        return False


def _read(path: str, offset: int) -> bytes | None:
    """The bytes of ``path`` from ``offset``; None if it is shorter than that (or gone)."""
    try:
        with store_for(path).fs.open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < offset:
                return None
            f.seek(offset)
            data: bytes = f.read()
            return data
    except (FileNotFoundError, OSError):
        return None


def _copy(path: str) -> None:
    with store_for(path).fs.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            _write(chunk)


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
