"""FakeBatch: an in-process gRPC server of the Cloud Batch API that runs jobs on this machine.

The real ``google-cloud-batch`` client talks to it (``google.cloud.batch.v1.BatchService``:
CreateJob, GetJob, ListJobs, DeleteJob, CancelJob). It records every request, and runs each
job's runnable as a local subprocess with the job's environment (secret variables resolved
from ``secrets``), walking it QUEUED -> SCHEDULED -> RUNNING -> SUCCEEDED/FAILED with
Batch-like status events and exit codes; task retries follow ``maxRetryCount`` and the
lifecycle policies. The container image is not pulled: ``python``/``python3`` in a command
means this interpreter, and the "image" environment is this process's environment plus
its ``sys.path`` (so the code you have now is the code in the image).

    from confpipe.backends.batch import BatchBackend
    from confpipe.testing.batch import FakeBatch

    with FakeBatch(secrets={"projects/p/secrets/hf/versions/latest": "hf_..."}) as fake:
        backend = BatchBackend("p", "us-central1", "img", batch_endpoint=fake.endpoint)
        ...                                  # run steps; fake.requests has what was sent
        fake.preempt_next()                  # the next task attempt ends preempted (50001)
        fake.refuse_connections(3.0)         # the server is down for 3 s, then back
        fake.cloud_log(job_name)             # the job's stdout, as Cloud Logging would show

``command`` maps a runnable to the command line a task runs (default: ``runnable_argv``);
e.g. ``lambda r: ["docker", "run", r.container.image_uri, ...]`` to run the real image.

A loopback endpoint (``127.0.0.1:PORT``) makes the client use an insecure channel and no
credentials. To dry-run a pipeline's Batch path offline, start a server in one terminal
from your repository root (its ``sys.path`` is the "image"),
``python -m confpipe.testing.batch [--port 8790] [--secrets secrets.json]``, then run
``python -m confpipe +experiment=... backend=gcp backend.batch_endpoint=127.0.0.1:8790``
(jobs run on this machine, so use a local prefix or one the fake's jobs can reach).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud import batch_v1
from google.longrunning import operations_pb2

SERVICE = "google.cloud.batch.v1.BatchService"
PREEMPTED = 50001
State = batch_v1.JobStatus.State
TaskState = batch_v1.TaskStatus.State
_JOB_ID = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_LABEL = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_TERM = re.compile(r'\s*(labels\.[a-z0-9_-]+|status\.state|name)\s*=\s*"([^"]*)"\s*')


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class _Run:
    """One job: its message (changed only under the fake's lock) and its task's process."""

    job: batch_v1.Job
    seq: int
    stop: threading.Event = field(default_factory=threading.Event)
    proc: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None


class FakeBatch:
    """A Batch API server on a free loopback port (or ``port``); see the module docstring."""

    def __init__(
        self,
        *,
        secrets: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        step_seconds: float = 0.02,
        port: int = 0,
        command: Callable[[batch_v1.Runnable], list[str]] | None = None,
    ) -> None:
        self.secrets = dict(secrets or {})
        self.env = dict(env) if env is not None else _image_env()
        self.cwd = cwd
        self.step_seconds = step_seconds  # QUEUED -> SCHEDULED -> RUNNING, each
        self.command = command or runnable_argv  # what a task runs, from its runnable
        self.requests: list[tuple[str, Any]] = []  # (method, request), in arrival order
        self._port = port
        self._lock = threading.Lock()
        self._jobs: dict[str, _Run] = {}
        self._request_ids: dict[str, str] = {}
        self._seq = itertools.count()
        self._preempt = 0
        self._server: grpc.Server | None = None
        self._logs = tempfile.mkdtemp(prefix="fake-batch-")
        self._timers: list[threading.Thread] = []

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self._port}"

    def start(self) -> FakeBatch:
        self._server = self._serve()
        return self

    def stop(self) -> None:
        """Stop serving, kill every task still running, forget the logs."""
        for timer in self._timers:  # a refusal in progress ends first (it restarts serving)
            timer.join()
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
        with self._lock:
            runs = list(self._jobs.values())
        for run in runs:
            self._halt(run)
        shutil.rmtree(self._logs, ignore_errors=True)

    def __enter__(self) -> FakeBatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, method: str | None = None) -> int:
        """How many requests (of ``method``, e.g. ``"ListJobs"``) arrived."""
        with self._lock:
            return sum(1 for m, _ in self.requests if method in (None, m))

    def jobs(self) -> list[batch_v1.Job]:
        """Copies of the jobs the fake knows, oldest first."""
        with self._lock:
            runs = sorted(self._jobs.values(), key=lambda r: r.seq)
            return [batch_v1.Job(r.job) for r in runs]

    def pid(self, name: str) -> int | None:
        """The pid of the job's running task, if it is running."""
        with self._lock:
            run = self._jobs.get(name)
            proc = run.proc if run else None
        return proc.pid if proc is not None and proc.poll() is None else None

    def cloud_log(self, name: str) -> str:
        """What the job's task printed (all attempts), as Cloud Logging would show it."""
        path = os.path.join(self._logs, f"{name.rsplit('/', 1)[-1]}.log")
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
            return f.read().decode(errors="replace")
        return ""

    def preempt_next(self, count: int = 1) -> None:
        """The next ``count`` task attempts end as if their Spot VM were preempted."""
        with self._lock:
            self._preempt += count

    def refuse_connections(self, seconds: float) -> None:
        """Stop the server now (connections are refused) and serve again after ``seconds``."""
        assert self._server is not None, "start() the fake first"
        self._server.stop(grace=None).wait()
        timer = threading.Thread(
            target=self._restart, args=(seconds,), name="fake-batch-restart", daemon=True
        )
        self._timers.append(timer)
        timer.start()

    def _restart(self, seconds: float) -> None:
        time.sleep(seconds)
        self._server = self._serve()

    def _serve(self) -> grpc.Server:
        pool = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="fake-batch-grpc")
        server = grpc.server(pool)
        methods: dict[str, tuple[Any, Callable[[Any], bytes]]] = {
            "CreateJob": (batch_v1.CreateJobRequest, self._create),
            "GetJob": (batch_v1.GetJobRequest, self._get),
            "ListJobs": (batch_v1.ListJobsRequest, self._list),
            "DeleteJob": (batch_v1.DeleteJobRequest, self._delete),
            "CancelJob": (batch_v1.CancelJobRequest, self._cancel),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._handler(name, fn), request_deserializer=cls.deserialize
            )
            for name, (cls, fn) in methods.items()
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        for _ in range(50):  # the port may take a moment to be free again after a stop
            with contextlib.suppress(RuntimeError):
                self._port = server.add_insecure_port(
                    self.endpoint if self._port else "127.0.0.1:0"
                )
                if self._port:
                    break
            time.sleep(0.05)
        server.start()
        return server

    def _handler(self, method: str, fn: Callable[[Any], bytes]) -> Callable[..., bytes]:
        def handle(request: Any, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self.requests.append((method, type(request)(request)))
            try:
                return fn(request)
            except _Abort as err:
                context.abort(err.code, str(err))
                raise  # unreachable: abort raises

        return handle

    def _create(self, request: batch_v1.CreateJobRequest) -> bytes:
        if not re.fullmatch(r"projects/[^/]+/locations/[^/]+", request.parent):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad parent {request.parent!r}")
        if not _JOB_ID.fullmatch(request.job_id):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad job_id {request.job_id!r}")
        for key, value in request.job.labels.items():
            if not _LABEL.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad label {key}={value!r}")
        groups = request.job.task_groups
        if len(groups) != 1 or not groups[0].task_spec.runnables:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "one task group with runnables needed")
        name = f"{request.parent}/jobs/{request.job_id}"
        with self._lock:
            if request.request_id and request.request_id in self._request_ids:
                return _bytes(self._jobs[self._request_ids[request.request_id]].job)
            if name in self._jobs:
                raise _Abort(grpc.StatusCode.ALREADY_EXISTS, f"job {name} already exists")
            job = batch_v1.Job(request.job)
            job.name, job.uid = name, f"{request.job_id[:40]}-{uuid.uuid4().hex[:8]}"
            job.task_groups[0].name = f"{name}/taskGroups/group0"
            job.create_time = job.update_time = _now()
            job.status.state = State(State.QUEUED)
            run = _Run(job, next(self._seq))
            self._jobs[name] = run
            if request.request_id:
                self._request_ids[request.request_id] = name
            run.thread = threading.Thread(
                target=self._drive, args=(run,), name=f"fake-batch-{request.job_id}", daemon=True
            )
            run.thread.start()
            return _bytes(job)

    def _get(self, request: batch_v1.GetJobRequest) -> bytes:
        with self._lock:
            run = self._jobs.get(request.name)
            if run is None:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"job {request.name} not found")
            return _bytes(run.job)

    def _list(self, request: batch_v1.ListJobsRequest) -> bytes:
        match = _filter(request.filter)
        order = request.order_by or "create_time"
        if order not in ("create_time", "create_time desc", "name", "name desc"):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported order_by {order!r}")
        with self._lock:
            runs = [r for r in self._jobs.values() if r.job.name.startswith(request.parent + "/")]
            runs = [r for r in runs if match(r.job)]
            key: Callable[[_Run], Any] = (
                (lambda r: r.seq) if "time" in order else (lambda r: r.job.name)
            )
            runs.sort(key=key, reverse=order.endswith("desc"))
            start = int(request.page_token or 0)
            size = min(request.page_size or 100, 100)
            page = runs[start : start + size]
            more = start + size < len(runs)
            response = batch_v1.ListJobsResponse(
                jobs=[r.job for r in page], next_page_token=str(start + size) if more else ""
            )
            return _bytes(response)

    def _delete(self, request: batch_v1.DeleteJobRequest) -> bytes:
        run = self._stopping(request.name, State.DELETION_IN_PROGRESS)
        self._halt(run)
        with self._lock:
            self._jobs.pop(request.name, None)
        return _operation(request.name)

    def _cancel(self, request: batch_v1.CancelJobRequest) -> bytes:
        run = self._stopping(request.name, State.CANCELLATION_IN_PROGRESS)
        self._halt(run)
        self._set(run, State.CANCELLED)
        return _operation(request.name)

    def _stopping(self, name: str, state: int) -> _Run:
        with self._lock:
            run = self._jobs.get(name)
        if run is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"job {name} not found")
        if run.job.status.state not in (State.SUCCEEDED, State.FAILED):
            self._set(run, state)
        return run

    def _halt(self, run: _Run) -> None:
        """Stop the job's thread and kill its task's whole process group."""
        run.stop.set()
        with self._lock:
            proc = run.proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if run.thread is not None and run.thread is not threading.current_thread():
            run.thread.join()

    def _set(self, run: _Run, state: int, note: str = "") -> None:
        with self._lock:
            old = State(run.job.status.state).name
            text = f"Job state is set from {old} to {State(state).name} for job {run.job.name}."
            run.job.status.status_events.append(_event(text + note))
            run.job.status.state = State(state)
            run.job.update_time = _now()

    def _task(self, run: _Run, state: int, code: int, why: str) -> str:
        where = f"zones/{run.job.name.split('/')[3]}-a/instances/{run.job.uid}-group0-0"
        text = f"Task state is updated from RUNNING to {TaskState(state).name} on {where}{why}"
        if state == TaskState.FAILED:
            text += f" with exit code {code}."
        with self._lock:
            run.job.status.status_events.append(_event(text, state, code))
            counts = {TaskState(state).name: 1}
            run.job.status.task_groups["group0"] = batch_v1.JobStatus.TaskGroupStatus(counts=counts)
        return text

    def _drive(self, run: _Run) -> None:
        """Walk the job through its states, running (and retrying) its one task."""
        spec = run.job.task_groups[0].task_spec
        for state in (State.SCHEDULED, State.RUNNING):
            if run.stop.wait(self.step_seconds):
                return
            self._set(run, state)
        for attempt in itertools.count():
            code, why = self._attempt(run, spec, attempt)
            if run.stop.is_set():
                return
            if code == 0:
                self._task(run, TaskState.SUCCEEDED, 0, ".")
                self._set(run, State.SUCCEEDED)
                return
            event = self._task(run, TaskState.FAILED, code, why)
            if attempt < spec.max_retry_count and _retries(spec, code):
                self._set(run, State.SCHEDULED, f" Retrying task 0 (retry {attempt + 1}).")
                if run.stop.wait(self.step_seconds):
                    return
                self._set(run, State.RUNNING)
                continue
            note = f" Job failed due to task failure. Task 0 failed: {event!r}"
            self._set(run, State.FAILED, note)
            return

    def _attempt(self, run: _Run, spec: batch_v1.TaskSpec, attempt: int) -> tuple[int, str]:
        """Run the task once; its exit code and why it ended (for the status event)."""
        env = {**self.env, **spec.environment.variables}
        for key, secret in spec.environment.secret_variables.items():
            if secret not in self.secrets:
                return 50000, f" because secret {secret} could not be accessed"
            env[key] = self.secrets[secret]
        env.update(BATCH_TASK_INDEX="0", BATCH_TASK_RETRY_ATTEMPT=str(attempt))
        env["BATCH_JOB_UID"] = run.job.uid
        with self._lock:
            preempt = self._preempt > 0
            self._preempt -= preempt
        log = os.path.join(self._logs, f"{run.job.name.rsplit('/', 1)[-1]}.log")
        with open(log, "ab") as out, self._lock:
            if run.stop.is_set():
                return 50000, " because the job was stopped"
            run.proc = subprocess.Popen(
                self.command(spec.runnables[0]),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
            )
        proc = run.proc
        if preempt:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
        with self._lock:
            run.proc = None
        if preempt:
            return PREEMPTED, " due to Spot VM preemption"
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


def _retries(spec: batch_v1.TaskSpec, code: int) -> bool:
    """Batch's rule: the first policy naming ``code`` decides; unnamed codes get the opposite
    of the policies' action; with no policy every failure is retried."""
    retry = batch_v1.LifecyclePolicy.Action.RETRY_TASK
    for policy in spec.lifecycle_policies:
        if code in policy.action_condition.exit_codes:
            return bool(policy.action == retry)
    return not spec.lifecycle_policies or spec.lifecycle_policies[0].action != retry


def _filter(text: str) -> Callable[[batch_v1.Job], bool]:
    """The AIP-160 subset the fake understands: ``field="value"`` terms joined by AND."""
    terms = []
    for term in filter(None, (t.strip() for t in text.split(" AND "))):
        found = _TERM.fullmatch(term)
        if found is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported filter term {term!r}")
        terms.append((found.group(1), found.group(2)))

    def value(job: batch_v1.Job, key: str) -> str:
        if key.startswith("labels."):
            return str(job.labels.get(key[7:], ""))
        return str(job.status.state.name if key == "status.state" else job.name)

    return lambda job: all(value(job, key) == want for key, want in terms)


def _event(text: str, state: Any = None, code: int = 0) -> batch_v1.StatusEvent:
    event = batch_v1.StatusEvent(type_="STATUS_CHANGED", description=text, event_time=_now())
    if state is not None:
        event.task_state = state
        event.task_execution = batch_v1.TaskExecution(exit_code=code)
    return event


def _bytes(message: Any) -> bytes:
    return bytes(type(message).serialize(message))


def _operation(name: str) -> bytes:
    op = operations_pb2.Operation(name=f"{name}/operations/{uuid.uuid4().hex[:8]}", done=True)
    return bytes(op.SerializeToString())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _image_env() -> dict[str, str]:
    """This environment, with this process's ``sys.path`` (the "image" has our code)."""
    paths = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    pythonpath = os.pathsep.join(dict.fromkeys(p for p in paths if os.path.exists(p)))
    return {**os.environ, "PYTHONPATH": pythonpath}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m confpipe.testing.batch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: free)")
    parser.add_argument("--secrets", help="JSON file: {secret version name: value}")
    args = parser.parse_args(argv)
    secrets = {}
    if args.secrets:
        with open(args.secrets) as f:
            secrets = json.load(f)
    with FakeBatch(secrets=secrets, port=args.port) as fake:
        print(f"fake Cloud Batch serving: backend.batch_endpoint={fake.endpoint}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
