"""The Cloud TPU backend: each TPU job is one queued resource, driven through google-cloud-tpu.

``submit`` first looks for the step's live queued resource by its node's labels (a driver
that took over a stale lease re-attaches instead of submitting twice; only when the step has
an older job folder, ``earlier_jobs``), else creates one (``tpu_request``) and waits for the
create operation. Every host of the slice runs the job's entry (``python -m
confpipe.backends.vm``) and writes an exit record (``exits/N.json``) when its worker ends,
or, when its container never got that far, its startup script does (``hosts``). ``poll``
reads those records (one listing of the job folder) and, while they don't settle it, the
queued resource's state: ACTIVE is running, SUSPENDED or FAILED by the service is a
preemption (``run_job`` retries it), a non-zero exit fails the step (its status names that
host's log). A slice ACTIVE for ``backend.tpu_start_timeout`` while some host's worker
hasn't started fails the step naming those hosts: a VM that never booted writes nothing, and
would otherwise keep a paid slice waiting until ``resources.timeout``. A queued resource is
deleted as soon as its job ends, and by ``cancel``; a detached one is left alone. Status
checks happen at most once per ``poll_interval`` per job. ``google.cloud.tpu_v2`` is
imported when the first TPU step is checked, not before.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confpipe.backends import ERROR, LOG, RESULT, JobRequest, JobState, JobStatus
from confpipe.backends.gcp import api as gcp_api
from confpipe.backends.gcp.cloud import CloudBackend, copy_records, earlier_jobs
from confpipe.backends.gcp.hosts import (
    BOOT,
    WORKER,
    Starts,
    host_dir,
    never_started,
    read_exits,
    read_starts,
)
from confpipe.backends.gcp.job import job_id, step_labels
from confpipe.backends.gcp.tpu_request import (
    Placement,
    check_resources,
    hosts_of,
    job_dir_of,
    labels_of,
    queued_resource,
    queued_status,
    redacted,
)
from confpipe.backends.resources import Resources
from confpipe.errors import StepFailed

if TYPE_CHECKING:
    from google.cloud import tpu_v2

__all__ = ["TpuBackend"]

logger = logging.getLogger(__name__)


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
    active_since: float | None = None  # when the driver first saw the slice ACTIVE
    started: set[int] = field(default_factory=set)  # hosts whose worker started (or ended)
    counted: int | None = None  # the host count the hosts' boot records gave, once read


class TpuBackend(CloudBackend["tpu_v2.TpuClient"]):
    """Runs jobs on Cloud TPU VMs in ``settings.project``, in containers of ``image``.

    ``settings.tpu_zone`` None picks, per step, the first zone of ``region`` offering its TPU
    type; ``tpu_runtime_version`` None the default of the type's generation. ``tpu_endpoint``
    (``host:port``) points the client at another server, such as
    ``confpipe.testing.tpu.FakeTpu`` (loopback endpoints get an insecure channel and no
    credentials). ``code_folder``: see ``CloudBackend`` (the code is installed on each host).
    The client is made on the first check, after the step's TPU is (a mistake in it is
    reported first).
    """

    service = gcp_api.TPU
    where = "tpu"
    _pip_hint = (
        "each TPU host can pip install your project with those extras; or bake them into "
        "backend.image"
    )

    def _new_client(self) -> tpu_v2.TpuClient:
        return gcp_api.tpu_client(self.settings.tpu_endpoint)

    def _check_resources(self, resources: Resources) -> None:
        check_resources(resources, self.settings)

    def check(self, step: str, resources: Resources) -> str:
        """``tpu (N hosts)``: every host of the slice must start (``tpu_start_timeout``)."""
        super().check(step, resources)
        hosts = check_resources(resources, self.settings).slice.hosts
        return f"{self.where} ({hosts} host{'s' if hosts > 1 else ''})"

    def submit(self, job: JobRequest) -> object:
        from google.api_core import exceptions

        placement = check_resources(job.resources, self.settings)
        try:
            maybe = job.attempt == 0 and earlier_jobs(job)  # else no launch submitted one
            live = self._find_live(job, placement) if maybe else None
            return live or self._create(job, placement)
        except exceptions.GoogleAPICallError as err:
            raise StepFailed(job.step, f"Cloud TPU refused the request: {err}") from err

    def poll(self, handle: object) -> JobStatus:
        job = _slice(handle)
        interval = self.settings.poll_interval
        if not job.status.state.done and time.monotonic() - job.checked >= interval:
            job.checked = time.monotonic()
            job.status = self._status(job)
        if job.status.state.done:  # also a slice already preempted when it was created
            self._finish(job)
        host = job.failed_host or 0  # the host that failed the job, else host 0 (the job's)
        several = job.failed_host is not None and job.hosts > 1
        log = f"{host_dir(job.origin, host)}/{LOG}"
        label = f"host {host} of {job.hosts}" if several else ""
        return dataclasses.replace(job.status, log=log, log_label=label)

    def cancel(self, handle: object) -> None:
        job = _slice(handle)
        if job.status.state.done:
            return
        job.status = JobStatus(JobState.CANCELLED, f"queued resource {job.name} deleted")
        self._finish(job)

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
            if status.state.done or any(e.code for e in read_exits(origin).values()):
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

        code = self._stager.staged() if self._stager else None
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
            gcp_api.wait_operation(
                self.service, job.step, "create", operation, self.settings.api_timeout
            )
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

    def _status(self, job: _Slice) -> JobStatus:
        """The job's status from its hosts' records, else from its queued resource."""
        exits = read_exits(job.origin)
        failed = [host for host, end in exits.items() if end.code != 0]
        if not failed and len(exits) >= job.hosts and job.counted is None:
            self._count_hosts(job, read_starts(job.origin))  # all of them? the hosts know
        if not failed and len(exits) >= job.hosts:
            return JobStatus(JobState.SUCCEEDED)
        queued = self._get(job)
        if failed and not queued.state.done:  # (a lost slice explains its hosts' exits)
            host = failed[0]
            job.failed_host = host
            where = f"host {host} of {job.hosts}" if job.hosts > 1 else "the TPU host"
            return JobStatus(JobState.FAILED, f"{where} exited with {exits[host].text()}")
        if queued.state is JobState.RUNNING:
            return self._start_deadline(job, set(exits)) or queued
        return queued

    def _start_deadline(self, job: _Slice, exited: set[int]) -> JobStatus | None:
        """FAILED once the slice has been ACTIVE for ``tpu_start_timeout`` while some host's
        worker hasn't started (nor ended): its VM never booted, or its container never ran."""
        now = time.monotonic()
        if job.active_since is None:
            job.active_since = now
        job.started |= exited
        if len(job.started) >= job.hosts:
            return None  # every host started: no more listings of starts/
        starts = read_starts(job.origin)
        self._count_hosts(job, starts)
        job.started |= {host for host, stages in starts.stages.items() if WORKER in stages}
        missing = [h for h in range(job.hosts) if h not in job.started]
        timeout = self.settings.tpu_start_timeout
        if not missing or now - job.active_since < timeout:
            return None
        booted = [h for h in missing if BOOT in starts.stages.get(h, set())]
        job.failed_host = missing[0]
        node, zone = job.name.rsplit("/", 1)[-1], job.name.split("/")[3]
        why = never_started(missing, booted, job.hosts, timeout)
        return JobStatus(
            JobState.FAILED,
            f"{why}; the serial console says more: gcloud compute tpus tpu-vm "
            f"get-serial-port-output {node} --worker={missing[0]} --zone={zone}",
        )

    def _count_hosts(self, job: _Slice, starts: Starts) -> None:
        """Take the slice's host count from its hosts' boot records, if they gave one: the
        catalogue's count is a prediction, and a wrong one would wait for hosts that don't
        exist, or end the job before every host did."""
        if starts.hosts is None:
            return
        job.counted = starts.hosts
        if starts.hosts != job.hosts:
            logger.warning(
                "step %r: queued resource %s has %d hosts, not the %d confpipe's TPU catalogue "
                "expected: waiting for %d (please report this: tpu_catalog.py)",
                job.step, job.name, starts.hosts, job.hosts, starts.hosts,
            )  # fmt: skip
            job.hosts = starts.hosts

    def _get(self, job: _Slice) -> JobStatus:
        """The queued resource's status; on an API outage the last one, until api_timeout."""
        from google.api_core import exceptions
        from google.cloud import tpu_v2

        request = tpu_v2.GetQueuedResourceRequest(name=job.name)
        try:
            found = self._client.get_queued_resource(
                request=request, retry=None, timeout=gcp_api.CALL_TIMEOUT
            )
        except exceptions.NotFound:
            return JobStatus(
                JobState.FAILED, f"queued resource {job.name} was deleted outside confpipe"
            )
        except gcp_api.transient() as err:
            logger.warning("Cloud TPU: %s; keeping the last status, will retry", err)
            self._api_down(err)
            self._check_outage(job.step, f"queued resource {job.name}")
            return job.status
        except exceptions.GoogleAPICallError as err:
            raise StepFailed(job.step, f"Cloud TPU: {err}") from err
        self._api_up()
        return queued_status(found)

    def _finish(self, job: _Slice) -> None:
        """Delete the queued resource; put the records where run_job looks for them."""
        if job.finished:
            return
        job.finished = True
        self._delete(job)
        copies = [(job.origin, RESULT), (job.origin, ERROR)] if job.origin != job.job_dir else []
        if job.failed_host:  # the failing host's error is the job's error
            copies = [(host_dir(job.origin, job.failed_host), ERROR)]
        copy_records(job.job_dir, copies)

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


def _slice(handle: object) -> _Slice:
    if not isinstance(handle, _Slice):
        raise TypeError(f"not a Cloud TPU job handle: {handle!r}")
    return handle
