"""The fake Batch's jobs at work: each one's task run as a local subprocess, its states walked.

Private to ``confpipe.testing.batch``. A ``JobDriver`` walks a job QUEUED -> SCHEDULED ->
RUNNING -> SUCCEEDED/FAILED in a thread of its own, runs the task's command with the job's
environment (secret variables resolved from the fake's ``secrets``), kills a task that runs
past ``maxRunDuration`` (exit code 50005, as Batch), retries it as ``maxRetryCount`` and the
lifecycle policies say, and records Batch-like status events and exit codes on the job. It
reads the fake's settings (``env``, ``secrets``, ...) as each attempt starts, so a change to
them applies to the next attempt."""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.cloud import batch_v1

__all__ = [
    "PREEMPTED", "TIMED_OUT", "JobDriver", "JobRun", "Settings", "State", "TaskState", "now",
    "runnable_argv",
]  # fmt: skip

PREEMPTED = 50001
TIMED_OUT = 50005  # Batch's exit code for a task that ran past its maxRunDuration
State = batch_v1.JobStatus.State
TaskState = batch_v1.TaskStatus.State


@dataclass(eq=False)
class JobRun:
    """One job: its message (changed only under the fake's lock) and its task's process."""

    job: batch_v1.Job
    seq: int
    stop: threading.Event = field(default_factory=threading.Event)
    proc: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None


class Settings(Protocol):
    """What a task attempt reads from the fake (``FakeBatch``'s public attributes)."""

    secrets: dict[str, str]
    env: dict[str, str]
    cwd: str | None
    step_seconds: float
    command: Callable[[batch_v1.Runnable], list[str]]


class JobDriver:
    """Runs jobs' tasks on this machine; ``lock`` is the fake's, guarding every ``JobRun``."""

    def __init__(self, settings: Settings, lock: threading.Lock) -> None:
        self._settings = settings
        self._lock = lock
        self._preempt = 0
        self._logs = tempfile.mkdtemp(prefix="fake-batch-")

    def start(self, run: JobRun) -> None:
        """Drive the (QUEUED) job in a thread of its own."""
        job_id = run.job.name.rsplit("/", 1)[-1]
        run.thread = threading.Thread(
            target=self._drive, args=(run,), name=f"fake-batch-{job_id}", daemon=True
        )
        run.thread.start()

    def halt(self, run: JobRun) -> None:
        """Stop the job's thread and kill its task's whole process group."""
        run.stop.set()
        with self._lock:
            proc = run.proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if run.thread is not None and run.thread is not threading.current_thread():
            run.thread.join()

    def set_state(self, run: JobRun, state: int, note: str = "") -> None:
        """Move the job to ``state``, with the status event Batch would record."""
        with self._lock:
            old = State(run.job.status.state).name
            text = f"Job state is set from {old} to {State(state).name} for job {run.job.name}."
            run.job.status.status_events.append(_event(text + note))
            run.job.status.state = State(state)
            run.job.update_time = now()

    def preempt_next(self, count: int) -> None:
        """The next ``count`` task attempts end as if their Spot VM were preempted."""
        with self._lock:
            self._preempt += count

    def log_path(self, name: str) -> str:
        """The file that collects what the job's task prints (all attempts)."""
        return os.path.join(self._logs, f"{name.rsplit('/', 1)[-1]}.log")

    def remove_logs(self) -> None:
        """Forget every job's log (when the fake stops)."""
        shutil.rmtree(self._logs, ignore_errors=True)

    def _task(self, run: JobRun, state: int, code: int, why: str) -> str:
        where = f"zones/{run.job.name.split('/')[3]}-a/instances/{run.job.uid}-group0-0"
        text = f"Task state is updated from RUNNING to {TaskState(state).name} on {where}{why}"
        if state == TaskState.FAILED:
            text += f" with exit code {code}."
        with self._lock:
            run.job.status.status_events.append(_event(text, state, code))
            counts = {TaskState(state).name: 1}
            run.job.status.task_groups["group0"] = batch_v1.JobStatus.TaskGroupStatus(counts=counts)
        return text

    def _drive(self, run: JobRun) -> None:
        """Walk the job through its states, running (and retrying) its one task."""
        spec = run.job.task_groups[0].task_spec
        for state in (State.SCHEDULED, State.RUNNING):
            if run.stop.wait(self._settings.step_seconds):
                return
            self.set_state(run, state)
        for attempt in itertools.count():
            code, why = self._attempt(run, spec, attempt)
            if run.stop.is_set():
                return
            if code == 0:
                self._task(run, TaskState.SUCCEEDED, 0, ".")
                self.set_state(run, State.SUCCEEDED)
                return
            event = self._task(run, TaskState.FAILED, code, why)
            if attempt < spec.max_retry_count and _retries(spec, code):
                self.set_state(run, State.SCHEDULED, f" Retrying task 0 (retry {attempt + 1}).")
                if run.stop.wait(self._settings.step_seconds):
                    return
                self.set_state(run, State.RUNNING)
                continue
            note = f" Job failed due to task failure. Task 0 failed: {event!r}"
            self.set_state(run, State.FAILED, note)
            return

    def _attempt(self, run: JobRun, spec: batch_v1.TaskSpec, attempt: int) -> tuple[int, str]:
        """Run the task once; its exit code and why it ended (for the status event)."""
        settings = self._settings
        env = {**settings.env, **spec.environment.variables}
        for key, secret in spec.environment.secret_variables.items():
            if secret not in settings.secrets:
                return 50000, f" because secret {secret} could not be accessed"
            env[key] = settings.secrets[secret]
        env.update(BATCH_TASK_INDEX="0", BATCH_TASK_RETRY_ATTEMPT=str(attempt))
        env["BATCH_JOB_UID"] = run.job.uid
        with self._lock:
            preempt = self._preempt > 0
            self._preempt -= preempt
        with open(self.log_path(run.job.name), "ab") as out, self._lock:
            if run.stop.is_set():
                return 50000, " because the job was stopped"
            run.proc = subprocess.Popen(
                settings.command(spec.runnables[0]),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=settings.cwd,
                start_new_session=True,
            )
        proc = run.proc
        if preempt:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        limit = spec.max_run_duration.total_seconds() if spec.max_run_duration else None
        timed_out = False
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        with self._lock:
            run.proc = None
        if preempt:
            return PREEMPTED, " due to Spot VM preemption"
        if timed_out:
            return TIMED_OUT, f" because it ran past its maxRunDuration of {limit:g}s"
        return (128 - code if code < 0 else code), ""


def runnable_argv(runnable: batch_v1.Runnable) -> list[str]:
    """The command line of a script or container runnable; ``python`` is this interpreter."""
    if runnable.script.text:
        return ["/bin/sh", "-c", runnable.script.text]
    c = runnable.container
    argv = [c.entrypoint, *c.commands] if c.entrypoint else list(c.commands)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _retries(spec: batch_v1.TaskSpec, code: int) -> bool:
    """Batch's rule: the first policy naming ``code`` decides; unnamed codes get the opposite
    of the policies' action; with no policy every failure is retried."""
    retry = batch_v1.LifecyclePolicy.Action.RETRY_TASK
    for policy in spec.lifecycle_policies:
        if code in policy.action_condition.exit_codes:
            return bool(policy.action == retry)
    return not spec.lifecycle_policies or spec.lifecycle_policies[0].action != retry


def _event(text: str, state: Any = None, code: int = 0) -> batch_v1.StatusEvent:
    event = batch_v1.StatusEvent(type_="STATUS_CHANGED", description=text, event_time=now())
    if state is not None:
        event.task_state = state
        event.task_execution = batch_v1.TaskExecution(exit_code=code)
    return event
