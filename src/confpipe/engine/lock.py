"""lock(fn): a lease on the step's output path, kept alive by a heartbeat and used as a fence.

Acquire is an atomic create-if-absent of ``lease.json``; a lease whose heartbeat is older
than ``lease_timeout`` (judged from the store's own timestamps) is taken over with a
compare-and-swap, so exactly one of several racing launches wins. One shared heartbeat
thread refreshes every held lease with a compare-and-swap; when that fails, the lease
is lost: the step's cancel scope is set (its job is cancelled) and it can no longer
write a record, because every record write is fenced by a successful refresh first.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from confpipe.cancel import CancelScope, entered
from confpipe.engine.status import lease_path
from confpipe.errors import ConfigError, LeaseLost, StepFailed
from confpipe.storage import Blob, Store

log = logging.getLogger("confpipe")


@dataclass(frozen=True)
class LockOptions:
    """``lock.*``: seconds between heartbeats, and without one before a lease is stale."""

    heartbeat_interval: float = 30.0
    lease_timeout: float = 90.0

    def __post_init__(self) -> None:
        heartbeat, lease = self.heartbeat_interval, self.lease_timeout
        if not 0 < heartbeat < lease:
            raise ConfigError(
                f"lock.heartbeat_interval: must be positive and smaller than lock.lease_timeout "
                f"(got {heartbeat:g} and {lease:g}); e.g. heartbeat_interval=30, lease_timeout=90"
            )


@dataclass(frozen=True)
class Holder:
    """Who holds a lease and how old its last heartbeat is, by the store's clock."""

    owner: str
    age: float


class Hooks(Protocol):
    """What runs inside the lease (cache.py's records): re-check, begin, commit, fail."""

    def done(self, output_path: str) -> bool:
        """True when another launch finished the step while this one waited for the lease."""
        ...

    def skipped(self) -> Any:
        """What the locked call returns, without calling the function, when ``done``."""
        ...

    def begin(self, output_path: str) -> bool: ...
    def succeed(self, output_path: str, value: Any, fence: Callable[[], None]) -> None: ...
    def fail(
        self,
        output_path: str,
        error: BaseException,
        fence: Callable[[], None],
        interrupted: bool = False,
    ) -> None: ...


class Lease:
    """A held lease. ``fence()`` proves it is still ours (and extends it) or raises LeaseLost."""

    def __init__(
        self, store: Store, step: str, output: str, owner: str, version: str,
        options: LockOptions, scope: CancelScope, hooks: Hooks | None,
    ) -> None:  # fmt: skip
        self.store, self.step, self.output, self.owner = store, step, output, owner
        self.path = lease_path(output)
        self.options, self.scope, self.hooks = options, scope, hooks
        self.lost: str | None = None
        self._version: str | None = version
        self._refreshed = time.monotonic()
        self._guard = threading.Lock()

    def refresh(self) -> bool:
        """Extend the lease by a compare-and-swap; False (and the lease lost) if it isn't ours."""
        with self._guard:
            if self._version is None:
                return False
            try:
                version = self.store.replace(self.path, _record(self.owner), self._version)
            except Exception as err:  # a transient store error: retry until the lease expires
                if time.monotonic() - self._refreshed < self.options.lease_timeout:
                    log.warning("step %s: heartbeat failed, will retry: %s", self.step, err)
                    return True
                version = None
            if version is None:
                self._lose()
                return False
            self._version, self._refreshed = version, time.monotonic()
            return True

    def fence(self) -> None:
        if not self.refresh():
            raise LeaseLost(self.step, self.lost or "lease lost")

    def release(self) -> None:
        """Delete the lease if it is still ours; never touches another launch's lease."""
        _heartbeat.remove(self)
        with self._guard:
            version, self._version = self._version, None
        if version is not None:
            try:
                self.store.delete(self.path, version)
            except Exception as err:  # it will go stale and be taken over
                log.warning("step %s: could not release its lease: %s", self.step, err)
        self.scope.close()

    def _lose(self) -> None:
        self._version = None
        holder = read_holder(self.store, self.output)
        who = f"taken over by {holder.owner}" if holder else "deleted by someone else"
        self.lost = f"lease lost ({who}); this launch did not commit the step"
        log.error("step %s: %s", self.step, self.lost)
        threading.Thread(target=self.scope.cancel, args=(self.lost,), daemon=True).start()


def read_holder(store: Store, output: str) -> Holder | None:
    blob = store.read(lease_path(output))
    return None if blob is None else _holder(store, blob)


def _holder(store: Store, blob: Blob) -> Holder:
    try:
        owner = str(json.loads(blob.data)["owner"])
    except (ValueError, KeyError, TypeError):
        owner = "unknown"
    return Holder(owner, max(0.0, store.now() - blob.mtime))


def _record(owner: str) -> bytes:
    return json.dumps({"owner": owner, "token": uuid.uuid4().hex, "time": time.time()}).encode()


def try_acquire(
    store: Store, step: str, output: str, owner: str, options: LockOptions,
    scope: CancelScope, hooks: Hooks | None = None,
) -> Lease | Holder:  # fmt: skip
    """Take the lease if it is free or stale; otherwise say who holds it."""
    path = lease_path(output)
    version = store.create(path, _record(owner))
    if version is None:
        blob = store.read(path)
        if blob is None:  # released meanwhile
            return try_acquire(store, step, output, owner, options, scope, hooks)
        holder = _holder(store, blob)
        if holder.age < options.lease_timeout:
            return holder
        version = store.replace(path, _record(owner), blob.version)
        if version is None:  # another launch took it over first
            return try_acquire(store, step, output, owner, options, scope, hooks)
        log.warning(
            "step %s: took over the stale lease of %s (last heartbeat %.0fs ago)",
            step, holder.owner, holder.age,
        )  # fmt: skip
    lease = Lease(store, step, output, owner, version, options, CancelScope(scope), hooks)
    _heartbeat.add(lease)
    return lease


def acquire(
    store: Store, step: str, output: str, owner: str, options: LockOptions,
    scope: CancelScope, hooks: Hooks | None = None,
) -> Lease:  # fmt: skip
    """Wait for the lease; log who holds it meanwhile. Raises StepFailed if cancelled."""
    delay, logged = 0.05, 0.0
    while True:
        got = try_acquire(store, step, output, owner, options, scope, hooks)
        if isinstance(got, Lease):
            return got
        if time.monotonic() - logged > max(10.0, options.heartbeat_interval):
            log.info(
                "step %s: waiting for its lease, held by %s (heartbeat %.0fs ago)",
                step, got.owner, got.age,
            )  # fmt: skip
            logged = time.monotonic()
        wait = min(delay, max(0.01, options.lease_timeout - got.age))
        if scope.wait(wait):
            raise StepFailed(step, f"cancelled while waiting for its lease: {scope.reason}")
        delay = min(delay * 2, 1.0, options.heartbeat_interval)


class _Heartbeat:
    """One daemon thread refreshing every held lease of this process."""

    def __init__(self) -> None:
        self._leases: dict[int, Lease] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._interval = float("inf")  # the shortest heartbeat interval of the last round

    def add(self, lease: Lease) -> None:
        with self._wake:
            idle = not self._leases
            self._leases[id(lease)] = lease
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="confpipe-heartbeat")
                self._thread.daemon = True
                self._thread.start()
            elif idle or lease.options.heartbeat_interval < self._interval:
                self._wake.notify()  # otherwise its next round comes soon enough

    def remove(self, lease: Lease) -> None:
        with self._wake:
            self._leases.pop(id(lease), None)

    def held(self) -> list[Lease]:
        with self._wake:
            return list(self._leases.values())

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._leases:
                    self._wake.wait()
                leases = list(self._leases.values())
            now = time.monotonic()
            for lease in leases:
                if (
                    now - lease._refreshed >= lease.options.heartbeat_interval
                    and not lease.refresh()
                ):
                    self.remove(lease)
            with self._wake:
                self._interval = min(le.options.heartbeat_interval for le in leases)
                self._wake.wait(self._interval / 4)


_heartbeat = _Heartbeat()
_BEGIN_TRIES = 3  # a launch that lost the lease writes the status at most once more


def abandon_held(reason: BaseException) -> None:
    """After Ctrl-C: record every step still holding a lease here as failed, and release it."""
    for lease in _heartbeat.held():
        if lease.hooks is not None:
            try:
                lease.hooks.fail(lease.output, reason, lease.fence, interrupted=True)
            except Exception as err:
                log.warning("step %s: could not record the interruption: %s", lease.step, err)
        lease.release()


def lock(
    fn: Callable[..., Any], *, store: Store, step: str, owner: str, options: LockOptions,
    scope: CancelScope, hooks: Hooks | None = None,
) -> Callable[..., Any]:  # fmt: skip
    """Run ``fn(output_path=..., **config)`` under the step's lease; hooks commit inside it."""

    @functools.wraps(fn)
    def locked(*, output_path: str, **config: Any) -> Any:
        lease = acquire(store, step, output_path, owner, options, scope, hooks)
        try:
            if hooks is not None:
                for _ in range(_BEGIN_TRIES):
                    if hooks.done(output_path):  # another launch finished it meanwhile
                        return hooks.skipped()
                    if hooks.begin(output_path):  # False: a late write of the last holder
                        break
                else:
                    raise LeaseLost(step, "its status kept changing under this launch's lease")
            with entered(lease.scope):
                try:
                    value = fn(output_path=output_path, **config)
                except BaseException as err:
                    if lease.lost:
                        raise LeaseLost(step, lease.lost) from err
                    if hooks is not None:
                        stopped = lease.scope.interrupted
                        hooks.fail(output_path, err, lease.fence, interrupted=stopped)
                    raise
            if hooks is not None:
                hooks.succeed(output_path, value, lease.fence)
            elif lease.lost:
                raise LeaseLost(step, lease.lost)
            return value
        finally:
            lease.release()

    return locked
