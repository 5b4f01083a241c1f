"""The Cloud Batch backend: each CPU/GPU job is one Batch job, driven through google-cloud-batch.

``submit`` first looks for the step's live job by its labels (a driver that took over a
stale lease re-attaches instead of submitting twice), else creates one (``batch_spec``).
Polling is shared: one ListJobs of this driver's jobs per ``poll_interval`` answers every
handle's ``poll`` from a cache, so API requests don't grow with the jobs in flight and no
thread of ours polls. Transient API errors (UNAVAILABLE, DEADLINE_EXCEEDED) are retried
with backoff; ``cancel`` deletes the job; ``logs`` tails the job folder's ``log.txt``.
``google.cloud.batch_v1`` is imported when the backend is constructed, not before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from confpipe.backends import (
    ERROR,
    LOG,
    RESULT,
    BackendKind,
    JobRequest,
    JobState,
    JobStatus,
    batch_api,
)
from confpipe.backends.batch_spec import (
    DRIVER,
    BatchSettings,
    check_resources,
    job_dir_of,
    job_id,
    job_request,
    job_status,
    redacted,
    step_labels,
)
from confpipe.backends.machines import Choice
from confpipe.backends.staging import CodeStager, worktree
from confpipe.errors import ConfigError, StepFailed
from confpipe.spec import Resources
from confpipe.storage import store_for

if TYPE_CHECKING:
    from google.cloud import batch_v1

__all__ = ["BatchBackend", "BatchSettings", "job_request", "redacted"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
PAGE_SIZE = 100


@dataclass(eq=False)
class _Job:
    """A handle: the Batch job, and where run_job reads records (``origin``: where it writes)."""

    name: str
    step: str
    job_dir: str
    origin: str
    status: JobStatus
    own: bool = True  # carries this driver's label, so the shared ListJobs sees it


class BatchBackend:
    """Runs jobs on Cloud Batch in ``project``/``region``, in containers of ``image``.

    ``batch_endpoint`` (``host:port``) points the client at another server, such as
    ``confpipe.testing.batch.FakeBatch`` (loopback endpoints get an insecure channel and no
    credentials). ``stage_code`` is a folder URL under the prefix: the working tree's git
    files are archived there and installed in each job (with the step's ``pip_extras``);
    None runs the code baked into ``image``.
    """

    kind = BackendKind.GCP

    def __init__(
        self,
        project: str,
        region: str,
        image: str,
        service_account: str | None = None,
        network: str | None = None,
        subnetwork: str | None = None,
        labels: Mapping[str, str] | None = None,
        poll_interval: float = 10.0,
        batch_endpoint: str | None = None,
        stage_code: str | None = None,
        api_timeout: float = 600.0,
        storage_endpoint: str | None = None,
    ) -> None:
        self.settings = BatchSettings(
            project, region, image, service_account, network, subnetwork, dict(labels or {}),
            storage_endpoint,
        )  # fmt: skip
        if poll_interval <= 0 or api_timeout <= 0:
            raise ConfigError("backend.poll_interval and api_timeout must be positive")
        self.poll_interval = poll_interval
        self.max_poll_interval = poll_interval / 2  # run_job's wake-ups read the cache only
        self.api_timeout = api_timeout
        self.driver = uuid.uuid4().hex[:16]
        self._stager = CodeStager(stage_code, worktree()) if stage_code else None
        self._client = batch_api.client(batch_endpoint)
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._tracked: dict[str, _Job] = {}
        self._listed_at = float("-inf")
        self._failing: tuple[float, BaseException] | None = None

    def check(self, step: str, resources: Resources) -> None:
        try:
            check_resources(resources)
        except ConfigError as err:
            raise ConfigError(f"step {step!r}: {err}") from None
        if resources.pip_extras and self._stager is None:
            raise ConfigError(
                f"step {step!r}: resources.pip_extras={list(resources.pip_extras)} needs the "
                "working tree staged (backend.stage_code=true) so the job can pip install your "
                "project with those extras; or bake them into backend.image and drop pip_extras"
            )

    def submit(self, job: JobRequest) -> object:
        from google.api_core import exceptions

        choice = check_resources(job.resources)
        try:
            live = self._find_live(job) if job.attempt == 0 else None
            return self._track(live or self._create(job, choice))
        except exceptions.GoogleAPICallError as err:
            raise StepFailed(job.step, f"Cloud Batch refused the request: {err}") from err

    def poll(self, handle: object) -> JobStatus:
        from google.api_core import exceptions

        job = _job(handle)
        if not job.status.state.done:
            try:
                self._refresh()
            except exceptions.GoogleAPICallError as err:
                raise StepFailed(job.step, f"Cloud Batch: {err}") from err
            if self._failing is not None and not job.status.state.done:
                since, last = self._failing
                if time.monotonic() - since > self.api_timeout:
                    raise StepFailed(
                        job.step,
                        f"Cloud Batch unreachable for {self.api_timeout:g}s ({last}); the job "
                        f"{job.name} may still be running",
                    )
        status = job.status
        if status.state.done:
            self._finish(job)
        return status

    def cancel(self, handle: object) -> None:
        job = _job(handle)
        if job.status.state.done:
            return
        from google.api_core import exceptions
        from google.cloud import batch_v1

        request = batch_v1.DeleteJobRequest(
            name=job.name, reason="cancelled by confpipe", request_id=str(uuid.uuid4())
        )
        with contextlib.suppress(exceptions.NotFound):
            self._call(job.step, self._client.delete_job, request, cancellable=False)
        job.status = JobStatus(JobState.CANCELLED, f"Batch job {job.name} deleted")
        self._finish(job)
        logger.info("step %r: deleted Batch job %s", job.step, job.name)

    def logs(self, handle: object, lines: int = 40) -> str:
        path = f"{_job(handle).origin}/{LOG}"
        try:
            blob = store_for(path).read(path)
        except OSError:
            return ""
        if blob is None or lines <= 0:
            return ""
        return "\n".join(blob.data.decode(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Close the API channel (the backend can't be used afterwards)."""
        batch_api.close(self._client)

    def _find_live(self, job: JobRequest) -> _Job | None:
        """A queued or running Batch job of this step (same name, hash and output), if any."""
        from google.cloud import batch_v1

        query = " AND ".join(f'labels.{k}="{v}"' for k, v in step_labels(job).items())
        request = batch_v1.ListJobsRequest(parent=self.settings.parent, filter=query)
        pager = self._call(job.step, self._client.list_jobs, request)
        for found in pager:
            status, origin = job_status(found), job_dir_of(found)
            if origin is not None and not status.state.done:
                logger.info(
                    "step %r: re-attached to its live Batch job %s (submitted by an earlier "
                    "launch) instead of submitting another",
                    job.step,
                    found.name,
                )
                own = found.labels.get(DRIVER) == self.driver
                return _Job(found.name, job.step, job.job_dir, origin, status, own)
        return None

    def _create(self, job: JobRequest, choice: Choice) -> _Job:
        from google.api_core import exceptions
        from google.cloud import batch_v1

        code = self._stager.url() if self._stager else None
        request = job_request(self.settings, job, driver=self.driver, code=code, choice=choice)
        jid = job_id(job)
        logger.debug("step %r: creating Batch job %s: %s", job.step, jid, _json(request))
        create = batch_v1.CreateJobRequest(
            parent=self.settings.parent, job_id=jid, job=request, request_id=str(uuid.uuid4())
        )
        try:
            created = self._call(job.step, self._client.create_job, create)
        except exceptions.AlreadyExists:  # our own create, retried after a lost answer
            name = f"{self.settings.parent}/jobs/{jid}"
            created = self._call(job.step, self._client.get_job, batch_v1.GetJobRequest(name=name))
        logger.info("step %r: submitted Batch job %s", job.step, created.name)
        return _Job(created.name, job.step, job.job_dir, job.job_dir, job_status(created))

    def _track(self, job: _Job) -> _Job:
        with self._lock:
            self._tracked[job.name] = job
        return job

    def _refresh(self) -> None:
        """At most once per poll_interval: one ListJobs updates every tracked job's status."""
        if time.monotonic() - self._listed_at < self.poll_interval:
            return
        if not self._refreshing.acquire(blocking=False):
            return  # another thread is refreshing: the cache will do
        try:
            if time.monotonic() - self._listed_at < self.poll_interval:
                return
            self._listed_at = time.monotonic()
            with self._lock:
                tracked = dict(self._tracked)
            try:
                seen = self._list_own(tracked)
                for name in tracked.keys() - seen:
                    self._get_one(tracked[name])
            except batch_api.transient() as err:
                logger.warning("Cloud Batch: %s; keeping the last statuses, will retry", err)
                self._failing = self._failing or (time.monotonic(), err)
            else:
                self._failing = None
        finally:
            self._refreshing.release()

    def _list_own(self, tracked: dict[str, _Job]) -> set[str]:
        """Update the tracked jobs with this driver's label; newest first, stop once all seen."""
        from google.cloud import batch_v1

        want = {name for name, job in tracked.items() if job.own}
        seen: set[str] = set()
        if not want:
            return seen
        request = batch_v1.ListJobsRequest(
            parent=self.settings.parent,
            filter=f'labels.{DRIVER}="{self.driver}"',
            order_by="create_time desc",
            page_size=PAGE_SIZE,
        )
        pager = self._client.list_jobs(request=request, retry=None, timeout=batch_api.CALL_TIMEOUT)
        for page in pager.pages:
            for found in page.jobs:
                if found.name in want:
                    tracked[found.name].status = job_status(found)
                    seen.add(found.name)
            if seen >= want:
                break
        return seen

    def _get_one(self, job: _Job) -> None:
        from google.api_core import exceptions
        from google.cloud import batch_v1

        request = batch_v1.GetJobRequest(name=job.name)
        try:
            found = self._client.get_job(
                request=request, retry=None, timeout=batch_api.CALL_TIMEOUT
            )
        except exceptions.NotFound:
            detail = f"Batch job {job.name} was deleted outside confpipe"
            job.status = JobStatus(JobState.FAILED, detail)
            return
        job.status = job_status(found)

    def _finish(self, job: _Job) -> None:
        """Stop tracking ``job``; for a re-attached job, copy its records where run_job looks."""
        with self._lock:
            if self._tracked.pop(job.name, None) is None:
                return
        if job.origin == job.job_dir:
            return
        store = store_for(job.origin)
        for name in (RESULT, ERROR):
            blob = store.read(f"{job.origin}/{name}")
            if blob is not None:
                store_for(job.job_dir).write(f"{job.job_dir}/{name}", blob.data)

    def _call(
        self, step: str, method: Callable[..., T], request: object, cancellable: bool = True
    ) -> T:
        return batch_api.call(step, method, request, self.api_timeout, cancellable=cancellable)


def _json(job: batch_v1.Job) -> str:
    return json.dumps(redacted(job), sort_keys=True)


def _job(handle: object) -> _Job:
    if not isinstance(handle, _Job):
        raise TypeError(f"not a Batch job handle: {handle!r}")
    return handle
