"""Cancellation scopes: Ctrl-C cancels the whole run, a lost lease cancels one step.

A ``CancelScope`` is a ``threading.Event`` (so the runner, which knows nothing else, can
simply ``set()`` it) that also runs callbacks when set (kill a job, wake a waiter) and
cancels its child scopes. The scope of the step being executed in this thread is found
through ``current()``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

INTERRUPTED = "interrupted"  # the reason of a scope set without one: Ctrl-C


class CancelScope(threading.Event):
    """An Event that, once set, runs its callbacks once and sets its children."""

    def __init__(self, parent: CancelScope | None = None) -> None:
        super().__init__()
        self.reason = ""
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._guard = threading.Lock()
        self._detach: Callable[[], None] = lambda: None
        if parent is not None:
            self._detach = parent.on_cancel(lambda: self.cancel(parent.reason))

    def cancel(self, reason: str) -> None:
        """Set the scope, remembering why (the first reason wins)."""
        with self._guard:
            if not self.reason:
                self.reason = reason
        self.set()

    def set(self) -> None:
        with self._guard:
            if self.is_set():
                return
            if not self.reason:
                self.reason = INTERRUPTED
            super().set()
            callbacks, self._callbacks = self._callbacks, {}
        for callback in callbacks.values():
            callback()

    @property
    def interrupted(self) -> bool:
        """Set by Ctrl-C (or a plain ``set()``), not by a lost lease or another reason."""
        return self.is_set() and self.reason == INTERRUPTED

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` when cancelled (now, if already set); returns an unregister function."""
        with self._guard:
            if not self.is_set():
                key = next(_keys)
                self._callbacks[key] = callback
                return lambda: self._discard(key)
        callback()
        return lambda: None

    def close(self) -> None:
        """Detach from the parent once the scope's work is over (keeps long runs lean)."""
        self._detach()

    def _discard(self, key: int) -> None:
        with self._guard:
            self._callbacks.pop(key, None)


_keys = itertools.count()


_current: ContextVar[CancelScope | None] = ContextVar("confpipe_cancel", default=None)


def current() -> CancelScope:
    """The scope of the step running in this thread (a fresh, never-set one outside a run)."""
    scope = _current.get()
    return scope if scope is not None else CancelScope()


@contextmanager
def entered(scope: CancelScope) -> Iterator[CancelScope]:
    """Make ``scope`` the current one for the duration of the block."""
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)
