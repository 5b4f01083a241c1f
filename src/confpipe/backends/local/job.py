"""One local job's handle (``Job``): its request, its process and what it holds while it runs.

``status`` is replaced whole, so reading it needs no lock; the other fields change under
the backend's lock. ``record_error`` writes a job's ``error.json`` when the backend, not the
worker, ended it (killed for its memory).
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from dataclasses import dataclass, field

from confpipe.backends import ERROR, LOG, JobRequest, JobState, JobStatus
from confpipe.backends.local.tree import ProcessTree
from confpipe.storage import loss_level, store_for

logger = logging.getLogger(__name__)
WAITING = "waiting for the cpu/memory/GPU budget"


@dataclass(eq=False)
class Job:
    """The handle of one local job; ``status`` is replaced whole, so reading it needs no lock."""

    request: JobRequest
    job_dir: str
    status: JobStatus = field(default_factory=lambda: JobStatus(JobState.QUEUED, WAITING))
    log: str = ""  # where the worker's output goes, once started: its folder's, or a spool
    proc: subprocess.Popen[bytes] | None = None
    tree: ProcessTree | None = None
    devices: tuple[str, ...] = ()  # the GPUs it holds while it runs
    exited: bool = False  # its worker has exited (its tree may still be stopping)
    over: str = ""  # why it was killed for its memory (exceeded its memory: ...)
    cancelled: bool = False
    uploaded: bool = False  # a spooled log is in the job folder now
    done: threading.Event = field(default_factory=threading.Event)

    def status_for(self, state: JobState, detail: str = "") -> JobStatus:
        """A status of this job, naming where its log is now."""
        spooled = self.remote and self.log and not self.uploaded
        where = self.log if spooled else f"{self.request.job_dir.rstrip('/')}/{LOG}"
        return JobStatus(state, detail, log=where)

    @property
    def cpu(self) -> float:
        return self.request.resources.cpu

    @property
    def remote(self) -> bool:
        return "://" in self.job_dir

    @property
    def memory(self) -> int:
        return self.request.resources.memory or 0

    @property
    def gpus(self) -> int:
        gpu = self.request.resources.gpu
        return gpu.count if gpu is not None else 0


def record_error(job: Job, kind: str, message: str) -> None:
    """Record why the backend killed the job (its worker could not), unless it did."""
    record = {"type": kind, "message": message, "traceback": ""}
    path = f"{job.job_dir}/{ERROR}"
    try:
        store_for(job.job_dir).create(path, json.dumps(record, indent=1).encode())
    except Exception as err:  # the status still says why
        logger.log(loss_level(err), "step %r: could not write %s: %s", job.request.step, path, err)
