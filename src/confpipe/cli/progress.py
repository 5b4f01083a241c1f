"""Progress while a run goes and its summary at the end: a live rich table on a terminal,
plain lines elsewhere.

Both reporters receive the same events from ``pipeline.run`` (see ``engine.report.Reporter``)
and keep the same ``Tally``; the plain one is the engine's ``LineReporter`` with the CLI's
plan formats and a sweep's heading. rich is imported only when a live display is drawn.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from confpipe.backends import LOG
from confpipe.cli.plan import show_plan
from confpipe.engine.outcome import Outcome
from confpipe.engine.plan import THREAD, StepPlan
from confpipe.engine.remote import log_tail
from confpipe.engine.report import (
    LineReporter,
    Tally,
    error_tail,
    first_line,
    plan_counts,
    where_of,
)
from confpipe.engine.status import newest_job_dir


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
        newest = newest_job_dir(output)
        return [] if newest is None else log_tail(f"{newest}/{LOG}", self.lines)


class PlainReporter(LineReporter):
    """One line per event, for logs and pipes; the plan in ``plan_format``."""

    def __init__(
        self, write: Callable[[str], None], plan_format: str = "table", points: int | None = None
    ) -> None:
        super().__init__(write)
        self.plan_format, self.points = plan_format, points

    def heading(self, plans: Sequence[StepPlan]) -> str:
        return plan_line(plans, self.points)

    def plan_text(self, plans: Sequence[StepPlan]) -> str:
        return show_plan(plans, self.plan_format)

    def planned(self, plans: Sequence[StepPlan], dry_run: bool) -> None:
        super().planned(plans, dry_run)
        if dry_run and self.points:  # how the sweep merged: on the progress stream
            self.write(f"plan: {self.heading(plans)} (dry run)")


def plan_line(plans: Sequence[StepPlan], points: int | None = None) -> str:
    """``3 steps, 1 cached, 2 to run``; for a sweep ``12 sweep points -> 15 unique steps, ...``."""
    steps = f"{len(plans)} steps"
    if points:
        steps = f"{points} sweep point{'s' * (points != 1)} -> {len(plans)} unique steps"
    return f"{steps}, {plan_counts(plans)}"


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
        self.tally.planned(plans)
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
            self.tally.started(plan)

    def finished(
        self, plan: StepPlan, end: Outcome, seconds: float, error: BaseException | None
    ) -> None:
        with self._guard:
            self.tally.finished(plan, end, seconds, error)

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
            running = [r for r in self.tally.rows.values() if r.state is Outcome.RUNNING]
            for row in running:
                if row.plan.where != THREAD:
                    tail = self.job_logs.tail(row.plan.output)
                    if tail:
                        parts.append(Text(f"{row.plan.label}: its job's log", style="bold"))
                        parts.append(Text("\n".join(tail), style="dim"))
            for row in self.tally.failures():
                tail = error_tail(row.error)
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
            detail = plan.output if row.state.has_result else plan.reason
            if row.error is not None:
                detail = first_line(row.error)
            table.add_row(
                plan.label, plan.spec.hash, _styled(row.state),
                "" if elapsed is None else f"{elapsed:.1f}s", where_of(plan), detail,
            )  # fmt: skip
        return table


_STYLES = {
    Outcome.RUNNING: "bold yellow",
    Outcome.SUCCEEDED: "green",
    Outcome.CACHED: "cyan",
    Outcome.FAILED: "bold red",
    Outcome.DEP_FAILED: "red",
    Outcome.BLOCKED: "red",
    Outcome.CANCELLED: "magenta",
}


def _styled(state: Outcome) -> Any:
    from rich.text import Text

    return Text(state.value, style=_STYLES.get(state, ""))


Display = PlainReporter | LiveReporter
"""A launch's reporter: either keeps the ``tally`` the manifest and a sweep's results read."""


def reporter_for(
    stream: TextIO | None = None, plan_format: str = "table", *, points: int | None = None
) -> Display:
    """A live display on a terminal, plain lines anywhere else. ``points``: a sweep's number
    of points, merged into the steps the plan shows."""
    stream = stream or sys.stderr
    if stream.isatty():
        return LiveReporter(stream, plan_format, points)

    def write(line: str) -> None:
        print(line, file=stream, flush=True)

    return PlainReporter(write, plan_format, points)


def configure_logging(reporter: Display) -> None:
    """confpipe's own log lines (lease waits, takeovers) on stderr, in step with the display."""
    log = logging.getLogger("confpipe")
    handler: logging.Handler
    if isinstance(reporter, LiveReporter):
        from rich.logging import RichHandler  # rich costs start-up: only for a live display

        handler = RichHandler(console=reporter.console, show_path=False, show_time=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("confpipe: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    # a sweeper plugin's own lines (Optuna: failed trials, the best parameters) are for the
    # user too; Hydra's logging is off (hydra_logging: none), so they'd be lost
    sweeper = logging.StreamHandler(sys.stderr)
    sweeper.setFormatter(logging.Formatter("sweeper: %(message)s"))
    plugins = logging.getLogger("hydra_plugins")
    plugins.handlers[:] = [sweeper]
    plugins.setLevel(logging.INFO)
    plugins.propagate = False
