"""Progress while a run goes and its summary at the end: a live rich table on a terminal,
plain lines elsewhere.

Both reporters receive the same events from ``pipeline.run`` (see ``engine.report.Reporter``)
and keep the same ``Tally``; the plain one is the engine's ``LineReporter`` with the CLI's
plan formats and a sweep's heading. Each line a step prints is shown prefixed with its name
(``tokenize | read 3 files``): a line of its own off a terminal, printed above the live table
on one (in batches, every ``LiveReporter.BATCH_EVERY`` seconds, so a chatty step doesn't
redraw the table per line). rich is imported only when a live display is drawn.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from confpipe.cli.plan import show_plan
from confpipe.engine.outcome import Outcome
from confpipe.engine.plan import StepPlan
from confpipe.engine.report import LineReporter, Tally, first_line, plan_counts, where_of


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
    """A rich live table: each step's state, elapsed time and where it runs; the lines steps
    print above it; the summary when the run ends."""

    BATCH_EVERY = 0.2  # seconds between prints of the steps' lines above the table

    def __init__(
        self, stream: TextIO, plan_format: str = "table", points: int | None = None
    ) -> None:
        from rich.console import Console

        self.console = Console(file=stream)
        self.plan_format, self.points, self.tally = plan_format, points, Tally()
        self.heading = ""
        self._live: Any = None
        self._guard = threading.Lock()
        self._lines: list[str] = []  # steps' lines not printed yet (guarded by _guard)
        self._stop = threading.Event()
        self._printer: threading.Thread | None = None

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
        self._printer = threading.Thread(target=self._print_lines, name="confpipe-lines")
        self._printer.daemon = True
        self._printer.start()

    def started(self, plan: StepPlan) -> None:
        with self._guard:
            self.tally.started(plan)

    def step_output(self, plan: StepPlan, line: str) -> None:
        with self._guard:
            self._lines.append(f"{plan.label} | {line}")

    def _print_lines(self) -> None:
        while not self._stop.wait(self.BATCH_EVERY):
            self._flush_lines()

    def _flush_lines(self) -> None:
        """Print the steps' lines gathered since the last time, at once, above the table."""
        with self._guard:
            lines, self._lines = self._lines, []
        if lines:
            from rich.text import Text

            self.console.print(Text("\n".join(lines)), soft_wrap=True)

    def finished(
        self, plan: StepPlan, end: Outcome, seconds: float, error: BaseException | None
    ) -> None:
        with self._guard:
            self.tally.finished(plan, end, seconds, error)

    def close(self) -> None:
        if self._printer is not None:
            self._stop.set()
            self._printer.join()
            self._printer = None
        self._flush_lines()
        if self._live is not None:
            self._live.stop()
            self._live = None
            for line in self.tally.summary_lines():
                self.console.print(line, markup=False, highlight=False)

    def __rich__(self) -> Any:
        with self._guard:
            return self._table(title=self.heading)

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
    """confpipe's own log lines (lease waits, takeovers) on stderr, in step with the display;
    with ``hydra.verbose=true`` its debug lines too (``hydra.verbose=NAME`` or a list: those
    loggers'). A log file Hydra's job logging opened (``hydra/job_logging=default``) is
    closed, and removed if nothing was written to it: each step keeps its own log."""
    _no_hydra_log_files()
    log = logging.getLogger("confpipe")
    handler: logging.Handler
    if isinstance(reporter, LiveReporter):
        from rich.logging import RichHandler  # rich costs start-up: only for a live display

        handler = RichHandler(console=reporter.console, show_path=False, show_time=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("confpipe: %(message)s"))
    log.handlers[:] = [handler]
    verbose = _verbose()
    debug = verbose is True or (isinstance(verbose, list) and "confpipe" in verbose)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False
    # a sweeper plugin's own lines (Optuna: failed trials, the best parameters) are for the
    # user too; Hydra's logging is off (hydra_logging: none), so they'd be lost
    sweeper = logging.StreamHandler(sys.stderr)
    sweeper.setFormatter(logging.Formatter("sweeper: %(message)s"))
    plugins = logging.getLogger("hydra_plugins")
    plugins.handlers[:] = [sweeper]
    plugins.setLevel(logging.INFO)
    plugins.propagate = False


def _verbose() -> bool | list[str]:
    """``hydra.verbose``: True, or the names of the loggers it makes verbose."""
    from hydra.core.hydra_config import HydraConfig  # loaded already: the CLI is a Hydra app

    if not HydraConfig.initialized():
        return False
    verbose = HydraConfig.get().verbose
    if isinstance(verbose, bool):
        return verbose
    return [verbose] if isinstance(verbose, str) else [str(name) for name in verbose]


def _no_hydra_log_files() -> None:
    """Close the root logger's file handlers (Hydra's job logging makes one in the working
    folder); remove their files if still empty."""
    import os

    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
            with contextlib.suppress(OSError):
                if os.path.getsize(handler.baseFilename) == 0:
                    os.unlink(handler.baseFilename)
