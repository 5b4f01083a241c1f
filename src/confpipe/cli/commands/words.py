"""How a step's records read for a person: its state, local times and durations.

Shared by ``status``, ``show`` and ``logs``, so that each says a step's state in the same
words: the record's state (SUCCESS, FAILED, RUNNING, DEP_FAILED) or ``never run``, with a
note where the plan knows more (``code changed``, ``interrupted``, a RUNNING record whose
lease is gone).
"""

from __future__ import annotations

import os
import time
from datetime import datetime

from confpipe.cli.history import StepHistory
from confpipe.engine.outcome import Outcome
from confpipe.engine.status import StepState

__all__ = [
    "NEVER_RUN", "duration", "local_time", "notes", "shown_path", "state", "took", "where",
]  # fmt: skip

NEVER_RUN = "never run"


def state(history: StepHistory) -> str:
    """``SUCCESS``, ``FAILED (interrupted)``, ``SUCCESS (code changed)``, ``never run``..."""
    if history.status is not None and history.status.unreadable:  # its error says why
        return "unreadable record"
    word = NEVER_RUN if history.status is None else history.status.state.value
    shown = notes(history)
    return f"{word} ({', '.join(shown)})" if shown else word


def notes(history: StepHistory) -> list[str]:
    """What the plan adds to the record's state, in a few words each."""
    status, plan = history.status, history.plan
    found = []
    if (
        status is not None
        and status.state is StepState.RUNNING
        and plan.state is not Outcome.RUNNING
    ):
        found.append("abandoned: no live lease")  # the launch died; the next run takes it over
    if status is not None and status.interrupted:
        found.append("interrupted")
    if status is not None and status.state is StepState.DEP_FAILED and status.failed_dep:
        found.append(f"{status.failed_dep} failed")
    if plan.code_note:
        found.append("code changed")
    return found


def local_time(when: float | None, *, seconds: bool = False) -> str:
    """``2026-12-06 14:03`` (``14:03:27`` with ``seconds``) in this machine's time zone; ``-``
    for None."""
    if when is None:
        return "-"
    return datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else ""))


def duration(seconds: float) -> str:
    """``0.4s``, ``12s``, ``3m05s``, ``2h01m``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def took(history: StepHistory) -> str:
    """How long its last attempt ran; ``12s so far`` while RUNNING; ``-`` if it never ran."""
    status = history.status
    if status is None or status.started is None:
        return "-"
    if status.state is StepState.RUNNING:
        return f"{duration(max(0.0, time.time() - status.started))} so far"
    ran = history.ran_for
    return "-" if ran is None else duration(ran)


def where(history: StepHistory) -> str:
    """Where it ran (its status record, or an older record's info), else where this config
    would run it."""
    status = history.status
    recorded = (status.where if status else None) or (history.info or {}).get("where")
    return str(recorded) if recorded else history.plan.where


def shown_path(path: str) -> str:
    """A local path under the working directory as a relative one (``outputs/a-1f2e...``),
    shorter in a table; any other path or URL as it is."""
    if "://" in path or not os.path.isabs(path):
        return path
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
