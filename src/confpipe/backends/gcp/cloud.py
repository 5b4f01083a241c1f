"""What the Cloud Batch and Cloud TPU backends share: settings, client, staging and outages.

``CloudBackend`` holds the settings (a ``GcpConf``, checked when made), the driver's id that
labels its jobs, the API client (made on first use, closed by ``close``, made again if used
after), the one retry policy for API calls (``gcp_api.call``) and the outage clock: a
status check that fails transiently keeps the last status, and only once the API has been
unreachable for ``api_timeout`` does a poll fail the step. ``copy_records`` puts a job's
records where ``run_job`` looks for them; ``earlier_jobs`` says whether a step may have a
live job of an earlier launch to re-attach to (only then is the service asked).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import ClassVar, Generic, TypeVar

from confpipe.backends import BackendKind, JobRequest
from confpipe.backends.gcp import api as gcp_api
from confpipe.backends.gcp.settings import GcpConf
from confpipe.backends.gcp.staging import CodeStager, worktree
from confpipe.backends.resources import Resources
from confpipe.errors import ConfigError, StepFailed
from confpipe.storage import store_for

__all__ = ["CloudBackend", "copy_records", "earlier_jobs"]

T = TypeVar("T")
C = TypeVar("C")  # the API client


class CloudBackend(Generic[C]):
    """The shared half of ``BatchBackend`` and ``TpuBackend``.

    ``code_folder`` is where the working tree is staged (``{prefix}/.confpipe/code`` when
    ``backend.stage_code``): its git files are archived there once and installed in each job
    with the step's ``pip_extras``; None runs the code baked into ``settings.image``.

    A subclass names its ``service`` (for messages), says who installs a step's
    ``pip_extras`` (``_pip_hint``), checks resources in ``_check_resources`` and makes its
    API client in ``_new_client``.
    """

    kind = BackendKind.GCP
    reattaches = True  # by the labels of its jobs
    service: ClassVar[str]
    where: ClassVar[str]  # where its steps run, as the plan shows it (``batch``)
    _pip_hint: ClassVar[str]  # "so ... can pip install your project with those extras; ..."

    def __init__(self, settings: GcpConf, code_folder: str | None = None) -> None:
        self.settings = settings
        self.max_poll_interval = settings.poll_interval / 2  # wake-ups mostly read a cache
        self.driver = uuid.uuid4().hex[:16]
        self._stager = CodeStager(code_folder, worktree()) if code_folder else None
        self._lock = threading.Lock()
        self._failing: tuple[float, BaseException] | None = None  # since when, last error
        self._client_lock = threading.Lock()
        self._api: C | None = None

    @property
    def _client(self) -> C:
        """The API client, made on first use."""
        with self._client_lock:
            if self._api is None:
                self._api = self._new_client()
            return self._api

    def check(self, step: str, resources: Resources) -> str:
        try:
            self._check_resources(resources)
        except ConfigError as err:
            raise ConfigError(f"step {step!r}: {err}") from None
        _ = self._client  # no credentials: say so now, before anything runs
        if resources.pip_extras and self._stager is None:
            raise ConfigError(
                f"step {step!r}: resources.pip_extras={list(resources.pip_extras)} needs the "
                f"working tree staged (backend.stage_code=true) so {self._pip_hint}"
            )
        return self.where

    def close(self) -> None:
        """Close the API channel, if open; a later call opens another."""
        with self._client_lock:
            api, self._api = self._api, None
        if api is not None:
            gcp_api.close(api)

    def _check_resources(self, resources: Resources) -> None:
        raise NotImplementedError

    def _new_client(self) -> C:
        raise NotImplementedError

    def _call(
        self, step: str, method: Callable[..., T], request: object, cancellable: bool = True
    ) -> T:
        return gcp_api.call(
            self.service, step, method, request, self.settings.api_timeout, cancellable=cancellable
        )

    def _api_down(self, err: BaseException) -> None:
        """A status check failed transiently: the outage started now, unless it already had."""
        with self._lock:
            self._failing = self._failing or (time.monotonic(), err)

    def _api_up(self) -> None:
        with self._lock:
            self._failing = None

    def _check_outage(self, step: str, what: str) -> None:
        """Fail ``step`` once the API has been unreachable for ``api_timeout``."""
        with self._lock:
            failing = self._failing
        timeout = self.settings.api_timeout
        if failing is not None and time.monotonic() - failing[0] > timeout:
            raise StepFailed(
                step,
                f"{self.service} unreachable for {timeout:g}s ({failing[1]}); the "
                f"{what} may still be running",
            )


def copy_records(job_dir: str, records: Iterable[tuple[str, str]]) -> None:
    """Copy each ``(folder, name)`` record that exists to ``job_dir/name`` (run_job reads it)."""
    for folder, name in records:
        blob = store_for(folder).read(f"{folder}/{name}")
        if blob is not None:
            store_for(job_dir).write(f"{job_dir}/{name}", blob.data)


def earlier_jobs(job: JobRequest) -> bool:
    """Whether the step's jobs folder holds a job folder other than ``job``'s.

    ``run_job`` stages each attempt's call in a fresh folder before submitting it, so a step
    whose only job folder is this one has never been submitted by any launch: there is no
    live job to re-attach to, and the list request that would look for one (by labels) is
    saved. A folder that can't be listed counts as "maybe": the service is asked.
    """
    parent, _, own = job.job_dir.rstrip("/").rpartition("/")
    try:
        found = store_for(parent).fs.ls(parent, detail=False)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return any(str(p).rstrip("/").rsplit("/", 1)[-1] != own for p in found)
