"""Cloud TPU messages for one confpipe job: the QueuedResource we send, the status we read back.

Pure functions of the backend settings and the job, so golden files can pin them:
``check_resources`` (the slice from ``tpu_catalog``, its zone, what a TPU step can't
ask for), ``queued_resource`` (one node of the slice's accelerator type or topology, its
runtime version, spot tier, labels carrying the step name and hash, and the metadata: the
``startup_script`` that every host runs, the job folder, each env value under a key of its
own), ``redacted`` (the request as JSON with env values hidden: the only form that may be
logged or written down) and ``queued_status``. ``google.cloud.tpu_v2`` is imported on use.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from confpipe.backends import LOG, JobRequest, JobState, JobStatus
from confpipe.backends.gcp.hosts import BOOT, EXITS, STARTS
from confpipe.backends.gcp.job import (
    DRIVER,
    REDACTED,
    VM_MODULE,
    StagedCode,
    entry_env,
    job_id,
    step_labels,
)
from confpipe.backends.gcp.settings import GcpConf
from confpipe.backends.gcp.tpu_catalog import Slice, parse, zone_for
from confpipe.backends.gcp.vm import EXITED, HOST_VAR, LOG_LIMIT, STATE_VAR
from confpipe.backends.resources import Resources
from confpipe.errors import ConfigError

if TYPE_CHECKING:
    from google.cloud import tpu_v2

__all__ = [
    "JOB_DIR_KEY", "SCRIPT_KEY", "Placement", "check_resources", "job_dir_of", "queued_resource",
    "queued_status", "redacted", "startup_script",
]  # fmt: skip

SCRIPT_KEY = "startup-script"  # the metadata key whose script every TPU VM host runs at boot
JOB_DIR_KEY = "confpipe-job-dir"
ENV_KEY = "confpipe-env-"  # + NAME: the value of the step's env variable NAME
WORKER_KEY = "agent-worker-number"  # the host's index, in a TPU VM's metadata
ENDPOINTS_KEY = "worker-network-endpoints"  # one entry per VM of the slice, comma-separated
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,114}")
_DOCKER_HOSTS = re.compile(r"([a-z0-9-]+-docker\.pkg\.dev|([a-z]+\.)?gcr\.io)/")


@dataclass(frozen=True)
class Placement:
    """Where and on what a TPU step runs: the slice, its zone and the runtime version."""

    slice: Slice
    zone: str
    runtime_version: str


def check_resources(resources: Resources, settings: GcpConf) -> Placement:
    """The slice and zone for ``resources`` (whose ``tpu`` is set); ConfigError if none fits.

    ``backend.tpu_zone`` None: the first zone of ``backend.region`` offering the step's TPU
    type; ``backend.tpu_runtime_version`` None: the default of the type's generation
    (``tpu_catalog.GENERATIONS``).
    """
    if resources.tpu is None:
        raise ConfigError("resources.tpu: not a TPU step")
    tpu = parse(resources.tpu)
    zone = zone_for(tpu, settings.tpu_zone, settings.region)
    what = f"resources.tpu={resources.tpu}"
    for key, value in (
        ("machine_type", resources.machine_type),
        ("memory", resources.memory),
        ("disk", resources.disk),
        ("cpu", None if resources.cpu == 1 else resources.cpu),
    ):
        if value is not None:
            raise ConfigError(
                f"resources.{key}: a TPU host's machine (CPUs, memory, boot disk) comes with its "
                f"type ({what}); drop resources.{key}"
            )
    if resources.secret_env:
        raise ConfigError(
            f"resources.secret_env: not supported for TPU steps yet ({what}); read the secret in "
            "the step (google-cloud-secret-manager) or pass it in resources.env"
        )
    for name in resources.env:
        if not _ENV_NAME.fullmatch(name):
            raise ConfigError(
                f"resources.env.{name}: not a valid variable name for a TPU step: letters, digits "
                "and '_', not starting with a digit"
            )
    version = settings.tpu_runtime_version or tpu.generation.runtime_version
    return Placement(tpu, zone, version)


def queued_resource(
    settings: GcpConf,
    job: JobRequest,
    *,
    driver: str,
    code: StagedCode | None = None,
    placement: Placement | None = None,
) -> tpu_v2.QueuedResource:
    """The QueuedResource: one TPU node whose hosts all run ``startup_script`` at boot.

    ``driver`` labels the node with the launch that submitted it; ``code`` is the staged
    working-tree archive (its URL and sha256), if any.
    """
    from google.cloud import tpu_v2

    r = job.resources
    placement = placement or check_resources(r, settings)
    tpu = placement.slice
    metadata = {
        SCRIPT_KEY: startup_script(settings, job, code=code),
        JOB_DIR_KEY: job.job_dir,
        **{f"{ENV_KEY}{name}": value for name, value in r.env.items()},
    }
    node = tpu_v2.Node(
        description=f"confpipe step {job.step} (attempt {job.attempt})",
        runtime_version=placement.runtime_version,
        labels={**settings.labels, **step_labels(job), DRIVER: driver},
        metadata=metadata,
        service_account=tpu_v2.ServiceAccount(
            email=settings.service_account or "", scope=[CLOUD_PLATFORM]
        ),
        network_config=tpu_v2.NetworkConfig(
            network=settings.network or "",
            subnetwork=settings.subnetwork or "",
            enable_external_ips=True,  # to pull the image (without Cloud NAT on the network)
        ),
    )
    if tpu.accelerator_type is not None:
        node.accelerator_type = tpu.accelerator_type
    else:
        kind = getattr(tpu_v2.AcceleratorConfig.Type, tpu.generation.config_type or "")
        node.accelerator_config = tpu_v2.AcceleratorConfig(type_=kind, topology=tpu.topology)
    spec = tpu_v2.QueuedResource.Tpu.NodeSpec(
        parent=settings.zone_parent(placement.zone), node_id=job_id(job), node=node
    )
    request = tpu_v2.QueuedResource(tpu=tpu_v2.QueuedResource.Tpu(node_spec=[spec]))
    if r.spot:
        request.spot = tpu_v2.QueuedResource.Spot()
    return request


def startup_script(settings: GcpConf, job: JobRequest, *, code: StagedCode | None = None) -> str:
    """The script every host runs at boot: the job's entry in ``settings.image``, by Docker.

    The host's index comes from the VM's metadata server (``GCE_METADATA_HOST`` overrides its
    address, as in Google's client libraries); env values are read from the metadata too, so
    the script itself holds none. The host reports its own progress in the job folder
    (``confpipe.backends.gcp.hosts``): ``starts/N-boot`` once it runs, and, when ``docker
    pull`` or ``docker run`` fails before the worker has written its exit record, an exit
    record naming that stage, with the output of both as the host's ``log.txt`` (its last
    8 MiB). The records are uploaded with curl (Cloud Storage's JSON API, the VM's token;
    ``STORAGE_EMULATOR_HOST`` overrides the endpoint): the image may be what is broken.
    """
    r = job.resources
    own = entry_env(job, storage_endpoint=settings.storage_endpoint, code=code)
    lines = [
        "#!/bin/bash",
        f"# confpipe: step {job.step}, job {job.job_dir}",
        "# Every host of the TPU slice runs this at boot; host 0 writes the job's result.",
        "# A host whose container fails before its worker ends records that itself.",
        "set -u",
        "md() {",
        "  curl -sSf --retry 10 --retry-connrefused -H 'Metadata-Flavor: Google' \\",
        '    "http://${GCE_METADATA_HOST:-metadata.google.internal}/computeMetadata/v1/instance/$1"',
        "}",
        f'if ! {HOST_VAR}="$(md attributes/{WORKER_KEY})"; then',
        f'  echo "confpipe: no {WORKER_KEY} in the metadata: is this a TPU VM?" >&2',
        "  exit 1",
        "fi",
        f"export {HOST_VAR}",
        *(f"export {k}={shlex.quote(v)}" for k, v in own.items()),
        *(f'{k}="$(md attributes/{ENV_KEY}{k})" || exit 1' for k in r.env),
    ]
    if r.env:
        lines.append(f"export {' '.join(r.env)}")
    lines += _put(job.job_dir)
    lines += [
        f'state="$(mktemp -d /tmp/confpipe-host.XXXXXX)"  # the container\'s {STATE_VAR}',
        'log="$state/docker.log"',
        f'if [ "${HOST_VAR}" = 0 ]; then own=""; else own="host-${HOST_VAR}/"; fi',
        "report() {  # report STAGE CODE: this host's exit record and log, unless vm wrote them",
        f'  [ -e "$state/{EXITED}" ] && return',
        f'  tail -c {LOG_LIMIT} "$log" > "$state/{LOG}"',
        f'  put "${{own}}{LOG}" "$state/{LOG}"',
        '  printf \'{"host": %s, "code": %s, "stage": "%s"}\' \\',
        f'    "${HOST_VAR}" "$2" "$1" > "$state/exit.json"',
        f'  put "{EXITS}/${HOST_VAR}.json" "$state/exit.json"',
        "}",
        f"hosts=\"$(md attributes/{ENDPOINTS_KEY} | tr , '\\n' | grep -c .)\"  # the slice's VMs",
        f'put "{STARTS}/${HOST_VAR}-{BOOT}-${{hosts:-0}}" /dev/null',
    ]
    registry = _DOCKER_HOSTS.match(settings.image)
    if registry is not None:
        lines.append(f"gcloud auth configure-docker {registry.group(1)} --quiet")
    image = shlex.quote(settings.image)
    passed = " ".join(f"-e {k}" for k in [HOST_VAR, *own, *r.env])
    run = ["python", "-m", VM_MODULE, job.job_dir]
    lines += [
        f'docker pull {image} 2>&1 | tee "$log"',
        "code=${PIPESTATUS[0]}",
        'if [ "$code" != 0 ]; then report "docker pull" "$code"; exit "$code"; fi',
        "docker run --rm --privileged --net=host --ipc=host \\",
        f'  -v "$state:$state" -e {STATE_VAR}="$state" {passed} \\',
        f'  {image} {shlex.join(run)} 2>&1 | tee -a "$log"',
        "code=${PIPESTATUS[0]}",
        'report "docker run" "$code"',
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


def _put(job_dir: str) -> list[str]:
    """The script's ``put NAME FILE``: FILE uploaded as NAME in the job folder."""
    if not job_dir.startswith("gs://"):  # a local folder (the fake's hosts share this machine)
        folder = shlex.quote(job_dir)
        return [
            "put() {  # put NAME FILE: FILE as NAME in the job folder",
            f'  mkdir -p "$(dirname {folder}/"$1")" && cp "$2" {folder}/"$1.tmp" \\',
            f'    && mv {folder}/"$1.tmp" {folder}/"$1"',
            "}",
        ]
    bucket, _, prefix = job_dir[len("gs://") :].rstrip("/").partition("/")
    target = f"{quote(bucket, safe='')}/o?uploadType=media&name={quote(prefix + '/', safe='')}"
    return [
        "put() {  # put NAME FILE: FILE as NAME in the job folder (Cloud Storage JSON API)",
        '  local api="${STORAGE_EMULATOR_HOST:-https://storage.googleapis.com}" token',
        '  case "$api" in http://*|https://*) ;; *) api="http://$api" ;; esac',
        '  token="$(md service-accounts/default/token \\',
        '    | sed -E \'s/.*"access_token" *: *"([^"]*)".*/\\1/\')"',
        "  curl -sSf --retry 5 --retry-connrefused -o /dev/null -X POST \\",
        '    -H "Authorization: Bearer $token" -H "Content-Type: application/octet-stream" \\',
        f'    --data-binary "@$2" "$api/upload/storage/v1/b/{target}$1"',
        "}",
    ]


def job_dir_of(resource: tpu_v2.QueuedResource) -> str | None:
    """The job folder a queued resource (made by ``queued_resource``) runs, or None."""
    for spec in resource.tpu.node_spec:
        value = spec.node.metadata.get(JOB_DIR_KEY)
        if value:
            return str(value)
    return None


def labels_of(resource: tpu_v2.QueuedResource) -> dict[str, str]:
    """The labels of the queued resource's node (a QueuedResource has none of its own)."""
    specs = resource.tpu.node_spec
    return dict(specs[0].node.labels) if specs else {}


def hosts_of(resource: tpu_v2.QueuedResource) -> int:
    """How many hosts the queued resource's node has (each writes an exit record)."""
    from google.cloud import tpu_v2

    node = resource.tpu.node_spec[0].node
    if node.accelerator_type:
        return parse(node.accelerator_type).hosts
    gen = tpu_v2.AcceleratorConfig.Type(node.accelerator_config.type_).name
    prefix = {"V5LITE_POD": "v5litepod"}.get(gen, gen.lower())
    return parse(f"{prefix}:{node.accelerator_config.topology}").hosts


def redacted(resource: tpu_v2.QueuedResource) -> dict[str, Any]:
    """The QueuedResource as its REST JSON, with every env value hidden."""
    from google.cloud import tpu_v2
    from google.protobuf import json_format

    data: dict[str, Any] = json_format.MessageToDict(tpu_v2.QueuedResource.pb(resource))
    for spec in data.get("tpu", {}).get("nodeSpec", []):
        metadata = spec.get("node", {}).get("metadata", {})
        for key in metadata:
            if key.startswith(ENV_KEY):
                metadata[key] = REDACTED
    return data


def queued_status(resource: tpu_v2.QueuedResource) -> JobStatus:
    """What a queued resource's state means to ``run_job`` (its hosts' exits aside)."""
    from google.cloud import tpu_v2

    state = tpu_v2.QueuedResourceState.State
    s = resource.state.state
    name = resource.name
    if s == state.ACTIVE:
        return JobStatus(JobState.RUNNING, "running")
    if s in (state.SUSPENDING, state.SUSPENDED):
        user = tpu_v2.QueuedResourceState.StateInitiator.USER
        if resource.state.state_initiator == user:
            return JobStatus(JobState.CANCELLED, f"queued resource {name} suspended by a user")
        return JobStatus(
            JobState.PREEMPTED, f"queued resource {name} suspended by the Cloud TPU service"
        )
    if s == state.FAILED:
        error = resource.state.failed_data.error
        why = error.message if error.message else "no reason given"
        return JobStatus(JobState.PREEMPTED, f"queued resource {name} failed: {why}")
    if s == state.DELETING:
        return JobStatus(JobState.FAILED, f"queued resource {name} was deleted outside confpipe")
    return JobStatus(JobState.QUEUED, s.name.lower() if s else "submitted")
