"""Record writes that need not hold a step up: run beside it, waited for where they matter.

On a store with round trips (gs://) each write costs a round trip, and a chain of steps pays
every one that sits between a step's start and its dependant's. Three writes needn't sit
there: a new step's RUNNING record (created while its lease is; ``Records.early``), its
info record (written while its function runs, waited for before its commit) and the
release of its lease after the commit (its dependants may start meanwhile; ``flush`` waits
for it before a run returns, so no lease of a finished step outlives its run).

The workers are daemon threads, as the runner's are (``concurrent.futures`` joins its
threads at interpreter exit): a write the store never answers can't keep a stopped launch
from exiting. Enough of them that a run's steps never queue behind each other's writes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Any

__all__ = ["WORKERS", "flush", "pays_round_trips", "submit"]

WORKERS = 64  # each blocks on one store request at a time: a run's 32 steps, three writes each

_work: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = (
    queue.SimpleQueue()
)
_pending: set[Future[Any]] = set()
_lock = threading.Lock()
_started = 0  # workers started (on demand: a local run starts none)
_idle = 0  # workers waiting for work
_queued = 0  # work not yet taken by a worker


def pays_round_trips(path: str) -> bool:
    """Whether ``path`` is on a store whose every write is a round trip (gs://, and
    memory://, which takes the same path in tests): there, writes go beside; on a local
    folder they are cheaper done at once."""
    return "://" in path


def submit(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run ``fn(*args)`` on a worker thread; ``flush`` waits for it."""
    global _started, _queued
    future: Future[Any] = Future()
    with _lock:
        _pending.add(future)
        _queued += 1
        if _queued > _idle and _started < WORKERS:
            _started += 1
            threading.Thread(target=_worker, name="confpipe-beside", daemon=True).start()
    _work.put((future, fn, args))
    return future


def _worker() -> None:
    global _idle, _queued
    while True:
        with _lock:
            _idle += 1
        future, fn, args = _work.get()
        with _lock:
            _idle -= 1
            _queued -= 1
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn(*args))
            except BaseException as err:
                future.set_exception(err)
        with _lock:
            _pending.discard(future)


def flush(timeout: float | None = None) -> None:
    """Wait for everything submitted so far (at most ``timeout`` seconds)."""
    with _lock:
        pending = list(_pending)
    if pending:
        wait(pending, timeout)
