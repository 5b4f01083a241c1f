"""The Cloud Batch backend: each CPU/GPU job is one Batch job, driven through google-cloud-batch.

``submit`` first looks for the step's live job by its labels (a driver that took over a
stale lease re-attaches instead of submitting twice), else creates one (``batch_request``);
it only looks when an earlier launch may have submitted one (``earlier_jobs``: the step has
an older job folder), so a first submission costs one request, CreateJob. Polling is shared:
one ListJobs of this driver's jobs per ``poll_interval`` answers every handle's ``poll``
from a cache, so API requests don't grow with the jobs in flight and no thread of ours
polls; a job's status is first asked ``poll_interval`` after its creation (CreateJob
answered with the status it starts in). A lone job thus costs at most one request per
``poll_interval`` over its life, 6 a minute at the default 10 s
(``benchmarks/bench_batch.py`` measures it). Between those requests a job's end is noticed
in the bucket, which the driver reads anyway: the job's vm writes ``exits/0.json`` last
(after its result and its log), and ``poll`` reads it (one small read, no API request) a
tenth of ``poll_interval`` after submission, then at intervals growing with the job's age
(a tenth of it, at least that first wait, at most half the poll interval): at the default
10 s a short job's end is seen within about a second, a long job costs 12 reads a minute
(``bench_batch.py`` counts them). Its exit code is then the job's outcome
(0: SUCCEEDED, and run_job still reads and checks the result record), and the driver stops
tracking the job, which ends by itself; a job whose image writes no such record (an older
confpipe) is seen ending by the API, as before. Transient API errors (UNAVAILABLE,
DEADLINE_EXCEEDED) are retried with backoff; ``cancel`` deletes the job; a status names the
log the job's VM uploads to the folder it runs in. ``google.cloud.batch_v1`` is imported
when the backend is made.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confpipe.backends import ERROR, LOG, RESULT, JobRequest, JobState, JobStatus
from confpipe.backends.gcp import api as gcp_api
from confpipe.backends.gcp.batch_request import (
    check_resources,
    job_dir_of,
    job_request,
    job_status,
    redacted,
)
from confpipe.backends.gcp.cloud import CloudBackend, copy_records, earlier_jobs
from confpipe.backends.gcp.hosts import read_exit
from confpipe.backends.gcp.job import DRIVER, job_id, step_labels
from confpipe.backends.gcp.machine_catalog import Choice
from confpipe.backends.gcp.settings import GcpConf
from confpipe.backends.resources import Resources
from confpipe.errors import StepFailed

if TYPE_CHECKING:
    from google.cloud import batch_v1

__all__ = ["BatchBackend", "job_request", "redacted"]

logger = logging.getLogger(__name__)
PAGE_SIZE = 100
END_CHECK_SOONEST = 10  # its exit record is read poll_interval/END_CHECK_SOONEST in, first
END_CHECK_AGE = 10  # then every 1/END_CHECK_AGE of the job's age (at most poll_interval/2)


@dataclass(eq=False)
class _Job:
    """A handle: the Batch job, and where run_job reads records (``origin``: where it writes)."""

    name: str
    step: str
    job_dir: str
    origin: str
    status: JobStatus
    own: bool = True  # carries this driver's label, so the shared ListJobs sees it
    since: float = field(default_factory=time.monotonic)  # its status is that recent
    born: float = field(default_factory=time.monotonic)
    end_check: float = 0.0  # when to read its exit record next (0: not yet scheduled)


class BatchBackend(CloudBackend["batch_v1.BatchServiceClient"]):
    """Runs jobs on Cloud Batch in ``settings.project``/``region``, in containers of ``image``.

    ``settings.batch_endpoint`` (``host:port``) points the client at another server, such as
    ``confpipe.testing.batch.FakeBatch`` (loopback endpoints get an insecure channel and no
    credentials). ``code_folder``: see ``CloudBackend``.
    """

    service = gcp_api.BATCH
    where = "batch"
    _pip_hint = (
        "the job can pip install your project with those extras; or bake them into "
        "backend.image and drop pip_extras"
    )

    def __init__(self, settings: GcpConf, code_folder: str | None = None) -> None:
        super().__init__(settings, code_folder)
        self._end_every = settings.poll_interval / END_CHECK_SOONEST
        self.max_poll_interval = self._end_every  # a wake-up reads a cache, or one record
        self._refreshing = threading.Lock()
        self._tracked: dict[str, _Job] = {}  # guarded by self._lock
        self._listed_at = float("-inf")
        _ = self._client  # made now: no credentials is said before any step's resources

    def _new_client(self) -> batch_v1.BatchServiceClient:
        return gcp_api.batch_client(self.settings.batch_endpoint)

    def _check_resources(self, resources: Resources) -> None:
        check_resources(resources, self.settings.region)

    def submit(self, job: JobRequest) -> object:
        from google.api_core import exceptions

        choice = check_resources(job.resources, self.settings.region)
        try:
            maybe = job.attempt == 0 and earlier_jobs(job)  # else no launch submitted one
            live = self._find_live(job) if maybe else None
            return self._track(live or self._create(job, choice))
        except exceptions.GoogleAPICallError as err:
            raise StepFailed(job.step, f"Cloud Batch refused the request: {err}") from err

    def poll(self, handle: object) -> JobStatus:
        from google.api_core import exceptions

        job = _job(handle)
        fresh = time.monotonic() - job.since < self.settings.poll_interval
        if not job.status.state.done and not fresh:
            try:
                self._refresh()
            except exceptions.GoogleAPICallError as err:
                raise StepFailed(job.step, f"Cloud Batch: {err}") from err
            if not job.status.state.done:
                self._check_outage(job.step, f"job {job.name}")
        if not job.status.state.done:
            self._check_end(job)
        status = job.status
        if status.state.done:
            self._finish(job)
        return dataclasses.replace(status, log=f"{job.origin}/{LOG}")

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

    def _find_live(self, job: JobRequest) -> _Job | None:
        """A queued or running Batch job of this step (same name, hash and output) that has
        not recorded its exit, if any."""
        from google.cloud import batch_v1

        query = " AND ".join(f'labels.{k}="{v}"' for k, v in step_labels(job).items())
        request = batch_v1.ListJobsRequest(parent=self.settings.parent, filter=query)
        pager = self._call(job.step, self._client.list_jobs, request)
        for found in pager:
            status, origin = job_status(found), job_dir_of(found)
            # a job that wrote its exit record is over, though Batch may not say so yet
            if origin is not None and not status.state.done and read_exit(origin) is None:
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

        code = self._stager.staged() if self._stager else None
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
        if time.monotonic() - self._listed_at < self.settings.poll_interval:
            return
        if not self._refreshing.acquire(blocking=False):
            return  # another thread is refreshing: the cache will do
        try:
            if time.monotonic() - self._listed_at < self.settings.poll_interval:
                return
            self._listed_at = time.monotonic()
            with self._lock:
                tracked = dict(self._tracked)
            try:
                seen = self._list_own(tracked)
                for name in tracked.keys() - seen:
                    self._get_one(tracked[name])
            except gcp_api.transient() as err:
                logger.warning("Cloud Batch: %s; keeping the last statuses, will retry", err)
                self._api_down(err)
            else:
                self._api_up()
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
        pager = self._client.list_jobs(request=request, retry=None, timeout=gcp_api.CALL_TIMEOUT)
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
            found = self._client.get_job(request=request, retry=None, timeout=gcp_api.CALL_TIMEOUT)
        except exceptions.NotFound:
            detail = f"Batch job {job.name} was deleted outside confpipe"
            job.status = JobStatus(JobState.FAILED, detail)
            return
        job.status = job_status(found)

    def _check_end(self, job: _Job) -> None:
        """Read the job's exit record, if it is time to: found, it is the job's status."""
        now = time.monotonic()
        if not job.end_check:
            job.end_check = job.born + self._end_every
        if now < job.end_check:
            return
        ended = read_exit(job.origin)
        if ended is None:
            every = min((now - job.born) / END_CHECK_AGE, self.settings.poll_interval / 2)
            job.end_check = time.monotonic() + max(self._end_every, every)
            return
        state = JobState.SUCCEEDED if ended.code == 0 else JobState.FAILED
        detail = f"{ended.text()} (its exit record); Batch job {job.name}"
        job.status = JobStatus(state, detail)

    def _finish(self, job: _Job) -> None:
        """Stop tracking ``job``; for a re-attached job, copy its records where run_job looks."""
        with self._lock:
            if self._tracked.pop(job.name, None) is None:
                return
        if job.origin != job.job_dir:
            copy_records(job.job_dir, [(job.origin, RESULT), (job.origin, ERROR)])


def _json(job: batch_v1.Job) -> str:
    return json.dumps(redacted(job), sort_keys=True)


def _job(handle: object) -> _Job:
    if not isinstance(handle, _Job):
        raise TypeError(f"not a Batch job handle: {handle!r}")
    return handle
