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
import dataclasses
import logging
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from confpipe.cli.board import Board
from confpipe.cli.plan import show_plan
from confpipe.engine.outcome import Outcome
from confpipe.engine.plan import StepPlan
from confpipe.engine.report import LineReporter, Tally, plan_counts, stopping_line, where_of


@dataclass(frozen=True)
class Points:
    """A sweep's points as the display tells them: how many were merged into the run, and
    the label of each step's point by identity (``lr=3e-4``; ``shared by 3 points``)."""

    count: int
    labels: Mapping[str, str] = field(default_factory=dict)


class PlainReporter(LineReporter):
    """One line per event, for logs and pipes: the plan in ``plan_format``, a sweep step's
    point after its name."""

    def __init__(
        self, write: Callable[[str], None], plan_format: str = "table", points: Points | None = None
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

    def started(self, plan: StepPlan) -> None:
        point = self.points.labels.get(plan.spec.identity) if self.points else None
        if point is None:
            super().started(plan)
            return
        self.tally.started(plan)
        self.write(f"start {plan.label} ({point}) [{where_of(plan)}]")


def plan_line(plans: Sequence[StepPlan], points: Points | None = None) -> str:
    """``3 steps, 1 cached, 2 to run``; for a sweep ``12 sweep points -> 15 unique steps, ...``."""
    return f"{_steps(len(plans), points)}, {plan_counts(plans)}"


def _steps(steps: int, points: Points | None) -> str:
    """``3 steps``; for a sweep ``12 sweep points -> 15 unique steps``."""
    if points:
        return f"{points.count} sweep point{'s' * (points.count != 1)} -> {steps} unique steps"
    return f"{steps} steps"


class LiveReporter:
    """A live table, one line a step, fitted to the terminal (``confpipe.cli.board``): each
    step's state, time, where it runs and its output or reason, running steps first; the
    lines steps print above it; the summary when the run ends."""

    BATCH_EVERY = 0.2  # seconds between prints of the steps' lines above the table

    def __init__(
        self, stream: TextIO, plan_format: str = "table", points: Points | None = None
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
                title = f"dry run, the plan: {self.heading}"
                out.print(self._board(title, timed=False))
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

    def stopping(self, running: Sequence[StepPlan], grace: float) -> None:
        """Say at once that the run stops, and show the steps it waits for as stopping."""
        with self._guard:
            self.tally.stopping(running)
        self._flush_lines()
        self.console.print(stopping_line(len(running), grace), markup=False, highlight=False)
        if self._live is not None:
            self._live.refresh()

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
            steps = len(self.tally.rows)
            count = (
                f"{self.points.count} points, {steps} steps" if self.points else f"{steps} steps"
            )
            title = f"{count}: {self.tally.progress()}"
            return self._board(title, height=self.console.height)

    def _board(self, title: str, *, timed: bool = True, height: int | None = None) -> Board:
        """The steps as they are now (a copy: the run goes on while it is drawn)."""
        rows = [dataclasses.replace(row) for row in self.tally.rows.values()]
        labels = self.points.labels if self.points else {}
        return Board(title, rows, labels, timed, height)


Display = PlainReporter | LiveReporter
"""A launch's reporter: either keeps the ``tally`` the manifest and a sweep's results read."""


def reporter_for(
    stream: TextIO | None = None, plan_format: str = "table", *, points: Points | None = None
) -> Display:
    """A live display on a terminal, plain lines anywhere else. ``points``: a sweep's points,
    merged into the steps the plan shows."""
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
