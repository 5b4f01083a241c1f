"""How a run tells what it does: the Reporter protocol, and the plain lines of a run on its own.

``run()`` sends the plan, each step's start and end and each line a step prints to the
reporter it is given (the command line draws a live table, see ``confpipe.cli.progress``).
Given none, it logs plain lines through ``LineReporter``: the plan's counts, each step's
start, its lines (``tokenize | read 3 files``) and its end, the summary; a dry run prints the
plan table on stdout. The ``Tally`` of how each step ended is what the summary is drawn
from; a failed step is shown by ``failure_lines``: its exception, the last frames of the
user's code, and where its log and full traceback are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from confpipe import interrupt
from confpipe.engine.frames import exception_line, format_frames, trace_of, user_frames
from confpipe.engine.outcome import Outcome
from confpipe.engine.plan import StepPlan
from confpipe.engine.status import error_path, log_path
from confpipe.errors import PreviousFailure, StepFailed, one_line

__all__ = [
    "LineReporter", "Reporter", "Row", "Tally", "error_tail", "failure_lines", "first_line",
    "plan_counts", "plan_table", "stopping_line", "where_of",
]  # fmt: skip

TAIL_LINES = 12
FRAMES = 3  # of the user's code, shown for a failed step


class Reporter(Protocol):
    """Receives the plan, every step's start and end, and each line a running step prints
    (``step_output``, from the step's thread or its job's log); ``stopping`` once if the run
    is interrupted (the steps still running, and how long it waits for them); ``close`` once
    the run is over. A reporter without ``step_output`` or ``stopping`` is not told those."""

    def planned(self, plans: Sequence[StepPlan], dry_run: bool) -> None: ...
    def started(self, plan: StepPlan) -> None: ...
    def step_output(self, plan: StepPlan, line: str) -> None: ...
    def stopping(self, running: Sequence[StepPlan], grace: float) -> None: ...
    def finished(
        self, plan: StepPlan, end: Outcome, seconds: float, error: BaseException | None
    ) -> None: ...
    def close(self) -> None: ...


@dataclass
class Row:
    """One step as the run goes: planned, RUNNING once started (``stopping`` once the run
    was interrupted and waits for it), then how it ended."""

    plan: StepPlan
    state: Outcome
    started: float | None = None
    seconds: float | None = None
    error: BaseException | None = None
    stopping: bool = False
    why: str = ""  # a step stopped by something else: "not run: dependency X failed"
    failed_dep: StepPlan | None = None  # DEP_FAILED: the failed step upstream


@dataclass
class Tally:
    """What a launch did, step by step (by identity); the summary is drawn from it."""

    rows: dict[str, Row] = field(default_factory=dict)

    def planned(self, plans: Sequence[StepPlan]) -> None:
        for plan in plans:
            self.rows[plan.spec.identity] = Row(plan, plan.state)

    def started(self, plan: StepPlan) -> None:
        self.rows[plan.spec.identity] = Row(plan, Outcome.RUNNING, time.monotonic())

    def stopping(self, running: Sequence[StepPlan]) -> None:
        for plan in running:
            row = self.rows.get(plan.spec.identity)
            if row is not None and row.state is Outcome.RUNNING:
                row.stopping = True

    def finished(
        self, plan: StepPlan, end: Outcome, seconds: float, error: BaseException | None
    ) -> None:
        row = Row(plan, end, None, seconds, error)
        if end is Outcome.DEP_FAILED:
            row.failed_dep = self.failed_dependency(plan)
            failed = row.failed_dep.label if row.failed_dep else "?"
            row.why = f"not run: dependency {failed} failed"
        elif end is Outcome.CANCELLED:
            was = self.rows.get(plan.spec.identity)
            started = was is not None and was.state is Outcome.RUNNING
            row.why = f"{'stopped' if started else 'not run'}: {interrupt.interrupted()}"
        self.rows[plan.spec.identity] = row

    def failed_dependency(self, plan: StepPlan) -> StepPlan | None:
        """A step upstream of ``plan`` that failed in this launch."""
        stack, seen = list(plan.spec.dependencies), set()
        while stack:
            dep = stack.pop()
            if dep.identity in seen:
                continue
            seen.add(dep.identity)
            row = self.rows.get(dep.identity)
            if row is not None and row.state is Outcome.FAILED:
                return row.plan
            stack.extend(dep.dependencies)
        return None

    def progress(self) -> str:
        """``4 of 12 done, 2 running, 1 failed, 3 cached``: the counts as the run goes (done:
        ended in this launch, however it ended; stopping: running, waited for after Ctrl-C;
        cached: found done at the start)."""
        rows = self.rows.values()
        planned_cached = sum(r.plan.state is Outcome.CACHED for r in rows)
        todo = len(self.rows) - planned_cached
        ended = sum(r.plan.state is not Outcome.CACHED and r.seconds is not None for r in rows)
        stopping = sum(r.stopping for r in rows)
        line = f"{ended} of {todo} done, {self.count(Outcome.RUNNING) - stopping} running"
        line += f", {stopping} stopping" if stopping else ""
        for state in (Outcome.FAILED, Outcome.DEP_FAILED, Outcome.CANCELLED):
            count = self.count(state)
            line += f", {count} {state.value}" if count else ""
        return line + f", {planned_cached} cached"

    def count(self, *states: Outcome) -> int:
        return sum(row.state in states for row in self.rows.values())

    def failures(self) -> list[Row]:
        return [r for r in self.rows.values() if r.state is Outcome.FAILED]

    def summary_lines(self) -> list[str]:
        ran = self.count(Outcome.SUCCEEDED)
        cached = self.count(Outcome.CACHED)
        failed = self.count(Outcome.FAILED)
        blocked = self.count(Outcome.DEP_FAILED)
        cancelled = self.count(Outcome.CANCELLED)
        line = f"summary: {ran} ran, {cached} cached, {failed} failed"
        line += f", {blocked} not run" if blocked else ""
        lines = [line + (f", {cancelled} cancelled ({interrupt.name()})" if cancelled else "")]
        for row in self.failures():
            lines += failure_lines(row.plan, row.error, indent="  ")
        return lines


def failure_lines(plan: StepPlan, error: BaseException | None, indent: str = "") -> list[str]:
    """A failed step for a person: ``failed: NAME: ValueError: boom``, the last frames of the
    user's code (``File steps.py:12 in train`` and its source line), and where its log and
    full traceback are. A job that died without a traceback shows its log's last lines."""
    trace = "" if error is None else trace_of(error)
    remote = error is not None and trace is getattr(error, "remote_traceback", None)
    what = (exception_line(trace) if remote else "") or first_line(error)
    lines = [f"{indent}failed: {plan.label}: {what}"]
    found = user_frames(trace, FRAMES) if trace and not isinstance(error, PreviousFailure) else []
    lines += format_frames(found, indent + "  ")
    if isinstance(error, StepFailed) and not found:
        lines += [f"{indent}  | {line}" for line in error_tail(error, 5)]
    lines.append(f"{indent}  log: {log_path(plan.output)}")
    unrecorded = getattr(error, "unrecorded", None)  # set by Records.fail (a full disk)
    if unrecorded is None:
        lines.append(f"{indent}  error: {error_path(plan.output)}")
    else:
        lines.append(f"{indent}  error: not recorded ({unrecorded})")
    return lines


def stopping_line(running: int, grace: float) -> str:
    """``stopping… (waiting up to 5 s for 2 running steps; Ctrl-C again to leave now)``, said
    at once when a run is interrupted; ``stopping on SIGTERM…`` for another signal."""
    signal = interrupt.name()
    line = "stopping…" if signal == "Ctrl-C" else f"stopping on {signal}…"
    if running:
        steps = f"{running} running step{'s' * (running != 1)}"
        line += f" (waiting up to {grace:g} s for {steps}; {signal} again to leave now)"
    return line


def first_line(error: BaseException | None) -> str:
    """``ValueError: boom`` (a job's: its own error's line); empty for no error."""
    return "" if error is None else one_line(error)


def error_tail(error: BaseException | None, lines: int = TAIL_LINES) -> list[str]:
    """The last lines of a failed job's log as its error carries them (run_job put them in
    its message; none for thread steps)."""
    if not isinstance(error, StepFailed):
        return []
    text = str(error).splitlines()
    return text[1:][-lines:]


def where_of(plan: StepPlan) -> str:
    """Where the step runs, as shown: ``thread``, ``local job (cpu=2)``."""
    return plan.where + (f" ({plan.resources.describe()})" if plan.resources else "")


def plan_counts(plans: Sequence[StepPlan]) -> str:
    """``1 cached, 2 to run``; failed and blocked steps (force_run_failed=false) apart."""
    count = {state: sum(p.state is state for p in plans) for state in Outcome}
    todo = count[Outcome.WILL_RUN] + count[Outcome.RUNNING]
    line = f"{count[Outcome.CACHED]} cached, {todo} to run"
    for state in (Outcome.FAILED, Outcome.BLOCKED):
        line += f", {count[state]} {state.value}" if count[state] else ""
    return line


def plan_table(plans: Sequence[StepPlan]) -> str:
    """A plain-text table of the plan, and its counts by state."""
    rows = [("step", "hash", "status", "where", "output", "reason")]
    for p in plans:
        rows.append((p.label, p.spec.hash, p.state.value, where_of(p), p.output, p.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[5] for r in rows
    ]
    shown = (Outcome.CACHED, Outcome.WILL_RUN, Outcome.RUNNING, Outcome.FAILED, Outcome.BLOCKED)
    counts = {s: sum(p.state is s for p in plans) for s in shown}
    listed = [s for s in shown if counts[s] or s not in (Outcome.FAILED, Outcome.BLOCKED)]
    lines.append(", ".join(f"{counts[s]} {s.value}" for s in listed))
    return "\n".join(lines)


class LineReporter:
    """One line per event, for logs and pipes: what ``run()`` reports when given no reporter."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write, self.tally = write, Tally()

    def heading(self, plans: Sequence[StepPlan]) -> str:
        """``3 steps, 1 cached, 2 to run``."""
        return f"{len(plans)} steps, {plan_counts(plans)}"

    def plan_text(self, plans: Sequence[StepPlan]) -> str:
        """The plan a dry run prints."""
        return plan_table(plans)

    def planned(self, plans: Sequence[StepPlan], dry_run: bool) -> None:
        self.tally.planned(plans)
        if dry_run:  # the plan is the product: stdout, not the progress stream
            print(self.plan_text(plans), flush=True)
            return
        self.write(f"plan: {self.heading(plans)}")

    def started(self, plan: StepPlan) -> None:
        self.tally.started(plan)
        self.write(f"start {plan.label} [{where_of(plan)}]")

    def step_output(self, plan: StepPlan, line: str) -> None:
        self.write(f"{plan.label} | {line}")

    def stopping(self, running: Sequence[StepPlan], grace: float) -> None:
        self.tally.stopping(running)
        self.write(stopping_line(len(running), grace))

    def finished(
        self, plan: StepPlan, end: Outcome, seconds: float, error: BaseException | None
    ) -> None:
        self.tally.finished(plan, end, seconds, error)
        detail = f": {first_line(error)}" if error is not None else ""
        why = self.tally.rows[plan.spec.identity].why
        detail = detail or (f": {why}" if why else "")
        self.write(f"{end.value} {plan.label} ({seconds:.1f}s){detail}")

    def close(self) -> None:
        rows = self.tally.rows.values()
        if any(r.state is not Outcome.CACHED or r.seconds for r in rows):
            for line in self.tally.summary_lines():
                self.write(line)
