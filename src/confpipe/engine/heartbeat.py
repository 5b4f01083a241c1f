"""The heartbeat: one daemon thread per process that keeps every held lease alive, and
gives up a lease whose refreshes stopped landing before anyone may take it over.

The thread itself never waits on the store: each refresh runs in a short-lived thread of
its own (one at a time per lease), so a store that stalls cannot keep the thread from
noticing, on time, that a lease has gone ``give_up`` seconds without a landed heartbeat
(``Lease.expire``: the step is stopped and the lease is lost).
"""

from __future__ import annotations

import logging
import threading
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("confpipe")


class Timing(Protocol):
    """The lock options the heartbeat reads (``lock.LockOptions`` is one)."""

    @property
    def heartbeat_interval(self) -> float: ...
    @property
    def give_up(self) -> float: ...


class Held(Protocol):
    """What the heartbeat needs of a held lease (``lock.Lease`` is one): lock.py imports this
    module, never the other way round."""

    busy: bool  # a refresh of it is under way

    @property
    def lost(self) -> str | None: ...  # why it was lost
    @property
    def options(self) -> Timing: ...
    def silent_for(self) -> float: ...
    def expire(self) -> None: ...
    def refresh(self) -> bool: ...


L = TypeVar("L", bound=Held)


class Heartbeat(Generic[L]):
    """One daemon thread refreshing every held lease of this process."""

    def __init__(self) -> None:
        self._leases: dict[int, L] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._interval = float("inf")  # the shortest heartbeat interval of the last round

    def add(self, lease: L) -> None:
        with self._wake:
            idle = not self._leases
            self._leases[id(lease)] = lease
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="confpipe-heartbeat")
                self._thread.daemon = True
                self._thread.start()
            elif idle or lease.options.heartbeat_interval < self._interval:
                self._wake.notify()  # otherwise its next round comes soon enough

    def remove(self, lease: L) -> None:
        with self._wake:
            self._leases.pop(id(lease), None)

    def held(self) -> list[L]:
        with self._wake:
            return list(self._leases.values())

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._leases:
                    self._wake.wait()
                leases = list(self._leases.values())
            for lease in leases:
                try:
                    self._tend(lease)
                except Exception as err:  # the thread must live on: every held lease needs it
                    lease.busy = False
                    log.warning("heartbeat: %s (retried in the next round)", err)
            with self._wake:
                self._interval = min(le.options.heartbeat_interval for le in leases)
                self._wake.wait(self._interval / 4)

    def _tend(self, lease: L) -> None:
        """Forget a lost lease, give up a silent one, or start its refresh when it is due."""
        silent = lease.silent_for()
        if lease.lost:
            self.remove(lease)
        elif silent >= lease.options.give_up:
            lease.expire()
            self.remove(lease)
        elif silent >= lease.options.heartbeat_interval and not lease.busy:
            lease.busy = True
            threading.Thread(
                target=self._refresh, args=(lease,), name="confpipe-heartbeat-write",
                daemon=True,
            ).start()  # fmt: skip

    def _refresh(self, lease: L) -> None:
        try:
            if not lease.refresh():
                self.remove(lease)
        finally:
            lease.busy = False
