"""``python -m confpipe.worker <job folder URL>``: run a staged call and record its outcome.

Loads ``call.pkl`` (the cloudpickled ``(fn, kwargs, options)``), runs ``fn(**kwargs)`` and
writes ``result.json`` or ``error.json`` (type, message, traceback) into the job folder,
atomically, through the folder's Store; a bucket that does not answer is tried again
with backoff for up to ``patience.JOB_PATIENCE`` seconds (each try says so in the log),
so no result is lost to a bucket that is away for a while. A ``call.pkl`` whose sha256 is
not the one in ``CONFPIPE_CALL_SHA256`` (set by the driver in the job's spec) is never
unpickled: the job fails with an ``IntegrityError`` record. The root logger prints records from
``options["log_level"]`` up (INFO by default) to stderr, which is the job's log. Exit codes:
0 the call returned, 1 it raised (or its value can't be a result record:
``confpipe.backends.results``), 2 usage error. Kept light:
every millisecond of import is paid by every job.

A local job's worker (``CONFPIPE_DRIVER_PID`` set) dies with its driver: killed with -9,
the driver can't cancel it, and a re-run would take the step over while it still ran.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TypeVar

import cloudpickle

from confpipe.backends import (
    CALL,
    CALL_DIGEST_VAR,
    DRIVER_VAR,
    ERROR,
    INTEGRITY,
    LOG_DATEFMT,
    LOG_FORMAT,
    RESULT,
    encode_result,
    integrity_error,
)
from confpipe.backends.patience import as_a_job
from confpipe.errors import ConfpipeError, StepFailed
from confpipe.storage import Store, store_for

T = TypeVar("T")
USAGE = "usage: python -m confpipe.worker <job folder URL>"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    job_dir = args[0].rstrip("/")
    driver = os.environ.pop(DRIVER_VAR, None)  # popped: the job's own subprocesses don't watch
    expected = os.environ.pop(CALL_DIGEST_VAR, "")  # nor do they inherit the call's digest
    if driver:
        threading.Thread(
            target=_watch, args=(int(driver),), name="confpipe-driver", daemon=True
        ).start()
    try:
        store = store_for(job_dir)
        blob = _patiently(f"reading {CALL}", lambda: store.read(f"{job_dir}/{CALL}"))
    except (ConfpipeError, OSError) as err:
        print(f"confpipe.worker: can't read {job_dir}/{CALL}: {err}", file=sys.stderr)
        return 2
    if blob is None:
        print(f"confpipe.worker: no {CALL} in {job_dir!r}: is it a job folder?", file=sys.stderr)
        return 2
    wrong = integrity_error(CALL, blob.data, expected) if expected else None
    if wrong:  # never unpickled: unpickling runs code
        return _fail(store, job_dir, INTEGRITY, wrong, "")
    try:
        fn, kwargs, *rest = cloudpickle.loads(blob.data)
        _log_records(str((rest[0] if rest else {}).get("log_level", "INFO")))
        value = fn(**kwargs)
    except BaseException as err:  # the job's failure, whatever it is, goes to the record
        return _fail(store, job_dir, type(err).__name__, str(err), traceback.format_exc())
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
    try:
        data = encode_result(name, value)
    except StepFailed as err:  # nothing is recorded as done: the output folder is intact
        return _fail(store, job_dir, "TypeError", err.message, "", returned=True)
    _flush()
    _write(store, f"{job_dir}/{RESULT}", data)
    return 0


def _log_records(level: str) -> None:
    """The step's logging records from ``level`` up go to stderr (its log), formatted as a
    thread step's are; a level this Python doesn't know means INFO."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
    root = logging.getLogger()
    root.addHandler(handler)
    number = logging.getLevelName(level.upper())
    root.setLevel(number if isinstance(number, int) else logging.INFO)


def _fail(
    store: Store, job_dir: str, kind: str, message: str, trace: str, returned: bool = False
) -> int:
    """Print the error to the log and record it (``returned``: the call returned, with a
    value no result record can hold); the exit code of a failed call."""
    print(trace or f"{kind}: {message}", file=sys.stderr, end="" if trace else "\n")
    _flush()
    record: dict[str, object] = {"type": kind, "message": message, "traceback": trace}
    if returned:
        record["returned"] = True
    _write(store, f"{job_dir}/{ERROR}", json.dumps(record, indent=1).encode())
    return 1


def _write(store: Store, path: str, data: bytes) -> None:
    """Write a record, trying again while the bucket does not answer (``JOB_PATIENCE``)."""
    _patiently(f"writing {path.rsplit('/', 1)[-1]}", lambda: store.write(path, data))


def _patiently(what: str, op: Callable[[], T]) -> T:
    return as_a_job(what, op, _say)


def _say(line: str) -> None:
    """A line in the job's log (stderr)."""
    print(f"confpipe.worker: {line}", file=sys.stderr)
    _flush()


def _watch(driver: int, every: float = 0.5, grace: float = 3.0) -> None:
    """Once the driver is gone (this process is reparented), stop the job's process group as
    the driver's cancel would: SIGTERM, then SIGKILL after ``grace`` seconds. A process of
    its own session does it: this one dies of the SIGTERM before it could send the SIGKILL."""
    while os.getppid() == driver:
        time.sleep(every)
    import subprocess  # only now: every job pays for the worker's imports

    print(f"confpipe.worker: driver {driver} is gone; stopping the job", file=sys.stderr)
    _flush()
    stop = (
        "import os, signal, sys, time\n"
        "group = int(sys.argv[1])\n"
        "os.killpg(group, signal.SIGTERM)\n"
        f"time.sleep({grace})\n"
        "try:\n"
        "    os.killpg(group, signal.SIGKILL)\n"
        "except ProcessLookupError:\n"
        "    pass\n"
    )
    subprocess.Popen(
        [sys.executable, "-c", stop, str(os.getpgrp())],
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken by the job
            stream.flush()


if __name__ == "__main__":
    sys.exit(main())
