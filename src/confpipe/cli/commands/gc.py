"""``confpipe gc PREFIX``: what could be deleted under a prefix, with sizes; deleted on ``--yes``.

What could go, among the folders right under PREFIX:

- a step folder no kept manifest lists (``unreferenced``): the manifests kept are the newest
  ``--keep N`` (default 10) and, with ``--keep-days D``, every one newer than D days; a folder
  named like a step (``NAME-HASH12``) without a status record counts as a step folder; a
  prefix without any manifest (steps run from Python) has none of these;
- a FAILED or DEP_FAILED step folder (a re-run makes it anew);
- the job folders of a finished step (``.confpipe/jobs/``: the staged call, the job's result,
  error and log); the step's own records, and its ``log.txt``, stay.

Never touched: a step whose lease is live (a heartbeat younger than ``--lease-timeout``,
default ``lock.lease_timeout``'s 90 s) or whose status is RUNNING, ``manifests/``,
``sweeps/``, and any folder that is not a step's. Without ``--yes`` nothing is deleted; with
it, the list is made the same way and each entry is checked again just before it goes.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from confpipe.cli.commands.args import Request
from confpipe.engine.lock import LockOptions
from confpipe.engine.owner import is_released
from confpipe.engine.status import (
    Status,
    StepState,
    jobs_dir,
    lease_path,
    parse_status,
    read_status,
    status_path,
)
from confpipe.errors import ConfigError, ConfpipeError
from confpipe.storage import Blob, Store, local_path, split_protocol, store_for

__all__ = ["DEFAULT_KEEP", "Candidate", "Collection", "Kind", "collect", "delete", "run", "size"]

DEFAULT_KEEP = 10  # manifests kept when neither --keep nor --keep-days is given
_STEP_FOLDER = re.compile(r".+-[0-9a-f]{12}")  # {name}-{hash}: a step's default folder
_NEVER = ("manifests", "sweeps")  # the launches' own records


class Kind(Enum):
    """Why a folder could go; the value is what the listing says."""

    UNREFERENCED = "unreferenced"  # no kept manifest lists it
    FAILED = "failed"
    DEP_FAILED = "dep failed"
    JOBS = "job folders"  # of a finished step


@dataclass(frozen=True)
class Candidate:
    """A folder that could go: why, its size in bytes, and the step folder it belongs to."""

    path: str
    kind: Kind
    size: int
    step: str
    written: float | None = None  # its status record's time when listed: changed since, kept


@dataclass(frozen=True)
class Collection:
    """What ``collect`` found: the candidates, the step folders left alone because they are
    live (folder -> why), and the manifests kept (of how many)."""

    candidates: list[Candidate]
    live: dict[str, str]
    kept: int
    manifests: int


def run(request: Request) -> int:
    prefix = _normal(request.steps[0])
    lease_timeout = request.lease_timeout or LockOptions().lease_timeout
    found = collect(prefix, keep=request.keep, keep_days=request.keep_days,
                    lease_timeout=lease_timeout)  # fmt: skip
    for folder, why in found.live.items():
        print(f"{'kept':>10}  {why:<14}  {folder}")
    for c in found.candidates:
        print(f"{size(c.size):>10}  {c.kind.value:<14}  {c.path}")
    total = sum(c.size for c in found.candidates)
    kept = f"{found.kept} of {found.manifests} manifests kept"
    if not found.manifests:
        kept = "no manifests: which outputs are in use is unknown, so none is listed as unused"
    if not found.candidates:
        print(f"nothing to delete under {prefix} ({kept})")
        return 0
    print(f"{size(total):>10}  total, {len(found.candidates)} folders ({kept})")
    if not request.yes:
        print("nothing deleted: run again with --yes to delete these")
        return 0
    deleted, skipped = delete(found.candidates, lease_timeout)
    for c, why in skipped:
        print(f"not deleted ({why}): {c.path}")
    freed = sum(c.size for c in deleted)
    print(f"deleted {len(deleted)} folders, {size(freed)} freed")
    return 0


def collect(
    prefix: str, *, keep: int | None = None, keep_days: float | None = None,
    lease_timeout: float = LockOptions().lease_timeout,
) -> Collection:  # fmt: skip
    """Everything under ``prefix`` that could go, and the step folders that are live."""
    store = store_for(prefix)
    if not _exists(store, prefix):
        raise ConfigError(f"gc: {prefix} does not exist; give the prefix the runs wrote to")
    manifests = _manifests(store, prefix)
    kept = _kept(manifests, keep, keep_days)
    referenced, since = _referenced(store, kept or manifests[:1], kept)
    folders = [f for f in _folders(store, prefix) if _base(f) not in _NEVER]
    statuses = store.read_many([status_path(f) for f in folders])
    leases = store.read_many([lease_path(f) for f in folders])
    now = store.now()
    # an output written since the oldest kept manifest (``since``) may be a launch's still in
    # progress (its manifest is written when it ends) or a cached one's (which writes none):
    # in use
    candidates: list[Candidate] = []
    live: dict[str, str] = {}
    for folder, status_blob, lease in zip(folders, statuses, leases, strict=True):
        status = parse_status(status_blob, status_path(folder)) if status_blob else None
        why = _live(status, lease, now, lease_timeout)
        if why is not None:
            live[folder] = why
            continue
        # no manifest at all (steps run from Python, or manifests moved away): which outputs
        # are in use is unknown, so none counts as unreferenced
        recent = status is not None and status.time >= since
        in_use = not manifests or recent or _bare(folder) in referenced
        kind, path = _kind(store, folder, status, in_use)
        if kind is not None:
            written = None if status is None else status.time
            candidates.append(Candidate(path, kind, _du(store, path), folder, written))
    return Collection(candidates, live, len(kept), len(manifests))


def delete(
    candidates: Sequence[Candidate], lease_timeout: float
) -> tuple[list[Candidate], list[tuple[Candidate, str]]]:
    """Delete each candidate whose step is still not live; (deleted, skipped with why)."""
    deleted: list[Candidate] = []
    skipped: list[tuple[Candidate, str]] = []
    for c in candidates:
        store = store_for(c.path)
        lease = store.read(lease_path(c.step))
        status = read_status(store, c.step) if _exists(store, status_path(c.step)) else None
        why = _live(status, lease, store.now(), lease_timeout)
        if why is None and (None if status is None else status.time) != c.written:
            why = "its status changed since it was listed"  # re-run meanwhile, say
        if why is not None:
            skipped.append((c, why))
            continue
        store.fs.rm(c.path, recursive=True)
        deleted.append(c)
    return deleted, skipped


def size(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _live(status: Status | None, lease: Blob | None, now: float, timeout: float) -> str | None:
    """Why a step folder must be left alone (a live lease, RUNNING), or None."""
    if lease is not None and now - lease.mtime < timeout and not is_released(lease.data):
        return "live lease"
    if status is not None and status.state is StepState.RUNNING:
        return "RUNNING"
    return None


def _kind(
    store: Store, folder: str, status: Status | None, referenced: bool
) -> tuple[Kind | None, str]:
    """Why the step folder (or its job folders) could go, and what goes."""
    if status is not None and status.interrupted:  # not a failure: a detached job may still
        return None, folder  # run in it, and a restarted driver re-attaches to it
    if status is not None and status.state is StepState.FAILED:
        return Kind.FAILED, folder
    if status is not None and status.state is StepState.DEP_FAILED:
        return Kind.DEP_FAILED, folder
    if not referenced and (status is not None or _STEP_FOLDER.fullmatch(_base(folder))):
        return Kind.UNREFERENCED, folder
    jobs = jobs_dir(folder)
    if status is not None and _exists(store, jobs):
        return Kind.JOBS, jobs
    return None, folder


def _manifests(store: Store, prefix: str) -> list[str]:
    """The manifests' URLs, newest first (their names start with a UTC time stamp)."""
    try:
        names = store.fs.ls(f"{prefix}/manifests", detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = [_url(prefix, str(n)) for n in names if str(n).endswith(".json")]
    return sorted(found, key=_base, reverse=True)


def _kept(manifests: list[str], keep: int | None, keep_days: float | None) -> list[str]:
    if keep is None and keep_days is None:
        keep = DEFAULT_KEEP
    kept = set(manifests[: keep or 0])
    if keep_days is not None:
        cutoff = time.time() - keep_days * 86400
        kept |= {m for m in manifests if _stamp(m) >= cutoff}
    return [m for m in manifests if m in kept]


def _stamp(manifest: str) -> float:
    """When a manifest was written, from its name (``20261206-140312-...``); 0 if unnamed so."""
    try:
        return calendar.timegm(time.strptime(_base(manifest)[:15], "%Y%m%d-%H%M%S"))
    except ValueError:
        return 0.0


def _referenced(store: Store, read: list[str], kept: list[str]) -> tuple[set[str], float]:
    """The outputs the ``kept`` manifests list (without protocol or trailing slash), and when
    the oldest of the ``read`` ones (the kept ones, or the newest) was written."""
    found: set[str] = set()
    since = float("inf") if read else 0.0
    for path, blob in zip(read, store.read_many(read), strict=True):
        try:
            record: dict[str, Any] = json.loads(blob.data) if blob is not None else {}
            if path in kept:
                found |= {_bare(str(step["output"])) for step in record.get("steps", [])}
            since = min(since, float(record.get("time") or _stamp(path)))
        except (ValueError, TypeError, KeyError) as err:  # can't tell what it keeps: stop
            raise ConfpipeError(
                f"gc: manifest {path} is unreadable ({err}), so what it keeps is unknown; "
                "move it out of manifests/ and run gc again"
            ) from err
    return found, since


def _folders(store: Store, prefix: str) -> list[str]:
    entries = store.fs.ls(prefix, detail=True)
    return sorted(_url(prefix, str(e["name"])) for e in entries if e.get("type") == "directory")


def _du(store: Store, path: str) -> int:
    try:
        return int(store.fs.du(path, total=True))
    except (FileNotFoundError, OSError):
        return 0


def _exists(store: Store, path: str) -> bool:
    try:
        return bool(store.fs.exists(path))
    except OSError:
        return False


def _normal(prefix: str) -> str:
    """An absolute path for a local prefix, the URL otherwise; no trailing slash."""
    return local_path(prefix).rstrip("/") or "/"


def _url(prefix: str, listed: str) -> str:
    """A listed path as a URL of the prefix's store (fsspec lists gs:// paths bare)."""
    protocol, _ = split_protocol(prefix)
    listed = listed.rstrip("/")
    return listed if protocol is None or "://" in listed else f"{protocol}://{listed}"


def _bare(path: str) -> str:
    return split_protocol(path)[1].rstrip("/")


def _base(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
