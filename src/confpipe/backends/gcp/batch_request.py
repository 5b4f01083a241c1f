"""Cloud Batch messages for one confpipe job: the Job request we send, the status we read back.

Pure functions of the backend settings and the job, so golden files can pin them:
``job_request`` (cpu -> cpuMilli, memory -> memoryMib, disk -> the VM's whole boot disk,
``allocationPolicy.instances[].policy.bootDisk.sizeGb``, never less than ``BOOT_DISK_GB``
(not ``computeResource.bootDiskMib``, which is extra space per task), the machine from
``machine_catalog.choose``, GPUs -> accelerators with driver installation, spot -> SPOT,
max_retries -> a lifecycle policy that retries preemptions only, timeout -> maxRunDuration
(plus ``timeout_grace``: see there),
env and secret_env -> environment, labels carrying the step name and hash) and
``job_status``.
``redacted`` is the request as JSON with every env value hidden: the only form that may be
logged or written down. ``google.cloud.batch_v1`` is imported on use.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import TYPE_CHECKING, Any

from confpipe.backends import JobRequest, JobState, JobStatus
from confpipe.backends.gcp.job import (
    DRIVER,
    OWN_VARS,
    REDACTED,
    VM_MODULE,
    StagedCode,
    entry_env,
    step_labels,
)
from confpipe.backends.gcp.machine_catalog import Choice, check_region, choose
from confpipe.backends.gcp.settings import GcpConf
from confpipe.backends.resources import Resources
from confpipe.errors import ConfigError

if TYPE_CHECKING:
    from google.cloud import batch_v1

MiB = 2**20
GiB = 2**30
PREEMPTED = 50001  # Batch's exit code for a task whose Spot VM was preempted
MAX_RETRIES = 10  # Batch retries a task at most this many times
BOOT_DISK_GB = 30  # Batch's default boot disk: its VM images and the pulled image live there
_SECRET = re.compile(r"projects/[^/]+/secrets/[^/]+/versions/[^/]+")
_EXITS = {
    50001: "its Spot VM was preempted",
    50002: "its VM stopped reporting to Batch",
    50003: "its VM rebooted while the task ran",
    50004: "the task stopped responding",
    50005: "it ran past resources.timeout (maxRunDuration)",
    50006: "its VM was recreated while the task ran",
}


def timeout_grace(timeout: float) -> float:
    """What ``maxRunDuration`` adds to ``resources.timeout``: a tenth, within [5 s, 10 min].

    The driver enforces ``timeout`` itself (``run_job``: it deletes the job and fails the
    step with "timed out"), counting from when it saw the job running, a poll interval or
    so after the task started. Batch's own limit is the backstop for a job no driver
    watches (``detach=true``, a driver that died): set exactly to ``timeout`` it would fire
    first and race the driver's clearer failure.
    """
    return min(max(timeout / 10, 5.0), 600.0)


def check_resources(resources: Resources, region: str) -> Choice:
    """Batch's own limits on ``resources`` (a ``Resources``), then the machine that serves it
    (whose GPUs, if any, ``region`` must offer)."""
    if resources.tpu is not None:
        raise ConfigError(
            f"resources.tpu={resources.tpu}: Cloud Batch runs CPU/GPU steps; TPU steps run "
            "on backend=gcp's Cloud TPU queued resources (GcpBackend), not on BatchBackend"
        )
    if resources.max_retries > MAX_RETRIES:
        raise ConfigError(
            f"resources.max_retries={resources.max_retries}: Cloud Batch retries a task at "
            f"most {MAX_RETRIES} times"
        )
    for key, name in resources.secret_env.items():
        if not _SECRET.fullmatch(name):
            raise ConfigError(
                f"resources.secret_env.{key}: {name!r} is not a Secret Manager version name; "
                "use projects/PROJECT/secrets/NAME/versions/VERSION (or .../versions/latest)"
            )
    choice = choose(resources)
    if choice.gpu is not None:
        check_region(choice.gpu, region)
    return choice


def job_request(
    settings: GcpConf,
    job: JobRequest,
    *,
    driver: str,
    code: StagedCode | None = None,
    choice: Choice | None = None,
) -> batch_v1.Job:
    """The Batch Job that runs ``python -m confpipe.backends.vm <job_dir>`` in the image.

    ``driver`` labels the job with the launch that submitted it (one list request polls all
    of a driver's jobs); ``code`` is the staged working-tree archive (URL, sha256), if any.
    """
    from google.cloud import batch_v1

    r = job.resources
    choice = choice or check_resources(r, settings.region)
    env = {**r.env, **entry_env(job, storage_endpoint=settings.storage_endpoint, code=code)}
    compute = batch_v1.ComputeResource(cpu_milli=round(r.cpu * 1000))
    if r.memory:
        compute.memory_mib = math.ceil(r.memory / MiB)
    spec = batch_v1.TaskSpec(
        runnables=[
            batch_v1.Runnable(
                container=batch_v1.Runnable.Container(
                    image_uri=settings.image,
                    entrypoint="python",
                    commands=["-m", VM_MODULE, job.job_dir],
                )
            )
        ],
        compute_resource=compute,
        environment=batch_v1.Environment(variables=env, secret_variables=dict(r.secret_env)),
    )
    if r.timeout:
        limit = math.ceil(r.timeout + timeout_grace(r.timeout))
        spec.max_run_duration = datetime.timedelta(seconds=limit)
    if r.max_retries:
        spec.max_retry_count = r.max_retries
        spec.lifecycle_policies = [
            batch_v1.LifecyclePolicy(  # retry these exit codes, fail on every other one
                action=batch_v1.LifecyclePolicy.Action.RETRY_TASK,
                action_condition=batch_v1.LifecyclePolicy.ActionCondition(exit_codes=[PREEMPTED]),
            )
        ]
    policy = batch_v1.AllocationPolicy.InstancePolicy(
        machine_type=choice.machine.name,
        provisioning_model=(
            batch_v1.AllocationPolicy.ProvisioningModel.SPOT
            if r.spot
            else batch_v1.AllocationPolicy.ProvisioningModel.PROVISIONING_MODEL_UNSPECIFIED
        ),
    )
    if choice.gpu is not None:
        policy.accelerators = [
            batch_v1.AllocationPolicy.Accelerator(type_=choice.gpu.type, count=choice.gpu.count)
        ]
    if r.disk:
        size = max(math.ceil(r.disk / GiB), BOOT_DISK_GB)  # less can't boot and hold the image
        policy.boot_disk = batch_v1.AllocationPolicy.Disk(size_gb=size)
    labels = {**settings.labels, **step_labels(job), DRIVER: driver}
    allocation = batch_v1.AllocationPolicy(
        instances=[
            batch_v1.AllocationPolicy.InstancePolicyOrTemplate(
                policy=policy, install_gpu_drivers=choice.gpu is not None
            )
        ],
        labels=dict(settings.labels),
    )
    if settings.service_account:
        allocation.service_account = batch_v1.ServiceAccount(email=settings.service_account)
    if settings.network or settings.subnetwork:
        interface = batch_v1.AllocationPolicy.NetworkInterface(
            network=settings.network or "", subnetwork=settings.subnetwork or ""
        )
        allocation.network = batch_v1.AllocationPolicy.NetworkPolicy(network_interfaces=[interface])
    return batch_v1.Job(
        task_groups=[batch_v1.TaskGroup(task_count=1, parallelism=1, task_spec=spec)],
        allocation_policy=allocation,
        labels=labels,
        logs_policy=batch_v1.LogsPolicy(destination=batch_v1.LogsPolicy.Destination.CLOUD_LOGGING),
    )


def job_dir_of(job: batch_v1.Job) -> str | None:
    """The job folder a Batch job (made by ``job_request``) runs, or None if it isn't ours."""
    for group in job.task_groups:
        for runnable in group.task_spec.runnables:
            commands = list(runnable.container.commands)
            if len(commands) == 3 and commands[:2] == ["-m", VM_MODULE]:
                return commands[2]
    return None


def redacted(job: batch_v1.Job) -> dict[str, Any]:
    """The Job as its REST JSON, with the value of every variable not set by confpipe hidden."""
    from google.cloud import batch_v1
    from google.protobuf import json_format

    data: dict[str, Any] = json_format.MessageToDict(batch_v1.Job.pb(job))
    for group in data.get("taskGroups", []):
        variables = group.get("taskSpec", {}).get("environment", {}).get("variables", {})
        for key in variables:
            if key not in OWN_VARS:
                variables[key] = REDACTED
    return data


def job_status(job: batch_v1.Job) -> JobStatus:
    """What a Job's status means to ``run_job``; a failure says why, from the status events."""
    from google.cloud import batch_v1

    state = batch_v1.JobStatus.State
    s = job.status.state
    if s == state.RUNNING:
        return JobStatus(JobState.RUNNING, "running")
    if s == state.SUCCEEDED:
        return JobStatus(JobState.SUCCEEDED)
    if s in (state.DELETION_IN_PROGRESS, state.CANCELLATION_IN_PROGRESS, state.CANCELLED):
        return JobStatus(JobState.CANCELLED, f"Batch job {s.name.lower().replace('_', ' ')}")
    if s != state.FAILED:
        return JobStatus(JobState.QUEUED, s.name.lower() if s else "submitted")
    events = list(job.status.status_events)
    failed = batch_v1.TaskStatus.State.FAILED
    codes = [e.task_execution.exit_code for e in events if e.task_state == failed]
    code = codes[-1] if codes else None
    if code == PREEMPTED:
        retries = max((g.task_spec.max_retry_count for g in job.task_groups), default=0)
        why = (
            f"preempted {codes.count(PREEMPTED)} time(s), retried {retries} time(s) "
            "(resources.max_retries): raise it to retry more often"
        )
    elif code in _EXITS:
        why = f"exit code {code}: {_EXITS[code]}"
    else:
        why = f"exit code {code}" if code is not None else "no task ran"
    last = events[-1].description if events else "no status events"
    return JobStatus(JobState.FAILED, f"{why}; last status event: {last}; Batch job {job.name}")
