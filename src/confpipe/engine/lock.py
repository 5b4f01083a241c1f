"""lock(fn): a lease on the step's output path, kept alive by a heartbeat and used as a fence.

Acquire is an atomic create-if-absent of ``lease.json``; a lease whose heartbeat is older
than ``lease_timeout`` (judged from the store's own timestamps) is taken over with a
compare-and-swap, so exactly one of several racing launches wins. One shared heartbeat
(``heartbeat.py``) refreshes every held lease with a compare-and-swap; when that fails, the
lease is lost: the step's cancel scope is set (its job is cancelled) and it can no longer
write a record, because every record write is fenced by a successful refresh first.

A holder also gives its lease up by itself when no heartbeat of its own has landed for
``lease_timeout`` minus a margin (a store it cannot reach): it stops its step *before*
another launch can judge the lease stale, so the work never runs twice. A launch that lost
its lease waits for it again like any late launch, and finds the step done by the launch
that took it over (reported as done by another launch, not as a failure).

A lease also names its process (``owner.py``): a holder on this same machine whose process
is gone is taken over at once, without waiting out the lease.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from confpipe.cancel import CancelScope, entered
from confpipe.engine import beside
from confpipe.engine.heartbeat import Heartbeat
from confpipe.engine.owner import (
    Holder,
    dead_local_holder,
    holder_of,
    lease_record,
    read_holder,
    released_record,
)
from confpipe.engine.status import lease_path
from confpipe.errors import ConfigError, LeaseLost, StepFailed
from confpipe.storage import Store, StoreUnreachable

__all__ = [
    "Holder", "Hooks", "Lease", "LockOptions", "abandon_held", "acquire", "dead_local_holder",
    "lock", "read_holder", "try_acquire", "warn_timing",
]  # fmt: skip

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

    @property
    def give_up(self) -> float:
        """Seconds after its last landed heartbeat was sent when a holder gives its lease up:
        ``lease_timeout`` minus a margin (one heartbeat interval, at most half the slack
        between the two), so that it stops before anyone may take the lease over."""
        heartbeat, lease = self.heartbeat_interval, self.lease_timeout
        return lease - min(heartbeat, (lease - heartbeat) / 2)


class Hooks(Protocol):
    """What runs inside the lease (cache.py's records): re-check, begin, commit, fail."""

    def done(self, output_path: str) -> bool:
        """True when another launch finished the step while this one waited for the lease."""
        ...

    def skipped(self) -> Any:
        """What the locked call returns, without calling the function, when ``done``."""
        ...

    def early(self, output_path: str) -> Future[Any] | None:
        """Work to start beside the lease's creation (a new step's RUNNING), or None."""
        ...

    def settle(self, output_path: str, early: Future[Any], at_once: bool | None) -> None:
        """After the lease: whether it was created at once (None: not got at all)."""
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
        options: LockOptions, scope: CancelScope, hooks: Hooks | None, sent: float,
    ) -> None:  # fmt: skip
        self.store, self.step, self.output, self.owner = store, step, output, owner
        self.path = lease_path(output)
        self.options, self.scope, self.hooks = options, scope, hooks
        self.lost: str | None = None
        self._version: str | None = version
        self._refreshed = sent  # monotonic time when the last write that landed was sent
        self._wall = time.time() - (time.monotonic() - sent)  # the same, by the wall clock
        self._guard = threading.Lock()  # one refresh at a time
        self._flag = threading.Lock()  # guards ``lost``: the first reason wins
        self._failing = False  # a heartbeat failed and none landed since (warned once)
        self.busy = False  # a heartbeat refresh is under way (the heartbeat thread's flag)
        # made by this launch's first request for it: no lease was ever held here before
        # (``try_acquire`` and ``acquire`` set it)
        self.created = False
        self._unsure: set[str] = set()  # tokens of refreshes whose answer never came

    def is_lost(self) -> bool:
        """Lost or given up (another thread may set it at any time)."""
        return self.lost is not None

    def silent_for(self) -> float:
        """Seconds since the last write that landed was sent."""
        return time.monotonic() - self._refreshed

    def refresh(self) -> bool:
        """Extend the lease by a compare-and-swap; False (and the lease lost) if it isn't ours,
        or if no refresh landed for ``give_up`` seconds (transient errors are retried until)."""
        with self._guard:
            if self._version is None or self.is_lost():
                return False
            sent, wall = time.monotonic(), time.time()
            record = lease_record(self.owner)
            token = _token(record) or ""
            self._unsure.add(token)  # until its answer comes: it may land after we gave up
            try:
                version = self.store.replace(self.path, record, self._version)
                if version is None and len(self._unsure) > 1:  # an earlier one landed late?
                    version = self._adopt()
            except Exception as err:  # a transient store error: retry until the lease expires
                if sent - self._refreshed < self.options.give_up:
                    if not self._failing:  # said if it lasts: the lease is given up
                        log.debug("step %s: heartbeat failed, will retry: %s", self.step, err)
                    self._failing = True
                    return True
                self.expire()
                return False
            if version is None:
                self._lose()
                return False
            self._unsure.clear()
            self._wall = wall
            self._version = version  # ours even if given up: release() deletes it
            if self.is_lost():  # landed, but too late: this launch gave the lease up meanwhile
                return False
            if self._failing:
                log.debug("step %s: heartbeat reached the store again", self.step)
            self._refreshed, self._failing = sent, False
            return True

    def _adopt(self) -> str | None:
        """After a failed compare-and-swap: if the lease holds one of this lease's own
        refreshes whose answer never came (the store applied it after the client gave up on
        it, as a server that was frozen does when it wakes), it is still ours: refresh it over
        that version. None if it holds anything else (taken over)."""
        blob = self.store.read(self.path)
        if blob is None or _token(blob.data) not in self._unsure:
            return None
        log.debug("step %s: a heartbeat given up on had landed: the lease is still ours", self.step)
        record = lease_record(self.owner)
        self._unsure.add(_token(record) or "")
        return self.store.replace(self.path, record, blob.version)

    def fence(self) -> None:
        """Prove the lease is still ours before a commit's writes, or raise LeaseLost.

        While the heartbeat is on schedule (a refresh of this lease landed, sent less than
        ``heartbeat_interval`` ago) that takes no round trip: nobody may take a lease over
        before ``lease_timeout`` has passed since its last refresh was sent, so it stays ours
        for at least ``lease_timeout - heartbeat_interval`` more seconds, the margin a holder
        keeps before it gives a lease up (``give_up``). Otherwise (a long step between beats,
        a frozen or suspended launch, whose clock went on) it refreshes the lease, and
        extends it, as each heartbeat does. The status commit that follows is a
        compare-and-swap in any case."""
        if self.lost is None and self._version is not None and self._on_schedule():
            return
        if not self.refresh():
            raise LeaseLost(self.step, self.lost or "lease lost")

    def _on_schedule(self) -> bool:
        """A refresh landed, sent less than a heartbeat interval ago, by the monotonic clock
        and by the wall clock too (the monotonic one stops while a machine is suspended)."""
        interval = self.options.heartbeat_interval
        return self.silent_for() < interval and 0 <= time.time() - self._wall < interval

    def release(self, wait: bool = True) -> None:
        """Release the lease if it is still ours; never touches another launch's lease.
        Without ``wait``, on a store with round trips, that runs beside the run (a step's
        dependants needn't wait for it; ``beside.flush`` does, before a run returns)."""
        _heartbeat.remove(self)
        with self._guard:
            version, self._version = self._version, None
        if version is not None:
            if wait or not beside.pays_round_trips(self.output):
                self._release(version)
            else:
                beside.submit(self._release, version)
        self.scope.close()

    def _release(self, version: str) -> None:
        """Mark the lease released, if still ours: on a store with round trips by writing
        ``released_record`` over it (never deleted, so that a lease created there later is
        known to be the first: cache.py's ``early``), locally by deleting it (which works on
        a full disk; local steps don't write RUNNING early)."""
        if not beside.pays_round_trips(self.output):
            self._delete_local(version)
            return
        try:
            record = released_record(self.owner)
            if self.store.replace(self.path, record, version) is None and self._unsure:
                blob = self.store.read(self.path)  # one of our refreshes may have landed late
                if blob is not None and _token(blob.data) in self._unsure:
                    self.store.replace(self.path, record, blob.version)
        except StoreUnreachable as err:  # the step's own error says so already
            log.debug("step %s: could not release its lease: %s", self.step, err)
        except Exception as err:  # it will go stale and be taken over
            log.warning("step %s: could not release its lease: %s", self.step, err)

    def _delete_local(self, version: str) -> None:
        try:
            self.store.delete(self.path, version)
        except Exception as err:  # it will go stale and be taken over
            log.warning("step %s: could not release its lease: %s", self.step, err)

    def expire(self) -> None:
        """Give the lease up: no heartbeat landed for ``give_up`` seconds, and soon another
        launch may take it over. The step is stopped now, before that can happen."""
        timeout = self.options.lease_timeout
        self._stop(
            f"lease given up: its heartbeat has not reached the store for "
            f"{round(self.silent_for(), 1):g}s (lock.lease_timeout={timeout:g}s); step stopped "
            "before another launch can take it over"
        )

    def _lose(self) -> None:
        self._version = None
        try:
            holder = read_holder(self.store, self.output)
        except Exception:  # the store failed again: say what is known
            holder = None
        who = f"taken over by {holder.owner}" if holder else "deleted by someone else"
        self._stop(f"lease lost ({who}); this launch did not commit the step")

    def _stop(self, reason: str) -> None:
        """Mark the lease lost (once), say so in one line, and cancel the step's scope."""
        with self._flag:
            if self.lost:
                return
            self.lost = reason
        log.error("step %s: %s", self.step, reason)
        threading.Thread(target=self.scope.cancel, args=(reason,), daemon=True).start()


def try_acquire(
    store: Store, step: str, output: str, owner: str, options: LockOptions,
    scope: CancelScope, hooks: Hooks | None = None, first: bool = True,
) -> Lease | Holder:  # fmt: skip
    """Take the lease if it is free (never held, or released) or stale; otherwise say who
    holds it. ``Lease.created``: made by this call's first create, so no lease was ever held
    on this output before (leases are released, never deleted)."""
    path = lease_path(output)
    sent = time.monotonic()
    version = store.create(path, lease_record(owner))
    created = first and version is not None
    if version is None:
        blob = store.read(path)
        if blob is None:  # deleted by hand meanwhile
            return try_acquire(store, step, output, owner, options, scope, hooks, False)
        holder = holder_of(store, blob)
        stale = holder.age >= options.lease_timeout
        if not holder.released and not stale and not dead_local_holder(holder):
            return holder
        sent = time.monotonic()
        version = store.replace(path, lease_record(owner), blob.version)
        if version is None:  # another launch took it first
            return try_acquire(store, step, output, owner, options, scope, hooks, False)
        if holder.released:  # free: nothing to say
            pass
        elif stale:
            log.warning(
                "step %s: took over the stale lease of %s (last heartbeat %.0fs ago)",
                step, holder.owner, holder.age,
            )  # fmt: skip
        else:
            log.warning(
                "step %s: its launch (pid %s on this machine) is gone: taking it over",
                step, holder.record.get("pid"),
            )  # fmt: skip
    lease = Lease(store, step, output, owner, version, options, CancelScope(scope), hooks, sent)
    lease.created = created
    _heartbeat.add(lease)
    return lease


def acquire(
    store: Store, step: str, output: str, owner: str, options: LockOptions,
    scope: CancelScope, hooks: Hooks | None = None,
) -> Lease:  # fmt: skip
    """Wait for the lease; log who holds it meanwhile. Raises StepFailed if cancelled."""
    delay, logged, first = 0.05, 0.0, True
    while True:
        got = try_acquire(store, step, output, owner, options, scope, hooks)
        if isinstance(got, Lease):
            got.created = first and got.created
            return got
        first = False
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


_heartbeat: Heartbeat[Lease] = Heartbeat()
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
    """Run ``fn(output_path=..., **config)`` under the step's lease; hooks commit inside it.

    With hooks, a launch that loses the lease waits for it again (at most ``_LOSSES`` times)
    and finds the step done by the launch that took it over, or runs it itself if not."""
    warn_timing(options, store)

    @functools.wraps(fn)
    def locked(*, output_path: str, **config: Any) -> Any:
        lost: LeaseLost | None = None
        for _ in range(_LOSSES + 1):
            if lost is None:
                lease = _acquire_first(store, step, output_path, owner, options, scope, hooks)
            else:
                assert hooks is not None
                again = (store, step, output_path, owner, options, scope, hooks, lost)
                lease = _acquire_again(*again)
            try:
                value = _held(fn, lease, output_path, config, after_loss=lost is not None)
            except LeaseLost as err:
                lease.release()
                if hooks is None:  # nothing to tell a finished step by: never run it twice
                    raise
                lost = err
                log.info("step %s: waiting for its lease again", step)
                continue
            except BaseException:
                lease.release()
                raise
            lease.release(wait=False)  # committed: its dependants needn't wait for this
            return value
        assert lost is not None
        raise lost

    return locked


_LOSSES = 3  # a launch that loses the lease this many times gives the step up


def _token(data: bytes) -> str | None:
    """The fresh token a lease record carries (``lease_record``), None if unreadable."""
    try:
        token = json.loads(data).get("token")
    except (ValueError, AttributeError):
        return None
    return token if isinstance(token, str) else None


def _acquire_first(
    store: Store, step: str, output: str, owner: str, options: LockOptions,
    scope: CancelScope, hooks: Hooks | None,
) -> Lease:  # fmt: skip
    """``acquire``, with the hooks' early work (a new step's RUNNING) beside the lease's
    creation, settled once the lease is held (or not got at all)."""
    early = hooks.early(output) if hooks is not None else None
    if early is None:
        return acquire(store, step, output, owner, options, scope, hooks)
    assert hooks is not None
    try:
        lease = acquire(store, step, output, owner, options, scope, hooks)
    except BaseException:
        hooks.settle(output, early, None)
        raise
    try:
        hooks.settle(output, early, lease.created)
    except BaseException:
        lease.release()
        raise
    return lease


def _held(
    fn: Callable[..., Any], lease: Lease, output_path: str, config: dict[str, Any],
    after_loss: bool,
) -> Any:  # fmt: skip
    """The step inside its lease: re-check, begin, call, commit (or record the failure)."""
    step, hooks = lease.step, lease.hooks
    if hooks is not None:
        for _ in range(_BEGIN_TRIES):
            if hooks.done(output_path):  # another launch finished it meanwhile
                if after_loss:
                    log.warning("step %s: done by another launch (not a failure)", step)
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


def _acquire_again(
    store: Store, step: str, output: str, owner: str, options: LockOptions,
    scope: CancelScope, hooks: Hooks, lost: LeaseLost,
) -> Lease:  # fmt: skip
    """``acquire`` after a lost lease, riding out a store that fails (it may be what made
    this launch lose the lease) for up to the store's retry window or a heartbeat interval."""
    failing: float | None = None
    patience = max(store.retry_window, options.heartbeat_interval)
    while True:
        try:
            return acquire(store, step, output, owner, options, scope, hooks)
        except StepFailed:
            raise
        except Exception as err:
            failing = time.monotonic() if failing is None else failing
            if time.monotonic() - failing > patience:
                raise LeaseLost(step, f"{lost}; then: {err}") from err
            if scope.wait(options.heartbeat_interval / 4):
                raise StepFailed(
                    step, f"cancelled while waiting for its lease: {scope.reason}"
                ) from err


_warned: set[tuple[float, float, float]] = set()


def warn_timing(options: LockOptions, store: Store) -> None:
    """Warn once when a lease could be given up while its holder's store is only slow.

    A holder gives its lease up when no heartbeat has landed for ``lease_timeout`` minus one
    ``heartbeat_interval``; to ride out one missed beat plus one slow write (the store's
    retry window) it needs ``lease_timeout >= 2 x heartbeat_interval + retry window``. The
    defaults (30 s, 90 s) meet it on gs:// (a 30 s window)."""
    window = float(getattr(store, "retry_window", 0.0))
    heartbeat, lease = options.heartbeat_interval, options.lease_timeout
    key = (heartbeat, lease, window)
    if lease >= 2 * heartbeat + window or key in _warned:
        return
    _warned.add(key)
    log.warning(
        "lock.lease_timeout=%gs is under 2 x lock.heartbeat_interval (%gs) + the store's retry "
        "window (%gs): a store that is slow for a while makes a launch give its steps up; "
        "raise lock.lease_timeout to %gs or more",
        lease, heartbeat, window, 2 * heartbeat + window,
    )  # fmt: skip
