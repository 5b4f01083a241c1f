"""The ``backend`` settings made into the Backend they select (local or gcp), each value checked.

``make_backend(settings, prefix=...)`` takes the resolved ``backend`` node (plain data whose
keys the compiler has checked against its schema) and builds the backend, raising one
ConfigError line per wrong value; ``missing_setting(key)`` says how to set a mandatory
setting left at ``???``. For ``gcp``, ``storage_endpoint`` points this process's ``gs://``
store at an emulator (``storage.configure``) and ``stage_code`` stages the working tree under
``{prefix}/.confpipe/code``. ``gcp`` is a ``GcpBackend``: Cloud TPU for steps whose resources
name a TPU, Cloud Batch for the others. Backends, and Google's SDKs, are imported only when
built (google-cloud-tpu on the first TPU step).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from omegaconf import MISSING

from confpipe import storage
from confpipe.backends import RECORDS, Backend, BackendKind, JobRequest, JobStatus
from confpipe.backends.resources import Resources, parse_size
from confpipe.config.schema import GcpConf
from confpipe.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from confpipe.backends.gcp.batch import BatchBackend
    from confpipe.backends.gcp.tpu import TpuBackend

__all__ = ["GcpBackend", "make_backend", "missing_setting"]

_HOW_TO_SET = {  # a mandatory setting -> (what it is, an example)
    "project": ("the Google Cloud project the jobs run in", "my-project"),
    "region": ("the region the jobs run in", "us-central1"),
    "image": (
        "the container image the jobs run in (confpipe installed)",
        "us-docker.pkg.dev/my-project/ml/confpipe:latest",
    ),
}


def make_backend(settings: Mapping[str, Any], *, prefix: str) -> Backend:
    """The backend ``settings["kind"]`` names, built from its checked ``settings``."""
    kind = settings.get("kind")
    if kind == BackendKind.LOCAL.value:
        return _local(settings)
    if kind == BackendKind.GCP.value:
        return _gcp(GcpConf(**settings), prefix)
    kinds = [k.value for k in BackendKind]
    raise ConfigError(
        f"backend.kind: unknown backend {kind!r}{did_you_mean(str(kind), kinds)}; "
        f"backends: {', '.join(kinds)}"
    )


def missing_setting(key: str) -> str:
    """The message for ``backend.KEY`` left unset: what it is and how to set it."""
    what, example = _HOW_TO_SET.get(key, ("a value", "..."))
    return f"backend.{key}: missing; set {what}, e.g. backend.{key}={example}"


def _local(settings: Mapping[str, Any]) -> Backend:
    from confpipe.backends.local import LocalBackend

    cpu = settings.get("cpu")
    if cpu is not None and not cpu > 0:
        raise ConfigError(f"backend.cpu: must be a positive number of CPUs, got {cpu!r}")
    memory = settings.get("memory")
    if memory is not None:
        try:
            memory = parse_size(memory, plain_bytes=False)
        except ValueError as err:
            raise ConfigError(f"backend.memory: {err}") from None
        if memory <= 0:
            got = settings["memory"]
            raise ConfigError(f"backend.memory: must be positive, got {got!r}; use e.g. 16GiB")
    return LocalBackend(cpu=cpu, memory=memory)


@dataclass(frozen=True)
class _Routed:
    """A job handle of the backend that runs it."""

    backend: Backend
    handle: object


class GcpBackend:
    """``backend=gcp``: TPU steps on Cloud TPU, others on Cloud Batch. Each is built when the
    first step it serves is checked, so a launch without Batch steps needs no Batch client
    (nor its credentials), and one without TPU steps no TPU client."""

    kind = BackendKind.GCP
    reattaches = True

    def __init__(
        self, batch: Callable[[], BatchBackend], tpu: Callable[[], TpuBackend], poll_interval: float
    ) -> None:
        self.max_poll_interval = poll_interval / 2  # as each backend's
        self._make_batch, self._make_tpu = batch, tpu
        self._batch: BatchBackend | None = None
        self._tpu: TpuBackend | None = None
        self._lock = threading.Lock()

    @property
    def batch(self) -> BatchBackend:
        with self._lock:
            if self._batch is None:
                self._batch = self._make_batch()
            return self._batch

    @property
    def tpu(self) -> TpuBackend:
        with self._lock:
            if self._tpu is None:
                self._tpu = self._make_tpu()
            return self._tpu

    def serving(self, resources: Resources) -> Backend:
        """The backend that runs a step with ``resources``."""
        return self.tpu if resources.tpu is not None else self.batch

    def check(self, step: str, resources: Resources) -> None:
        self.serving(resources).check(step, resources)

    def submit(self, job: JobRequest) -> object:
        backend = self.serving(job.resources)
        return _Routed(backend, backend.submit(job))

    def poll(self, handle: object) -> JobStatus:
        routed = _routed(handle)
        return routed.backend.poll(routed.handle)

    def cancel(self, handle: object) -> None:
        routed = _routed(handle)
        routed.backend.cancel(routed.handle)

    def close(self) -> None:
        """Close the API channels of the backends made so far."""
        with self._lock:
            made = [b for b in (self._batch, self._tpu) if b is not None]
        for backend in made:
            backend.close()


def _routed(handle: object) -> _Routed:
    if not isinstance(handle, _Routed):
        raise TypeError(f"not a backend=gcp job handle: {handle!r}")
    return handle


class _Shared(TypedDict):
    """The settings BatchBackend and TpuBackend take alike."""

    service_account: str | None
    network: str | None
    subnetwork: str | None
    labels: Mapping[str, str] | None
    poll_interval: float
    stage_code: str | None
    api_timeout: float
    storage_endpoint: str | None


def _gcp(conf: GcpConf, prefix: str) -> Backend:
    """Cloud Batch and Cloud TPU in ``conf.project``; nothing is sent until a step is submitted."""
    for key in ("cpu", "memory"):
        if getattr(conf, key) is not None:
            raise ConfigError(
                f"backend.{key}: only the local backend has a {key} budget; with backend=gcp "
                f"each step's resources.{key} sizes its own machine, so drop backend.{key}"
            )
    for key in ("project", "region", "image"):
        value = getattr(conf, key)
        if value is None or value == MISSING or not str(value).strip():
            raise ConfigError(missing_setting(key))
    for key in ("poll_interval", "api_timeout"):
        value = getattr(conf, key)
        if not value > 0:
            raise ConfigError(f"backend.{key}: must be a positive number of seconds, got {value!r}")
    if conf.storage_endpoint:
        storage.configure(storage_endpoint=conf.storage_endpoint)
    from confpipe.backends.gcp.batch import BatchBackend
    from confpipe.backends.gcp.batch_request import BatchSettings

    # the settings both backends share are checked now, though each is built on first use
    BatchSettings(conf.project, conf.region, conf.image, labels=conf.labels)
    code = f"{storage.local_path(prefix).rstrip('/')}/{RECORDS}/code" if conf.stage_code else None

    shared = _Shared(
        service_account=conf.service_account,
        network=conf.network,
        subnetwork=conf.subnetwork,
        labels=conf.labels,
        poll_interval=conf.poll_interval,
        stage_code=code,
        api_timeout=conf.api_timeout,
        storage_endpoint=conf.storage_endpoint,
    )

    def tpu() -> TpuBackend:
        from confpipe.backends.gcp.tpu import TpuBackend

        return TpuBackend(
            conf.project,
            conf.region,
            conf.image,
            zone=conf.tpu_zone,
            runtime_version=conf.tpu_runtime_version,
            tpu_endpoint=conf.tpu_endpoint,
            **shared,
        )

    def batch() -> BatchBackend:
        return BatchBackend(
            conf.project, conf.region, conf.image, batch_endpoint=conf.batch_endpoint, **shared
        )

    return GcpBackend(batch, tpu, conf.poll_interval)
