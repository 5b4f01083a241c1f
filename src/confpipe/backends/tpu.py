"""The Cloud TPU backend: each TPU job is one queued resource, driven through google-cloud-tpu.

``submit`` first looks for the step's live queued resource by its node's labels (a driver
that took over a stale lease re-attaches instead of submitting twice), else creates one
(``tpu_spec``) and waits for the create operation. Every host of the slice runs the job's
entry (``backends.vm``) and writes an exit record (``exits/N.json``) when its worker ends;
host 0's records are the job's. ``poll`` reads those records (one listing of the job
folder) and, while they don't settle it, the queued resource's state: ACTIVE is running,
SUSPENDED or FAILED by the service is a preemption (``run_job`` retries it), a non-zero
exit fails the step with that host's log tail. A queued resource is deleted as soon as
its job ends, and by ``cancel``; a detached one is left alone. Status checks happen at
most once per ``poll_interval`` per job. ``google.cloud.tpu_v2`` is imported when the
first TPU step is checked, not before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from confpipe import cancel
from confpipe.backends import (
    ERROR,
    LOG,
    RESULT,
    BackendKind,
    JobRequest,
    JobState,
    JobStatus,
    tpu_api,
)
from confpipe.backends.batch_spec import job_id, step_labels
from confpipe.backends.staging import CodeStager, worktree
from confpipe.backends.tpu_spec import (
    Placement,
    TpuSettings,
    check_resources,
    hosts_of,
    job_dir_of,
    labels_of,
    queued_resource,
    queued_status,
    redacted,
)
from confpipe.backends.vm import EXITS, host_dir
from confpipe.errors import ConfigError, StepFailed
from confpipe.spec import Resources
from confpipe.storage import store_for

if TYPE_CHECKING:
    from google.cloud import tpu_v2

__all__ = ["TpuBackend", "TpuSettings"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(eq=False)
class _Slice:
    """A handle: the queued resource, and where run_job reads records (``origin``: where the
    hosts write them)."""

    name: str
    step: str
    job_dir: str
    origin: str
    hosts: int
    status: JobStatus
    checked: float
    failed_host: int | None = None
    finished: bool = False


class TpuBackend:
    """Runs jobs on Cloud TPU VMs in ``project``, in containers of ``image``.

    ``zone`` None picks, per step, the first zone of ``region`` offering its TPU type;
    ``runtime_version`` None the default of the type's generation. ``tpu_endpoint``
    (``host:port``) points the client at another server, such as
    ``confpipe.testing.tpu.FakeTpu`` (loopback endpoints get an insecure channel and no
    credentials). ``stage_code`` is as for ``BatchBackend``: the working tree, archived under
    the prefix and installed on each host.
    """

    kind = BackendKind.GCP

    def __init__(
        self,
        project: str,
        region: str,
        image: str,
        zone: str | None = None,
        runtime_version: str | None = None,
        service_account: str | None = None,
        network: str | None = None,
        subnetwork: str | None = None,
        labels: Mapping[str, str] | None = None,
        poll_interval: float = 10.0,
        tpu_endpoint: str | None = None,
        stage_code: str | None = None,
        api_timeout: float = 600.0,
        storage_endpoint: str | None = None,
    ) -> None:
        self.settings = TpuSettings(
            project, region, image, service_account, network, subnetwork, dict(labels or {}),
            storage_endpoint, zone, runtime_version,
        )  # fmt: skip
        if poll_interval <= 0 or api_timeout <= 0:
            raise ConfigError("backend.poll_interval and api_timeout must be positive")
        self.poll_interval = poll_interval
        self.max_poll_interval = poll_interval / 2  # run_job's wake-ups mostly read the cache
        self.api_timeout = api_timeout
        self.driver = uuid.uuid4().hex[:16]
        self._stager = CodeStager(stage_code, worktree()) if stage_code else None
        self._endpoint = tpu_endpoint
        self._api: tpu_v2.TpuClient | None = None
        self._lock = threading.Lock()
        self._failing: tuple[float, BaseException] | None = None

    @property
    def _client(self) -> tpu_v2.TpuClient:
        """The API client, made on first use (a mistake in a step's TPU is reported first)."""
        with self._lock:
            if self._api is None:
                self._api = tpu_api.client(self._endpoint)
            return self._api

    def check(self, step: str, resources: Resources) -> None:
        try:
            check_resources(resources, self.settings)
        except ConfigError as err:
            raise ConfigError(f"step {step!r}: {err}") from None
        _ = self._client  # no credentials: say so now, before anything runs
        if resources.pip_extras and self._stager is None:
            raise ConfigError(
                f"step {step!r}: resources.pip_extras={list(resources.pip_extras)} needs the "
                "working tree staged (backend.stage_code=true) so each TPU host can pip install "
                "your project with those extras; or bake them into backend.image"
            )

    def submit(self, job: JobRequest) -> object:
        from google.api_core import exceptions

        placement = check_resources(job.resources, self.settings)
        try:
            live = self._find_live(job, placement) if job.attempt == 0 else None
            return live or self._create(job, placement)
        except exceptions.GoogleAPICallError as err:
            raise StepFailed(job.step, f"Cloud TPU refused the request: {err}") from err

    def poll(self, handle: object) -> JobStatus:
        job = _slice(handle)
        if job.status.state.done or time.monotonic() - job.checked < self.poll_interval:
            return job.status
        job.checked = time.monotonic()
        job.status = self._status(job)
        if job.status.state.done:
            self._finish(job)
        return job.status

    def cancel(self, handle: object) -> None:
        job = _slice(handle)
        if job.status.state.done:
            return
        job.status = JobStatus(JobState.CANCELLED, f"queued resource {job.name} deleted")
        self._finish(job)

    def logs(self, handle: object, lines: int = 40) -> str:
        """The log tail of the host that failed the job, else of host 0 (the job's ``log.txt``)."""
        job = _slice(handle)
        host = job.failed_host or 0
        path = f"{host_dir(job.origin, host)}/{LOG}"
        try:
            blob = store_for(path).read(path)
        except OSError:
            return ""
        if blob is None or lines <= 0:
            return ""
        tail = blob.data.decode(errors="replace").splitlines()[-lines:]
        if job.failed_host is not None and job.hosts > 1:
            tail = [f"--- host {host} of {job.hosts}: {path} ---", *tail[1 - lines :]]
        return "\n".join(tail)

    def close(self) -> None:
        """Close the API channel (the backend can't be used afterwards)."""
        with self._lock:
            if self._api is not None:
                tpu_api.close(self._api)

    # -- submitting ---------------------------------------------------------------------------

    def _find_live(self, job: JobRequest, placement: Placement) -> _Slice | None:
        """A queued or running queued resource of this step (same name, hash and output)."""
        from google.cloud import tpu_v2

        want = step_labels(job)
        parent = self.settings.zone_parent(placement.zone)
        request = tpu_v2.ListQueuedResourcesRequest(parent=parent)
        for found in self._call(job.step, self._client.list_queued_resources, request):
            labels, origin = labels_of(found), job_dir_of(found)
            if origin is None or any(labels.get(k) != v for k, v in want.items()):
                continue
            status = queued_status(found)
            handle = _Slice(
                found.name, job.step, job.job_dir, origin, hosts_of(found), status,
                time.monotonic(),
            )  # fmt: skip
            if status.state.done or any(code != 0 for code in self._exits(handle).values()):
                self._delete(handle)  # a leftover of an ended job: not worth re-attaching to
                continue
            logger.info(
                "step %r: re-attached to its live queued resource %s (submitted by an earlier "
                "launch) instead of submitting another",
                job.step,
                found.name,
            )
            return handle
        return None

    def _create(self, job: JobRequest, placement: Placement) -> _Slice:
        from google.api_core import exceptions
        from google.cloud import tpu_v2

        code = self._stager.url() if self._stager else None
        resource = queued_resource(
            self.settings, job, driver=self.driver, code=code, placement=placement
        )
        qid = job_id(job)
        parent = self.settings.zone_parent(placement.zone)
        logger.debug(
            "step %r: creating queued resource %s: %s",
            job.step,
            qid,
            json.dumps(redacted(resource), sort_keys=True),
        )
        create = tpu_v2.CreateQueuedResourceRequest(
            parent=parent,
            queued_resource_id=qid,
            queued_resource=resource,
            request_id=str(uuid.uuid4()),
        )
        name = f"{parent}/queuedResources/{qid}"
        try:
            operation = self._call(job.step, self._client.create_queued_resource, create)
        except exceptions.AlreadyExists:  # our own create, retried after a lost answer
            pass
        else:
            self._wait_operation(job.step, operation)
        get = tpu_v2.GetQueuedResourceRequest(name=name)
        created = self._call(job.step, self._client.get_queued_resource, get)
        logger.info(
            "step %r: submitted queued resource %s (%s in %s)",
            job.step,
            created.name,
            placement.slice.describe(),
            placement.zone,
        )
        return _Slice(
            created.name, job.step, job.job_dir, job.job_dir, placement.slice.hosts,
            queued_status(created), time.monotonic(),
        )  # fmt: skip

    def _wait_operation(self, step: str, operation: object) -> None:
        """Wait (cancellably) until the create operation is done; raise its error, if any."""
        scope = cancel.current()
        deadline = time.monotonic() + self.api_timeout
        delay = 0.05
        while True:
            with contextlib.suppress(*tpu_api.transient()):
                if operation.done(retry=None):  # type: ignore[attr-defined]
                    break
            if time.monotonic() > deadline:
                raise StepFailed(step, f"Cloud TPU: create not done after {self.api_timeout:g}s")
            if scope.wait(delay):
                raise StepFailed(step, f"cancelled: {scope.reason}")
            delay = min(delay * 2, 5.0)
        error = operation.exception()  # type: ignore[attr-defined]
        if error is not None:
            raise error

    # -- polling ------------------------------------------------------------------------------

    def _status(self, job: _Slice) -> JobStatus:
        """The job's status from its hosts' exit records, else from its queued resource."""
        exits = self._exits(job)
        failed = [host for host, code in exits.items() if code != 0]
        if not failed and len(exits) >= job.hosts:
            return JobStatus(JobState.SUCCEEDED)
        queued = self._get(job)
        if queued.state.done or not failed:  # a lost slice explains its hosts' exits
            return queued
        host = failed[0]
        job.failed_host = host
        where = f"host {host} of {job.hosts}" if job.hosts > 1 else "the TPU host"
        return JobStatus(JobState.FAILED, f"{where} exited with {_exit_code(exits[host])}")

    def _exits(self, job: _Slice) -> dict[int, int]:
        """The exit codes the hosts recorded, first written first (one listing, then reads)."""
        folder = f"{job.origin}/{EXITS}"
        store = store_for(folder)
        try:
            names = [
                str(p).rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(folder, detail=False)
            ]
            paths = [f"{folder}/{n}" for n in names if n.endswith(".json")]
            blobs = store.read_many(paths)
        except (FileNotFoundError, OSError, ValueError):  # none yet, or a passing store error
            return {}
        records = []
        for blob in blobs:
            if blob is not None:
                record = json.loads(blob.data)
                records.append((blob.mtime, int(record["host"]), int(record["code"])))
        return {host: code for _, host, code in sorted(records)}

    def _get(self, job: _Slice) -> JobStatus:
        """The queued resource's status; on an API outage the last one, until api_timeout."""
        from google.api_core import exceptions
        from google.cloud import tpu_v2

        request = tpu_v2.GetQueuedResourceRequest(name=job.name)
        try:
            found = self._client.get_queued_resource(
                request=request, retry=None, timeout=tpu_api.CALL_TIMEOUT
            )
        except exceptions.NotFound:
            return JobStatus(
                JobState.FAILED, f"queued resource {job.name} was deleted outside confpipe"
            )
        except tpu_api.transient() as err:
            logger.warning("Cloud TPU: %s; keeping the last status, will retry", err)
            with self._lock:
                self._failing = self._failing or (time.monotonic(), err)
                since, last = self._failing
            if time.monotonic() - since > self.api_timeout:
                raise StepFailed(
                    job.step,
                    f"Cloud TPU unreachable for {self.api_timeout:g}s ({last}); the queued "
                    f"resource {job.name} may still be running",
                ) from err
            return job.status
        except exceptions.GoogleAPICallError as err:
            raise StepFailed(job.step, f"Cloud TPU: {err}") from err
        with self._lock:
            self._failing = None
        return queued_status(found)

    def _finish(self, job: _Slice) -> None:
        """Delete the queued resource; put the records where run_job looks for them."""
        if job.finished:
            return
        job.finished = True
        self._delete(job)
        store = store_for(job.origin)
        copies = [(job.origin, RESULT), (job.origin, ERROR)] if job.origin != job.job_dir else []
        if job.failed_host:  # the failing host's error is the job's error
            copies = [(host_dir(job.origin, job.failed_host), ERROR)]
        for folder, name in copies:
            blob = store.read(f"{folder}/{name}")
            if blob is not None:
                store_for(job.job_dir).write(f"{job.job_dir}/{name}", blob.data)

    def _delete(self, job: _Slice) -> None:
        from google.api_core import exceptions
        from google.cloud import tpu_v2

        request = tpu_v2.DeleteQueuedResourceRequest(
            name=job.name, request_id=str(uuid.uuid4()), force=True
        )
        try:
            self._call(job.step, self._client.delete_queued_resource, request, cancellable=False)
        except exceptions.NotFound:
            return
        except exceptions.GoogleAPICallError as err:
            logger.warning(
                "step %r: could not delete queued resource %s (%s): delete it by hand",
                job.step,
                job.name,
                err,
            )
            return
        logger.info("step %r: deleted queued resource %s", job.step, job.name)

    def _call(
        self, step: str, method: Callable[..., T], request: object, cancellable: bool = True
    ) -> T:
        return tpu_api.call(step, method, request, self.api_timeout, cancellable=cancellable)


def _exit_code(code: int) -> str:
    """``exit code 1``, or ``exit code 137 (killed by SIGKILL)`` for a signal's code."""
    text = f"exit code {code}"
    if code > 128:
        with contextlib.suppress(ValueError):
            text += f" (killed by {signal.Signals(code - 128).name})"
    return text


def _slice(handle: object) -> _Slice:
    if not isinstance(handle, _Slice):
        raise TypeError(f"not a Cloud TPU job handle: {handle!r}")
    return handle
