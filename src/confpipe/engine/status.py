"""The step state enum and the records kept beside each output, in ``{output}/.confpipe/``.

status.json   the step's state (RUNNING, SUCCESS, FAILED, DEP_FAILED), who, when, why
info.json     what the step is: fn, config, deps, resources, hash inputs, git, user, argv
              (env values: names only in resources, *** in argv)
result.json   the function's JSON return value, read back with ``load_result(path)``
lease.json    the lease of the launch running the step (see lock.py)
log.txt       what the step printed and logged (stdout, stderr, logging at log_level)
error.txt     a failed step's full traceback, as plain text
unrecorded.txt  why the last attempt's failure could not be recorded (a full disk, say),
              written best-effort in place of FAILED; the next plan says so
jobs/         one folder per submitted job (see backends/)

A record that can't be parsed (empty, truncated, not JSON, the wrong shape) is read as
``Status.unknown``: the step is not done and runs again, writing over it.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any

from confpipe.backends import RECORDS, decode_result
from confpipe.errors import ConfpipeError
from confpipe.redact import redact_argv
from confpipe.storage import Blob, Store, store_for


class StepState(Enum):
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    DEP_FAILED = "DEP_FAILED"


@dataclass(frozen=True)
class Status:
    """One status record. ``error``/``traceback`` for FAILED, ``failed_dep`` for DEP_FAILED."""

    state: StepState
    worker: str
    time: float
    started: float | None = None
    error: str | None = None
    traceback: str | None = None
    failed_dep: str | None = None
    hash: str | None = None  # the step's hash: an output_path given by hand may hold another's
    interrupted: bool | None = None  # FAILED because the launch was interrupted (Ctrl-C)
    waited: float | None = None  # seconds spent waiting for another launch's lease first
    code: str | None = None  # fingerprint of the step function's code when it ran
    lineage: str | None = None  # fingerprint of its code and all its upstream steps' code
    returned: bool | None = None  # FAILED after its function returned: the retry keeps files
    where: str | None = None  # where the attempt ran (thread, local job, batch, tpu...)
    # RUNNING written beside the lease's creation (cache.py, ``early``): an attempt only if
    # its launch got the lease, which its info record then says
    early: bool | None = None
    # set only on a record read back that could not be parsed (``PATH (what was wrong)``; a
    # damaged result.json's under SUCCESS too): the step's state is unknown, so it runs
    # again, writing over that record (by its version)
    unreadable: str | None = None

    def is_failure(self) -> bool:
        """FAILED by the step's own doing: what ``force_run_failed=false`` refuses to retry.
        An interrupted attempt is not one (nothing to fix; a detached job is re-attached)."""
        return self.state is StepState.FAILED and not self.interrupted

    def of(self, step_hash: str) -> Status | None:
        """This status if it is of the step with ``step_hash`` (records without a hash are of
        whichever step owns the folder), else None: that step never ran here."""
        return self if self.hash is None or self.hash == step_hash else None

    def to_json(self) -> bytes:
        record = {k: v for k, v in vars(self).items() if v is not None}
        record["state"] = self.state.value
        return json.dumps(record).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Status:
        """The record in ``data``; ValueError saying what is wrong if it isn't one."""
        if not data.strip():
            raise ValueError("empty")
        try:
            record = json.loads(data)
        except ValueError:
            raise ValueError("not JSON") from None
        if not isinstance(record, dict):
            raise ValueError(f"not a status record: a JSON {type(record).__name__}")
        try:
            record["state"] = StepState(record.get("state"))
        except (ValueError, TypeError):
            raise ValueError(f"no known state: {record.get('state')!r}") from None
        for key in ("worker", "time"):
            if key not in record:
                raise ValueError(f"no {key!r}")
        fields = {}
        for key, value in record.items():
            kinds = _FIELD_TYPES.get(key)
            if kinds is None:  # a newer confpipe's field: ignored
                continue
            # exact types, as JSON decodes them: a bool is no number here (one read a step:
            # this check is on every cached step's path, so it stays this cheap)
            if value is not None and type(value) not in kinds:
                raise ValueError(f"{key!r} is {json.dumps(value)[:40]}")
            fields[key] = value
        return cls(**fields)

    @classmethod
    def unknown(cls, why: str, when: float = 0.0) -> Status:
        """What an unreadable record (last written at ``when``) stands for: the step's state
        is unknown, so it is not done, and its retry is not refused as a failure would be."""
        return cls(StepState.FAILED, "", when, interrupted=True, unreadable=why)


_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "state": (StepState,), "worker": (str,), "time": _NUMBER, "started": _NUMBER,
    "error": (str,), "traceback": (str,), "failed_dep": (str,), "hash": (str,),
    "interrupted": (bool,), "returned": (bool,), "waited": _NUMBER, "code": (str,),
    "lineage": (str,), "where": (str,), "early": (bool,),
}  # fmt: skip


def parse_status(blob: Blob, path: str) -> Status:
    """The status record in ``blob`` (read from ``path``); ``Status.unknown`` if it can't be
    read, saying which file and what was wrong: ``.../status.json (not JSON)``."""
    try:
        return Status.from_json(blob.data)
    except ValueError as err:
        return Status.unknown(f"{path} ({err})", blob.mtime)


def status_path(output: str) -> str:
    return f"{output}/{RECORDS}/status.json"


def info_path(output: str) -> str:
    return f"{output}/{RECORDS}/info.json"


def result_path(output: str) -> str:
    return f"{output}/{RECORDS}/result.json"


def lease_path(output: str) -> str:
    return f"{output}/{RECORDS}/lease.json"


def jobs_dir(output: str) -> str:
    return f"{output}/{RECORDS}/jobs"


def log_path(output: str) -> str:
    """The step's log: stdout, stderr and logging records of its thread, or its job's log."""
    return f"{output}/{RECORDS}/log.txt"


def error_path(output: str) -> str:
    """A failed step's full traceback as plain text (also in status.json's ``traceback``)."""
    return f"{output}/{RECORDS}/error.txt"


def unrecorded_path(output: str) -> str:
    """Why a failure could not be recorded (see ``write_cause``), when it could not."""
    return f"{output}/{RECORDS}/unrecorded.txt"


def write_cause(err: BaseException, path: str) -> str:
    """``no space left on device while writing PATH``: why writing ``path`` failed."""
    if isinstance(err, OSError) and err.errno:
        what = os.strerror(err.errno).lower()
    else:
        what = f"{type(err).__name__}: {err}"
    return f"{what} while writing {path}"


def newest_job_dir(output: str) -> str | None:
    """The folder of the step's newest job (job ids sort by time), or None: it has none."""
    store = store_for(output)
    try:
        folders = sorted(str(p).rstrip("/") for p in store.fs.ls(jobs_dir(output), detail=False))
    except (OSError, ValueError):  # no job folder yet, or a passing store error
        return None
    if not folders:
        return None
    newest = folders[-1]
    if "://" in output and "://" not in newest:  # fsspec lists gs:// paths bare
        newest = f"{output.split('://', 1)[0]}://{newest}"
    return newest


def clear_output(store: Store, output: str) -> int:
    """Delete everything in ``output`` but its records folder (one listing; symlinks are
    removed, never followed); how many entries went. A missing folder is an empty one."""
    if "://" not in output:
        return _clear_local(output)
    try:
        entries = store.fs.ls(output, detail=False, refresh=True)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    gone = 0
    for entry in entries:
        path = str(entry).rstrip("/")
        if path.rsplit("/", 1)[-1] != RECORDS and path != output.split("://", 1)[-1].rstrip("/"):
            store.fs.rm(path, recursive=True)
            gone += 1
    return gone


def _clear_local(output: str) -> int:
    import shutil  # only a retry pays for it

    try:
        entries = list(os.scandir(output))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        if entry.name == RECORDS:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    return len([e for e in entries if e.name != RECORDS])


def read_status_blobs(store: Store, outputs: list[str]) -> list[tuple[Status | None, str | None]]:
    """``read_status_blob`` of each output, read concurrently where the store can."""
    paths = [status_path(o) for o in outputs]
    blobs = store.read_many(paths)
    return [
        (None, None) if b is None else (parse_status(b, p), b.version)
        for b, p in zip(blobs, paths, strict=True)
    ]


def read_status(store: Store, output: str) -> Status | None:
    return read_status_blob(store, output)[0]


def read_status_blob(store: Store, output: str) -> tuple[Status | None, str | None]:
    """The status and its version (None, None where the step never started); an unreadable
    record is ``Status.unknown``, with the version to write over it."""
    path = status_path(output)
    blob = store.read(path)
    return (None, None) if blob is None else (parse_status(blob, path), blob.version)


def swap_status(store: Store, output: str, status: Status, version: str | None) -> str | None:
    """Write ``status`` only over the record of ``version`` (None: only where there is none);
    its new version, or None when another launch wrote the record since it was read."""
    path, data = status_path(output), status.to_json()
    return store.create(path, data) if version is None else store.replace(path, data, version)


def write_json(store: Store, path: str, record: dict[str, Any]) -> None:
    store.write(path, json.dumps(record, default=str).encode())


def load_result(path: str) -> Any:
    """The value a succeeded step returned, given its output path; a ConfpipeError naming
    the file if there is none or it can't be read (damaged: the step must run again)."""
    blob = store_for(path).read(result_path(path))
    if blob is None:
        raise ConfpipeError(f"no result record under {path!r}: has that step succeeded?")
    try:
        return decode_result(blob.data)
    except ValueError as err:
        raise ConfpipeError(
            f"unreadable result record {result_path(path)} ({bad_json(err)}): remove "
            f"{status_path(path)} to run that step again"
        ) from None


def result_problem(data: bytes) -> str | None:
    """What is wrong with a result record's bytes (``not JSON``...), or None: it is whole."""
    try:
        decode_result(data)
    except ValueError as err:
        return bad_json(err)
    return None


def bad_json(err: ValueError) -> str:
    """What is wrong with a record, in a few words: ``not JSON`` or the decoder's reason."""
    return "not JSON" if isinstance(err, json.JSONDecodeError | UnicodeDecodeError) else str(err)


@cache
def launch_id() -> str:
    """Who is running: ``user@host:pid:random``, unique per launch."""
    return f"{user()}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@cache
def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


@cache
def git_commit() -> str | None:
    """The current git commit (with ``-dirty`` for uncommitted changes), if in a checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def launch_info() -> dict[str, Any]:
    """The per-launch part of every info record."""
    return {
        "git_commit": git_commit(),
        "user": user(),
        "host": socket.gethostname(),
        "argv": redact_argv(sys.argv),  # env values given on it hidden
        "launch": launch_id(),
        "time": time.time(),
    }
