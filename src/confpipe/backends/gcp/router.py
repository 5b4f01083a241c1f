"""``GcpBackend``, the backend ``backend=gcp`` selects: TPU steps on Cloud TPU, the others on
Cloud Batch.

``build(settings, prefix=...)`` makes it from the checked ``GcpConf``: ``storage_endpoint``
points this process's ``gs://`` store at an emulator (``storage.configure``), and
``stage_code`` stages the working tree under ``{prefix}/.confpipe/code``. Each of the two
backends is made when the first step it serves is checked, so a launch without Batch steps
needs no Batch client (nor its credentials), and one without TPU steps no TPU client
(google-cloud-tpu is imported then, not before).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from confpipe import storage
from confpipe.backends import RECORDS, Backend, BackendKind, JobRequest, JobStatus
from confpipe.backends.gcp.batch import BatchBackend
from confpipe.backends.gcp.settings import GcpConf
from confpipe.backends.gcp.tpu import TpuBackend
from confpipe.backends.resources import Resources

__all__ = ["GcpBackend", "build"]


def build(settings: GcpConf, *, prefix: str) -> GcpBackend:
    """The gcp backend for runs under ``prefix``; nothing is sent until a step is checked."""
    if settings.storage_endpoint:
        storage.configure(storage_endpoint=settings.storage_endpoint)
    code = f"{storage.local_path(prefix).rstrip('/')}/{RECORDS}/code"
    return GcpBackend(settings, code if settings.stage_code else None)


@dataclass(frozen=True)
class _Routed:
    """A job handle of the backend that runs it."""

    backend: Backend
    handle: object


class GcpBackend:
    """``backend=gcp``: routes each step by its resources to ``batch`` or ``tpu``, each made
    on first use; ``code_folder``: see ``CloudBackend``."""

    kind = BackendKind.GCP
    reattaches = True

    def __init__(self, settings: GcpConf, code_folder: str | None = None) -> None:
        self.settings, self.code_folder = settings, code_folder
        self.max_poll_interval = settings.poll_interval / 2  # as each backend's
        self._made: dict[str, Backend] = {}  # by its ``where``: batch, tpu
        self._lock = threading.Lock()

    def serving(self, resources: Resources) -> Backend:
        """The backend that runs a step with ``resources`` (made on its first step)."""
        cls = TpuBackend if resources.tpu is not None else BatchBackend
        with self._lock:
            if cls.where not in self._made:
                self._made[cls.where] = cls(self.settings, self.code_folder)
            return self._made[cls.where]

    def check(self, step: str, resources: Resources) -> str:
        return self.serving(resources).check(step, resources)

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
            made = list(self._made.values())
        for backend in made:
            backend.close()


def _routed(handle: object) -> _Routed:
    if not isinstance(handle, _Routed):
        raise TypeError(f"not a backend=gcp job handle: {handle!r}")
    return handle
