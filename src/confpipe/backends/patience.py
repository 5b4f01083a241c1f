"""A job's records written and read through a bucket that is away for a while.

A store gives up on a request within its retry window (``CONFPIPE_STORAGE_RETRY_WINDOW``,
30 s by default: ``StoreUnreachable``). A job's records are worth more patience than one
request: a result that hours of work produced, or the driver's read of it. ``patiently``
tries again with backoff (``FIRST`` doubling up to ``MOST`` seconds) as long as its
``wait`` allows: the worker and ``vm`` for ``JOB_PATIENCE`` seconds (a paid machine idles
at most that long for a bucket that stays gone), the driver for as long as the step is
its own (its cancel scope: a lost lease or Ctrl-C ends the wait). Only errors of reaching
the store are retried (``ConnectionError``, ``TimeoutError``); anything else is raised.

Light: imported by the worker, which every job pays for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["FIRST", "JOB_PATIENCE", "MOST", "TRANSIENT", "as_a_job", "for_seconds", "patiently"]

T = TypeVar("T")
FIRST, MOST = 0.5, 10.0  # seconds before the first try again, and at most between tries
JOB_PATIENCE = 600.0  # seconds a job keeps trying to write its records
TRANSIENT = (ConnectionError, TimeoutError)  # StoreUnreachable is a ConnectionError


def patiently(
    op: Callable[[], T],
    wait: Callable[[float], bool],
    tell: Callable[[BaseException, float], None] | None = None,
) -> T:
    """``op()``, tried again after a transient store error once ``wait(delay)`` returns
    False (it waits ``delay`` seconds, and returns True to give up: the error is raised);
    ``tell(error, delay)`` hears of each retry."""
    delay = FIRST
    while True:
        try:
            return op()
        except TRANSIENT as err:
            if tell is not None:
                tell(err, delay)
            if wait(delay):
                raise
        delay = min(delay * 2, MOST)


def as_a_job(what: str, op: Callable[[], T], say: Callable[[str], None]) -> T:
    """``op()`` as a job does it (the worker, ``vm``): tried again for up to
    ``JOB_PATIENCE`` seconds, each retry said as one line (``WHAT: ERROR; trying again in
    Ns``) through ``say``."""

    def tell(err: BaseException, delay: float) -> None:
        say(f"{what}: {err}; trying again in {delay:g}s")

    return patiently(op, for_seconds(JOB_PATIENCE), tell)


def for_seconds(seconds: float) -> Callable[[float], bool]:
    """A ``wait`` for ``patiently`` that sleeps, and gives up once ``seconds`` from now
    would pass during the sleep."""
    deadline = time.monotonic() + seconds

    def wait(delay: float) -> bool:
        if time.monotonic() + delay > deadline:
            return True
        time.sleep(delay)
        return False

    return wait
