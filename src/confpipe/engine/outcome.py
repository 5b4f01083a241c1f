"""Outcome: the one enum of what a launch does with a step, as planned and as it ended.

The plan forecasts each step (``CACHED``, ``WILL_RUN``, ``RUNNING`` elsewhere, ``FAILED``
earlier, ``BLOCKED``); the runner and the pipeline say how it ended (``SUCCEEDED``,
``CACHED``, ``FAILED``, ``DEP_FAILED``, ``CANCELLED``). The plan table, the progress lines,
the summary, a sweep's results and the manifest all print these values. The state kept in a
step's records is another thing, ``status.StepState``.

A floor module of the engine: it imports nothing, so the runner may use it.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Outcome"]


class Outcome(Enum):
    """What a launch does with a step; the value is the word the CLI prints."""

    CACHED = "cached"  # succeeded earlier, or another launch finished it while this one waited
    WILL_RUN = "will run"
    RUNNING = "running"  # running now; in a plan: held by another launch, this one will wait
    FAILED = "failed"  # in a plan: failed earlier, and force_run_failed=false stops the run
    BLOCKED = "blocked"  # in a plan: depends on a FAILED step
    SUCCEEDED = "succeeded"  # ran in this launch
    DEP_FAILED = "dep failed"  # not run: a step it depends on failed in this launch
    CANCELLED = "cancelled"  # stopped by Ctrl-C

    @property
    def has_result(self) -> bool:
        """The step's output is there: it succeeded now or earlier."""
        return self in (Outcome.SUCCEEDED, Outcome.CACHED)

    @property
    def stopped(self) -> bool:
        """Kept from finishing by something else: a failed dependency or Ctrl-C."""
        return self in (Outcome.DEP_FAILED, Outcome.CANCELLED)
