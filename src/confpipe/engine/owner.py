"""Who holds a lease: this process as a lease records it, and whether a holder on this same
machine is gone.

A lease names its launch (``owner``) and, so that a launch on the same machine can tell a
dead holder from a live one without waiting out the lease, the holder's process: host name,
pid, the kernel's boot id, the pid namespace and the process's start time. A holder is
*gone* only when all of these prove it: same host name, same boot (a reboot reuses pids),
same pid namespace (a container's pids are not ours to look up), and the pid is absent,
a zombie, or another process (one that started at another time: a reused pid). Anything
not known (a lease written before these fields, a system without ``/proc``) proves
nothing: the holder is treated as alive and its lease goes stale as usual.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from confpipe.engine.status import lease_path
from confpipe.storage import Blob, Store

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True)
class Holder:
    """Who holds a lease and how old its last heartbeat is, by the store's clock."""

    owner: str
    age: float
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def released(self) -> bool:
        """The lease was released (``released_record``): nobody holds it."""
        return self.record.get("released") is True


def dead_local_holder(holder: Holder) -> bool:
    """True when the holder's launch ran on this machine (same host and boot) and its
    process is gone: its lease may be taken over at once. False when unknown."""
    return gone(holder.record)


def read_holder(store: Store, output: str) -> Holder | None:
    """Who holds the step's lease; None if nobody does (none yet, or released)."""
    blob = store.read(lease_path(output))
    if blob is None or is_released(blob.data):
        return None
    return holder_of(store, blob)


def is_released(data: bytes) -> bool:
    """A lease record that says it was released (``released_record``)."""
    try:
        record = json.loads(data)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("released") is True


def holder_of(store: Store, blob: Blob) -> Holder:
    try:
        record = json.loads(blob.data)
        owner = str(record["owner"])
    except (ValueError, KeyError, TypeError):
        record, owner = {}, "unknown"
    age = max(0.0, store.now() - blob.mtime)
    return Holder(owner, age, record if isinstance(record, dict) else {})


def lease_record(owner: str) -> bytes:
    """A lease's content: the launch, a fresh token, and the process (``owner.py``)."""
    record = {"owner": owner, "token": uuid.uuid4().hex, "time": time.time()}
    record.update(process_record())
    return json.dumps(record).encode()


def released_record(owner: str) -> bytes:
    """What a released lease is overwritten with. A lease is never deleted: so a lease that a
    launch *creates* (rather than takes over) is the first ever held on that output, which is
    what lets a new step's RUNNING record be written beside its lease (cache.py, ``early``)."""
    record = {"owner": owner, "token": uuid.uuid4().hex, "time": time.time(), "released": True}
    return json.dumps(record).encode()


def process_record() -> dict[str, Any]:
    """This process as a lease records it (Linux: host, pid, boot, pid namespace, start)."""
    return dict(_identity(os.getpid()))


@cache
def _identity(pid: int) -> tuple[tuple[str, Any], ...]:
    """Fixed for the process (cached per pid: a fork gets its own)."""
    fields: dict[str, Any] = {"host": socket.gethostname(), "pid": pid}
    boot, namespace, start = _read(_BOOT_ID), _pid_namespace(), _start_time(pid)
    if boot and namespace and start is not None:
        fields.update(boot=boot, pidns=namespace, start=start)
    return tuple(fields.items())


def gone(record: dict[str, Any]) -> bool:
    """True only when the lease's process was on this machine, this boot, and is gone."""
    pid, start = record.get("pid"), record.get("start")
    if not isinstance(pid, int) or not isinstance(start, int) or pid <= 0:
        return False
    here = dict(_identity(os.getpid()))
    if "boot" not in here:  # this system can't tell
        return False
    if any(record.get(key) != here[key] for key in ("host", "boot", "pidns")):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process has that pid now
        pass
    stat = _stat(pid)
    if stat is None:  # it exists but /proc hides it (hidepid): can't tell
        return False
    state, started = stat
    return state == "Z" or started != start  # a zombie, or the pid is another process's now


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and start time (clock ticks after boot), None if absent."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text.rpartition(")")[2].split()  # after the command name, which may hold spaces
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _start_time(pid: int) -> int | None:
    stat = _stat(pid)
    return None if stat is None else stat[1]
