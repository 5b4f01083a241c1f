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

The server and its job table are here; running the jobs is in ``batch_jobs``, and what the
API accepts (ids, labels, filters, pages) in ``batch_requests``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent import futures
from typing import Any

import grpc
from google.cloud import batch_v1

from confpipe.testing.batch_jobs import (
    PREEMPTED,
    JobDriver,
    JobRun,
    State,
    TaskState,
    image_env,
    now,
    runnable_argv,
)
from confpipe.testing.batch_requests import (
    Abort,
    check_create,
    done_operation,
    encode,
    job_filter,
    list_order,
    page,
)

__all__ = ["PREEMPTED", "SERVICE", "FakeBatch", "State", "TaskState", "main", "runnable_argv"]

SERVICE = "google.cloud.batch.v1.BatchService"


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
        self.env = dict(env) if env is not None else image_env()
        self.cwd = cwd
        self.step_seconds = step_seconds  # QUEUED -> SCHEDULED -> RUNNING, each
        self.command = command or runnable_argv  # what a task runs, from its runnable
        self.requests: list[tuple[str, Any]] = []  # (method, request), in arrival order
        self._port = port
        self._lock = threading.Lock()
        self._jobs: dict[str, JobRun] = {}
        self._request_ids: dict[str, str] = {}
        self._seq = itertools.count()
        self._driver = JobDriver(self, self._lock)
        self._server: grpc.Server | None = None
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
            self._driver.halt(run)
        self._driver.remove_logs()

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
        path = self._driver.log_path(name)
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
            return f.read().decode(errors="replace")
        return ""

    def preempt_next(self, count: int = 1) -> None:
        """The next ``count`` task attempts end as if their Spot VM were preempted."""
        self._driver.preempt_next(count)

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
            except Abort as err:
                context.abort(err.code, str(err))
                raise  # unreachable: abort raises

        return handle

    def _create(self, request: batch_v1.CreateJobRequest) -> bytes:
        check_create(request)
        name = f"{request.parent}/jobs/{request.job_id}"
        with self._lock:
            if request.request_id and request.request_id in self._request_ids:
                return encode(self._jobs[self._request_ids[request.request_id]].job)
            if name in self._jobs:
                raise Abort(grpc.StatusCode.ALREADY_EXISTS, f"job {name} already exists")
            job = batch_v1.Job(request.job)
            job.name, job.uid = name, f"{request.job_id[:40]}-{uuid.uuid4().hex[:8]}"
            job.task_groups[0].name = f"{name}/taskGroups/group0"
            job.create_time = job.update_time = now()
            job.status.state = State(State.QUEUED)
            run = JobRun(job, next(self._seq))
            self._jobs[name] = run
            if request.request_id:
                self._request_ids[request.request_id] = name
            self._driver.start(run)
            return encode(job)

    def _get(self, request: batch_v1.GetJobRequest) -> bytes:
        with self._lock:
            run = self._jobs.get(request.name)
            if run is None:
                raise Abort(grpc.StatusCode.NOT_FOUND, f"job {request.name} not found")
            return encode(run.job)

    def _list(self, request: batch_v1.ListJobsRequest) -> bytes:
        match, order = job_filter(request.filter), list_order(request.order_by)
        with self._lock:
            runs = [r for r in self._jobs.values() if r.job.name.startswith(request.parent + "/")]
            runs = [r for r in runs if match(r.job)]
            key: Callable[[JobRun], Any] = (
                (lambda r: r.seq) if "time" in order else (lambda r: r.job.name)
            )
            runs.sort(key=key, reverse=order.endswith("desc"))
            runs, token = page(runs, request.page_token, request.page_size)
            response = batch_v1.ListJobsResponse(jobs=[r.job for r in runs], next_page_token=token)
            return encode(response)

    def _delete(self, request: batch_v1.DeleteJobRequest) -> bytes:
        run = self._stopping(request.name, State.DELETION_IN_PROGRESS)
        self._driver.halt(run)
        with self._lock:
            self._jobs.pop(request.name, None)
        return done_operation(request.name)

    def _cancel(self, request: batch_v1.CancelJobRequest) -> bytes:
        run = self._stopping(request.name, State.CANCELLATION_IN_PROGRESS)
        self._driver.halt(run)
        self._driver.set_state(run, State.CANCELLED)
        return done_operation(request.name)

    def _stopping(self, name: str, state: int) -> JobRun:
        with self._lock:
            run = self._jobs.get(name)
        if run is None:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"job {name} not found")
        if run.job.status.state not in (State.SUCCEEDED, State.FAILED):
            self._driver.set_state(run, state)
        return run


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
