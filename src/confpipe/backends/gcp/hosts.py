"""The records each host of a multi-host job (a Cloud TPU slice) writes, and how the driver
reads them.

A queued resource doesn't say when its hosts' programs start or end, so the hosts say it
themselves, in the job folder:

    starts/N-boot-M   host N booted: its startup script runs (written by the script); M is
                      how many VMs the slice has, as its metadata says (0: unknown)
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
    "BOOT", "EXITS", "STARTS", "WORKER", "Exit", "Starts", "exit_path", "host_dir",
    "never_started", "read_exit", "read_exits", "read_starts", "start_path",
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


@dataclass
class Starts:
    """What ``starts/`` says: the stages each host reached, and the slice's VM count as the
    hosts' metadata gives it (None: no host said)."""

    stages: dict[int, set[str]]
    hosts: int | None = None


def read_exit(job_dir: str, host: int = 0) -> Exit | None:
    """How host ``host`` ended, if it recorded it yet (one read); None if not, or if its
    record can't be read (a passing store error: the next read tries again)."""
    try:
        blob = store_for(job_dir).read(exit_path(job_dir, host))
    except (OSError, ValueError):
        return None
    return None if blob is None else _exit(blob.data)


def parse_exit(data: bytes) -> Exit | None:
    """An exit record's content, None if it is not one (half-written, garbled)."""
    return _exit(data)


def _exit(data: bytes) -> Exit | None:
    try:
        record = json.loads(data.decode(errors="replace"))
        return Exit(int(record["code"]), str(record.get("stage", WORKER)))
    except (ValueError, KeyError, TypeError):
        return None


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


def read_starts(job_dir: str) -> Starts:
    """The stages each host has reported starting (one listing of ``starts/``)."""
    found = Starts({})
    try:
        names = _names(f"{job_dir}/{STARTS}")
    except (FileNotFoundError, OSError, ValueError):
        return found
    for name in names:
        host, _, rest = name.partition("-")
        stage, _, count = rest.partition("-")
        if host.isdigit() and stage in (BOOT, WORKER):
            found.stages.setdefault(int(host), set()).add(stage)
            if count.isdigit() and int(count) > 0:
                found.hosts = int(count)
    return found


def never_started(missing: list[int], booted: list[int], of: int, timeout: float) -> str:
    """Why a slice failed its start deadline: which of its ``of`` hosts never reported, and
    which booted (``booted``) but never started the worker."""
    silent = [h for h in missing if h not in booted]
    why = []
    if silent:
        why.append(f"{_hosts(silent, of)} never reported (did the VM boot?)")
    if booted:
        why.append(
            f"{_hosts(booted, of)} booted but never started the worker (is docker pull of "
            "backend.image still running?)"
        )
    return (
        f"{'; '.join(why)} within {_duration(timeout)} of the slice becoming ACTIVE "
        "(backend.tpu_start_timeout)"
    )


def _hosts(hosts: list[int], of: int) -> str:
    """``host 3 of 4``, ``hosts 1, 3 of 4``; ``the TPU host`` of a single-host slice."""
    if of == 1:
        return "the TPU host"
    return f"host{'s' if len(hosts) > 1 else ''} {', '.join(map(str, hosts))} of {of}"


def _duration(seconds: float) -> str:
    """``10m``, ``90s``, ``1h30m``: a timeout as the settings write it."""
    whole = round(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((h, "h"), (m, "m"), (s, "s")) if n)


def _names(folder: str) -> list[str]:
    store = store_for(folder)
    return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(folder, detail=False)]
