"""The records each host of a multi-host job (a Cloud TPU slice) writes, and how the driver
reads them.

A queued resource doesn't say when its hosts' programs start or end, so the hosts say it
themselves, in the job folder:

    starts/N-boot     host N booted: its startup script runs (written by the script)
    starts/N-worker   host N's container runs ``confpipe.backends.vm`` (written by vm)
    exits/N.json      ``{"host": N, "code": C, "stage": S}``, host N's last word: written by
                      vm when its worker ends (stage ``worker``), or by the startup script
                      when the container never got that far (``docker pull``, ``docker run``)

Host 0 works in the job folder itself, host N > 0 in ``host-N/`` (``host_dir``): its
``log.txt`` is where vm, or the startup script on a failure of its own, puts its log. The
driver lists ``exits/`` every poll and ``starts/`` only until every host has started, so a
slice costs two listings per poll interval at most. Light on purpose: vm imports it on every
VM.
"""

from __future__ import annotations

import contextlib
import json
import signal
from dataclasses import dataclass

from confpipe.storage import store_for

__all__ = [
    "BOOT", "EXITS", "STARTS", "WORKER", "Exit", "exit_path", "host_dir", "read_exits",
    "read_starts", "start_path",
]  # fmt: skip

EXITS = "exits"
STARTS = "starts"
BOOT, WORKER = "boot", "worker"  # the two start records: the VM booted, the worker started


@dataclass(frozen=True)
class Exit:
    """How one host ended: its exit code, and at which stage (``worker`` once vm ran)."""

    code: int
    stage: str = WORKER

    def text(self) -> str:
        """``exit code 1``, ``exit code 137 (killed by SIGKILL)``, ``exit code 1 in docker
        pull`` for a host whose container never ran the worker."""
        text = f"exit code {self.code}"
        if self.code > 128:
            with contextlib.suppress(ValueError):
                text += f" (killed by {signal.Signals(self.code - 128).name})"
        if self.stage != WORKER:
            text += f" in {self.stage}"
        return text


def host_dir(job_dir: str, host: int) -> str:
    """Where host ``host`` of a multi-host job keeps its records and log."""
    return job_dir if host == 0 else f"{job_dir}/host-{host}"


def exit_path(job_dir: str, host: int) -> str:
    """The record a host writes last (``{"host", "code", "stage"}``)."""
    return f"{job_dir}/{EXITS}/{host}.json"


def start_path(job_dir: str, host: int, stage: str) -> str:
    """The empty record saying host ``host`` reached ``stage`` (``BOOT`` or ``WORKER``)."""
    return f"{job_dir}/{STARTS}/{host}-{stage}"


def read_exits(job_dir: str) -> dict[int, Exit]:
    """How the hosts ended, as far as they recorded it, first written first (one listing,
    then reads). A record that can't be read yet (half-written, or garbled) is skipped."""
    folder = f"{job_dir}/{EXITS}"
    store = store_for(folder)
    try:
        paths = [f"{folder}/{n}" for n in _names(folder) if n.endswith(".json")]
        blobs = store.read_many(paths)
    except (FileNotFoundError, OSError, ValueError):  # none yet, or a passing store error
        return {}
    records = []
    for blob in blobs:
        if blob is None:
            continue
        try:
            record = json.loads(blob.data.decode(errors="replace"))
            found = (
                int(record["host"]),
                Exit(int(record["code"]), str(record.get("stage", WORKER))),
            )
        except (ValueError, KeyError, TypeError):
            continue
        records.append((blob.mtime, found))
    return dict(found for _, found in sorted(records, key=lambda r: r[0]))


def read_starts(job_dir: str) -> dict[int, set[str]]:
    """The stages each host has reported starting (one listing of ``starts/``)."""
    found: dict[int, set[str]] = {}
    try:
        names = _names(f"{job_dir}/{STARTS}")
    except (FileNotFoundError, OSError, ValueError):
        return found
    for name in names:
        host, _, stage = name.partition("-")
        if host.isdigit() and stage in (BOOT, WORKER):
            found.setdefault(int(host), set()).add(stage)
    return found


def _names(folder: str) -> list[str]:
    store = store_for(folder)
    return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(folder, detail=False)]
