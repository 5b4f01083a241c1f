"""Which signal stopped this process's run: Ctrl-C (SIGINT) or SIGTERM, named and coded once.

The CLI makes SIGTERM (``kill``, a scheduler's stop) the same clean stop as Ctrl-C: a
``KeyboardInterrupt`` in the main thread, so running steps are cancelled and recorded as
interrupted. It records which signal came, so that everything that reports the stop names
it: "interrupted (SIGTERM)", exit 143 (128 + 15); Ctrl-C stays "interrupted (Ctrl-C)",
exit 130. Signals are the process's, so this state is too. A floor module: it imports
nothing of confpipe.
"""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["exit_code", "interrupted", "name", "raise_on_sigterm"]

_received: list[int] = []  # the signals the handler turned into KeyboardInterrupt, in order


def raise_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread, as Ctrl-C does, and remember
    it (call from the main thread)."""
    signal.signal(signal.SIGTERM, _as_ctrl_c)


def _as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt(name(signum))


def received() -> int:
    """The first signal that stopped the run: SIGTERM if the handler saw it, else SIGINT."""
    return _received[0] if _received else signal.SIGINT


def name(signum: int | None = None) -> str:
    """``Ctrl-C`` for SIGINT, else the signal's name (``SIGTERM``); of ``received()`` by
    default."""
    signum = received() if signum is None else signum
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def interrupted() -> str:
    """``interrupted (SIGTERM)``: the stop as the CLI reports it."""
    return f"interrupted ({name()})"


def exit_code() -> int:
    """128 + the signal's number, as a shell reports a process a signal ended: 130 for
    Ctrl-C, 143 for SIGTERM."""
    return 128 + received()
