"""Progress while a run goes and its summary at the end: a live rich table on a terminal,
plain log lines elsewhere.

Both reporters receive the same events from ``pipeline.run`` (see ``plan.Reporter``); rich
is imported only when a live display is drawn.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from confpipe.engine.plan import (
    PlanState,
    Reporter,
    StepEnd,
    StepPlan,
    Where,
    format_diagram,
    format_plan,
)
from confpipe.engine.status import jobs_dir, status_path
from confpipe.errors import StepFailed
from confpipe.storage import store_for

TAIL_LINES = 12


@dataclass
class _Row:
    plan: StepPlan
    state: str
    started: float | None = None
    seconds: float | None = None
    error: BaseException | None = None


@dataclass
class Tally:
    """What a launch did, step by step; the summary is drawn from it."""

    rows: dict[str, _Row] = field(default_factory=dict)

    def count(self, *states: str) -> int:
        return sum(row.state in states for row in self.rows.values())

    def failures(self) -> list[_Row]:
        return [r for r in self.rows.values() if r.state == StepEnd.FAILED.value]

    def summary_lines(self) -> list[str]:
        ran = self.count(StepEnd.SUCCEEDED.value)
        cached = self.count(PlanState.CACHED.value, StepEnd.CACHED.value)
        failed = self.count(StepEnd.FAILED.value)
        blocked = self.count(StepEnd.DEP_FAILED.value)
        cancelled = self.count(StepEnd.CANCELLED.value)
        line = f"summary: {ran} ran, {cached} cached, {failed} failed"
        line += f", {blocked} not run" if blocked else ""
        lines = [line + (f", {cancelled} cancelled" if cancelled else "")]
        for row in self.failures():
            lines.append(f"  failed: {row.plan.label}: {first_line(row.error)}")
            log_path = getattr(row.error, "log_path", None)
            if log_path:
                lines.append(f"    log: {log_path}")
            else:  # a thread step: its traceback is in its FAILED status record
                lines.append(f"    traceback: {status_path(row.plan.output)}")
        return lines


def first_line(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def log_tail(error: BaseException | None, lines: int = TAIL_LINES) -> list[str]:
    """The last lines of a failed job's log as carried by its error (none for thread steps)."""
    if not isinstance(error, StepFailed):
        return []
    text = str(error).splitlines()
    return text[1:][-lines:]


class JobLogs:
    """The tail of a running job's log (its newest job folder's ``log.txt``, which the worker
    streams there), read at most every ``every`` seconds per step to keep requests low."""

    def __init__(self, every: float = 5.0, lines: int = 5) -> None:
        self.every, self.lines = every, lines
        self._seen: dict[str, tuple[float, list[str]]] = {}

    def tail(self, output: str) -> list[str]:
        now = time.monotonic()
        last = self._seen.get(output)
        if last is None or now - last[0] >= self.every:
            last = (now, self._read(output))
            self._seen[output] = last
        return last[1]

    def _read(self, output: str) -> list[str]:
        try:
            store = store_for(output)
            folders = sorted(
                str(p).rstrip("/") for p in store.fs.ls(jobs_dir(output), detail=False)
            )
            if not folders:
                return []
            newest = (
                folders[-1]
                if "://" in folders[-1] or "://" not in output
                else (f"{output.split('://', 1)[0]}://{folders[-1]}")
            )
            blob = store.read(f"{newest}/log.txt")
        except (OSError, ValueError):  # no job folder yet, or a passing store error
            return []
        if blob is None:
            return []
        return blob.data.decode(errors="replace").splitlines()[-self.lines :]


def where_of(plan: StepPlan) -> str:
    return plan.where.value + (f" ({plan.resources.describe()})" if plan.resources else "")


class PlainReporter:
    """One line per event, for logs and pipes."""

    def __init__(
        self, write: Callable[[str], None], plan_format: str = "table", points: int | None = None
    ) -> None:
        self.write, self.plan_format, self.points, self.tally = write, plan_format, points, Tally()

    def planned(self, plans: Sequence[StepPlan], dry_run: bool) -> None:
        for plan in plans:
            self.tally.rows[plan.spec.identity] = _Row(plan, plan.state.value)
        if dry_run:  # the plan is the product: stdout, not the progress stream
            print(show_plan(plans, self.plan_format), flush=True)
            if self.points:  # how the sweep merged: on the progress stream
                self.write(f"plan: {plan_line(plans, self.points)} (dry run)")
            return
        self.write(f"plan: {plan_line(plans, self.points)}")

    def started(self, plan: StepPlan) -> None:
        self.tally.rows[plan.spec.identity] = _Row(plan, "running", time.monotonic())
        self.write(f"start {plan.label} [{where_of(plan)}]")

    def finished(
        self, plan: StepPlan, end: StepEnd, seconds: float, error: BaseException | None
    ) -> None:
        self.tally.rows[plan.spec.identity] = _Row(plan, end.value, None, seconds, error)
        detail = f": {first_line(error)}" if error is not None else ""
        self.write(f"{end.value} {plan.label} ({seconds:.1f}s){detail}")
        for line in log_tail(error):
            self.write(f"  | {line}")

    def close(self) -> None:
        if any(r.state != PlanState.CACHED.value or r.seconds for r in self.tally.rows.values()):
            for line in self.tally.summary_lines():
                self.write(line)


def plan_line(plans: Sequence[StepPlan], points: int | None = None) -> str:
    """``3 steps, 1 cached, 2 to run``; for a sweep ``12 sweep points -> 15 unique steps, ...``;
    failed and blocked steps (force_run_failed=false) are counted apart."""
    count = {state: sum(p.state is state for p in plans) for state in PlanState}
    steps = f"{len(plans)} steps"
    if points:
        steps = f"{points} sweep point{'s' * (points != 1)} -> {len(plans)} unique steps"
    todo = count[PlanState.WILL_RUN] + count[PlanState.RUNNING]
    line = f"{steps}, {count[PlanState.CACHED]} cached, {todo} to run"
    for state in (PlanState.FAILED, PlanState.BLOCKED):
        line += f", {count[state]} {state.value}" if count[state] else ""
    return line


def show_plan(plans: Sequence[StepPlan], plan_format: str) -> str:
    return format_plan(plans) if plan_format == "table" else format_diagram(plans, plan_format)


class LiveReporter:
    """A rich live table: each step's state, elapsed time and where it runs; failing jobs'
    log tails below it; the summary when the run ends."""

    def __init__(
        self, stream: TextIO, plan_format: str = "table", points: int | None = None
    ) -> None:
        from rich.console import Console

        self.console = Console(file=stream)
        self.plan_format, self.points, self.tally = plan_format, points, Tally()
        self.heading = ""
        self._live: Any = None
        self._guard = threading.Lock()
        self.job_logs = JobLogs()

    def planned(self, plans: Sequence[StepPlan], dry_run: bool) -> None:
        for plan in plans:
            self.tally.rows[plan.spec.identity] = _Row(plan, plan.state.value)
        self.heading = plan_line(plans, self.points)
        if dry_run:  # the plan is the product: stdout, not the progress stream
            from rich.console import Console

            out = Console()
            if self.plan_format == "table":
                out.print(self._table(title=f"plan: {self.heading} (dry run: nothing was run)"))
            else:
                out.print(show_plan(plans, self.plan_format), markup=False, highlight=False)
            return
        from rich.live import Live

        self._live = Live(self, console=self.console, refresh_per_second=4, transient=False)
        self._live.start()

    def started(self, plan: StepPlan) -> None:
        with self._guard:
            self.tally.rows[plan.spec.identity] = _Row(plan, "running", time.monotonic())

    def finished(
        self, plan: StepPlan, end: StepEnd, seconds: float, error: BaseException | None
    ) -> None:
        with self._guard:
            self.tally.rows[plan.spec.identity] = _Row(plan, end.value, None, seconds, error)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            for line in self.tally.summary_lines():
                self.console.print(line, markup=False, highlight=False)

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        with self._guard:
            parts: list[Any] = [self._table(title=self.heading)]
            running = [r for r in self.tally.rows.values() if r.state == "running"]
            for row in running:
                if row.plan.where is not Where.THREAD:
                    tail = self.job_logs.tail(row.plan.output)
                    if tail:
                        parts.append(Text(f"{row.plan.label}: its job's log", style="bold"))
                        parts.append(Text("\n".join(tail), style="dim"))
            for row in self.tally.failures():
                tail = log_tail(row.error)
                if tail:
                    parts.append(Text(f"{row.plan.label}: last lines of its log", style="bold red"))
                    parts.append(Text("\n".join(tail), style="dim"))
        return Group(*parts)

    def _table(self, title: str | None = None) -> Any:
        from rich.table import Table

        table = Table(title=title, expand=False)
        for column in ("step", "hash", "state", "time", "where", "output / reason"):
            table.add_column(column, overflow="fold")
        now = time.monotonic()
        for row in self.tally.rows.values():
            plan = row.plan
            elapsed = row.seconds if row.seconds is not None else None
            if row.started is not None:
                elapsed = now - row.started
            done = row.state in (StepEnd.SUCCEEDED.value, StepEnd.CACHED.value, "cached")
            detail = plan.output if done else plan.reason
            if row.error is not None:
                detail = first_line(row.error)
            table.add_row(
                plan.label, plan.spec.hash, _styled(row.state),
                "" if elapsed is None else f"{elapsed:.1f}s", where_of(plan), detail,
            )  # fmt: skip
        return table


_STYLES = {
    "running": "bold yellow",
    "succeeded": "green",
    "cached": "cyan",
    "failed": "bold red",
    "dep failed": "red",
    "blocked": "red",
    "cancelled": "magenta",
}


def _styled(state: str) -> Any:
    from rich.text import Text

    return Text(state, style=_STYLES.get(state, ""))


def reporter_for(
    stream: TextIO | None = None, plan_format: str = "table", *, points: int | None = None
) -> Reporter:
    """A live display on a terminal, plain lines anywhere else. ``points``: a sweep's number
    of points, merged into the steps the plan shows."""
    stream = stream or sys.stderr
    if stream.isatty():
        return LiveReporter(stream, plan_format, points)

    def write(line: str) -> None:
        print(line, file=stream, flush=True)

    return PlainReporter(write, plan_format, points)
