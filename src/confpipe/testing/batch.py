"""FakeBatch: an in-process gRPC server of the Cloud Batch API that runs jobs on this machine.

The real ``google-cloud-batch`` client talks to it (``google.cloud.batch.v1.BatchService``:
CreateJob, GetJob, ListJobs, DeleteJob, CancelJob). It records every request, and runs each
job's runnable as a local subprocess with the job's environment (secret variables resolved
from ``secrets``), walking it QUEUED -> SCHEDULED -> RUNNING -> SUCCEEDED/FAILED with
Batch-like status events and exit codes; a task running past ``maxRunDuration`` is killed (exit
code 50005); task retries follow ``maxRetryCount`` and the lifecycle policies. The container
image is not pulled: ``python``/``python3`` in a command means this interpreter, and the
"image" environment is this process's environment plus its ``sys.path`` (so the code you
have now is the code in the image).

    from confpipe.backends.gcp.batch import BatchBackend
    from confpipe.backends.gcp.settings import GcpConf
    from confpipe.testing.batch import FakeBatch

with FakeBatch(secrets={"projects/p/secrets/hf/versions/latest": "hf_..."}) as fake: backend
= BatchBackend(GcpConf(project="p", image="img", batch_endpoint=fake.endpoint)) ... # run
steps; fake.requests has what was sent fake.preempt_next() # the next task attempt ends
preempted (50001) fake.refuse_connections(3.0) # the server is down for 3 s, then back
fake.cloud_log(job_name) # the job's stdout, as Cloud Logging would show

``command`` maps a runnable to the command line a task runs (default: ``runnable_argv``);
e.g. ``lambda r: ["docker", "run", r.container.image_uri, ...]`` to run the real image.

A loopback endpoint (``127.0.0.1:PORT``) makes the client use an insecure channel and no
credentials. To dry-run a pipeline's Batch path offline, start a server in one terminal
from your repository root (its ``sys.path`` is the "image"),
``python -m confpipe.testing.batch [--port 8790] [--secrets secrets.json]``, then run
``python -m confpipe +experiment=... backend=gcp backend.batch_endpoint=127.0.0.1:8790``
(jobs run on this machine, so use a local prefix or one the fake's jobs can reach).

The job table is here, the gRPC server under it in ``grpc_fake``; running the jobs is in
``batch_jobs``, and what the API accepts (ids, labels, filters, pages) in
``batch_requests``."""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.cloud import batch_v1

from confpipe.testing.batch_jobs import (
    PREEMPTED,
    JobDriver,
    JobRun,
    State,
    TaskState,
    now,
    runnable_argv,
)
from confpipe.testing.batch_requests import check_create, done_operation, job_filter, list_order
from confpipe.testing.grpc_fake import (
    Abort,
    GrpcFake,
    Methods,
    encode,
    image_env,
    page,
    parser,
    serve,
)

__all__ = ["PREEMPTED", "SERVICE", "FakeBatch", "State", "TaskState", "main", "runnable_argv"]

SERVICE = "google.cloud.batch.v1.BatchService"


class FakeBatch(GrpcFake):
    """A Batch API server on a free loopback port (or ``port``); see the module docstring."""

    _name = "fake-batch"

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
        super().__init__(port)
        self.secrets = dict(secrets or {})
        self.env = dict(env) if env is not None else image_env()
        self.cwd = cwd
        self.step_seconds = step_seconds  # QUEUED -> SCHEDULED -> RUNNING, each
        self.command = command or runnable_argv  # what a task runs, from its runnable
        self._jobs: dict[str, JobRun] = {}
        self._request_ids: dict[str, str] = {}
        self._seq = itertools.count()
        self._driver = JobDriver(self, self._lock)

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

    def _shutdown(self) -> None:
        """Kill every task still running, forget the logs."""
        with self._lock:
            runs = list(self._jobs.values())
        for run in runs:
            self._driver.halt(run)
        self._driver.remove_logs()

    def _services(self) -> dict[str, Methods]:
        return {
            SERVICE: {
                "CreateJob": (batch_v1.CreateJobRequest, self._create),
                "GetJob": (batch_v1.GetJobRequest, self._get),
                "ListJobs": (batch_v1.ListJobsRequest, self._list),
                "DeleteJob": (batch_v1.DeleteJobRequest, self._delete),
                "CancelJob": (batch_v1.CancelJobRequest, self._cancel),
            }
        }

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
    command = parser("python -m confpipe.testing.batch", __doc__)
    command.add_argument("--secrets", help="JSON file: {secret version name: value}")
    args = command.parse_args(argv)
    secrets = {}
    if args.secrets:
        with open(args.secrets) as f:
            secrets = json.load(f)
    fake = FakeBatch(secrets=secrets, port=args.port)
    return serve(fake, "fake Cloud Batch serving: backend.batch_endpoint={}")


if __name__ == "__main__":
    sys.exit(main())
