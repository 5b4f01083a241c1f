"""A gs:// server that is down: bounded waits, fast failures, one line instead of tracebacks.

gcsfs retries a failing request by itself (6 tries, backing off 1, 2, 4, 8 and 16 s; each
try waits up to the store's ``timeout``), logs the request it gives up on at ERROR with a
full traceback, and raises. For a store that is down, that is half a minute per request
and a traceback each, times every record a run writes. Here:

- ``GcsStore`` bounds each of its primitives by ``retry_window`` seconds (``bounded``):
  past it, ``StoreUnreachable`` (a ``ConnectionError``) says since when the server is silent.
- Each request of the store's filesystem (``ReachingGCSFileSystem``: the records, and the
  outputs steps write through ``store.fs``) is tried only as often as gcsfs's backoff fits
  in the window (``tries_within``: 5 tries for 30 s).
- ``Reach`` remembers that the server stopped answering. Until it answers again, every
  request first asks it once, with a quick probe (at most one at a time, one a second),
  and fails at once if it is still silent: a run whose store is gone ends within about
  one retry window, each step with its one-line error, instead of one window per record.
- gcsfs's tracebacks are lowered to DEBUG (``hydra.verbose=gcsfs`` or DEBUG logging shows
  them): the error gcsfs raises is what the run reports.

Imported with ``gcs`` only (gcsfs and aiohttp are heavy).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import ClientConnectionError, ClientTimeout
from gcsfs.core import GCSFileSystem  # type: ignore[import-untyped, unused-ignore]
from gcsfs.retry import retry_request  # type: ignore[import-untyped, unused-ignore]

from confpipe.storage.base import StoreUnreachable

T = TypeVar("T")
PROBE_EVERY = 1.0  # seconds from a probe of a silent server to the next
PROBE_TIMEOUT = 3.0  # seconds a probe waits for any answer


class _TracebacksToDebug(logging.Filter):
    """gcsfs logs a request it gives up on at ERROR with its traceback, then raises it: the
    raised error is what a run reports (one line); the traceback is for DEBUG logging."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def quiet_gcsfs_tracebacks() -> None:
    """Install the filter on the ``gcsfs`` logger (once)."""
    gcsfs_log = logging.getLogger("gcsfs")
    if not any(isinstance(f, _TracebacksToDebug) for f in gcsfs_log.filters):
        gcsfs_log.addFilter(_TracebacksToDebug())


class Reach:
    """Whether the server answers, as the store's requests found it (used on gcsfs's loop)."""

    def __init__(self, retry_window: float) -> None:
        self.retry_window = retry_window
        self.silent_since: float | None = None  # when a request that got no answer began
        self.bucket = ""  # the last bucket used: what the error names
        self._probed = 0.0
        self._probing = False
        self._waiting: set[asyncio.Future[None]] = set()  # bounded calls under way

    def lost(self, since: float) -> None:
        """A request begun at monotonic time ``since`` got no answer (after its retries):
        the primitives under way give up now too, the server is known to be silent."""
        if self.silent_since is None or since < self.silent_since:
            self.silent_since = since
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_result(None)

    def error(self, location: str) -> StoreUnreachable:
        silent = 0.0 if self.silent_since is None else time.monotonic() - self.silent_since
        return StoreUnreachable(
            f"gs://{self.bucket}: the storage server ({location}) has not answered for "
            f"{silent:.0f}s (the gs:// store retries for at most {self.retry_window:g}s)"
        )

    async def check(self, fs: GCSFileSystem) -> None:
        """Return if the server answers (or is not known to be silent); else raise at once."""
        if self.silent_since is None:
            return
        now = time.monotonic()
        if self._probing or now - self._probed < PROBE_EVERY:
            raise self.error(fs._location)
        self._probing, self._probed = True, now
        try:
            session = await fs._set_session()
            url = f"{fs._location}/storage/v1/b?maxResults=1&fields=kind&project=_"
            timeout = ClientTimeout(total=min(PROBE_TIMEOUT, self.retry_window))
            async with session.get(url, headers=fs._get_headers(None), timeout=timeout) as r:
                await r.read()  # any answer, even an error status: the server is back
        except (ClientConnectionError, TimeoutError):
            raise self.error(fs._location) from None
        finally:
            self._probing, self._probed = False, time.monotonic()
        self.silent_since = None

    async def bounded(self, work: Awaitable[T], location: str, window: bool = True) -> T:
        """``work`` until it ends, another request finds the server silent, or (``window``)
        the retry window passes without an answer: then the server counts as silent."""
        started = time.monotonic()
        task: asyncio.Future[T] = asyncio.ensure_future(work)
        task.add_done_callback(_retrieved)  # a task given up on may still end in an error
        silenced: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.add(silenced)
        either: list[asyncio.Future[Any]] = [task, silenced]
        try:
            done, _ = await asyncio.wait(
                either, timeout=self.retry_window if window else None,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
        except BaseException:  # cancelled from outside: so is the work
            task.cancel()
            raise
        finally:
            self._waiting.discard(silenced)
        if task in done:
            return task.result()
        task.cancel()
        if silenced not in done:  # the window passed without an answer
            self.lost(started)
        raise self.error(location)


class ReachingGCSFileSystem(GCSFileSystem):  # type: ignore[misc, unused-ignore]
    """gcsfs whose requests retry only as long as the retry window allows, fail at once
    while ``reach`` knows the server is silent, and tell ``reach`` when one got no answer."""

    reach: Reach

    async def _request(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        await self.reach.check(self)
        started = time.monotonic()
        request = _retrying(tries_within(self.reach.retry_window))
        work = request(self, method, path, *args, **kwargs)
        try:  # a request that is slow (a big object) is cut only if the server goes silent
            return await self.reach.bounded(work, self._location, window=False)
        except (ClientConnectionError, TimeoutError):
            self.reach.lost(started)
            raise


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark the error of a task nobody awaits any more as seen: asyncio would log it with
    its traceback ("Task exception was never retrieved") when the task is collected."""
    if not task.cancelled():
        task.exception()


def tries_within(window: float) -> int:
    """The most tries of one request whose backoff (gcsfs's: up to 2, 3, 5, 9, 17, 33 s
    before the 2nd, 3rd, ... try) fits in ``window`` seconds; at least one, at most 10."""
    tries, waited = 1, 0.0
    while tries < 10:
        waited += min(1 + 2 ** (tries - 1), 32) + 1  # gcsfs: random() + 2**(retry-1), <= 32
        if waited > window:
            break
        tries += 1
    return tries


@functools.cache
def _retrying(tries: int) -> Callable[..., Awaitable[Any]]:
    """gcsfs's own request function, under its own retry decorator with ``tries`` tries."""
    raw = GCSFileSystem._request.__wrapped__  # without the class's fixed 6 tries
    return retry_request(retries=tries)(raw)  # type: ignore[no-any-return]
