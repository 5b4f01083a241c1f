"""The live display's table: one line a step, cut to the terminal, running steps first.

``LiveReporter`` (``confpipe.cli.progress``) draws ``board(...)`` a few times a second, and a
dry run's plan once. Each step is one line, cut (never wrapped) to the terminal's width:
its state, time, name (with its sweep point), where it runs, and its output or why it is
in that state. The hash is not repeated: a name two steps share gets six characters of
it. When the steps outnumber the terminal's lines, a window shows the running ones first,
then the failed, the stopped, the waiting, the succeeded (latest first) and the cached;
the last line counts the rest by state. rich is imported only when a board is drawn.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confpipe.engine.outcome import Outcome
from confpipe.engine.plan import StepPlan
from confpipe.engine.report import Row, first_line, where_of

__all__ = ["Board", "window"]

GAP = "  "
STATE_WIDTH = 10  # "dep failed"
TIME_WIDTH = 6  # "999.9s", "16m40s"
WHERE_WIDTH = 24  # "local job (cpu=2, memory…": on a wide terminal; on 80 columns 10
DETAIL_WIDTH = 24  # at least, for the output or reason, when the step's name is long
RESERVED_LINES = 8  # of the terminal's: the title, the header, the count of hidden steps,
# and a few for the lines steps print above the table

_STYLES = {
    Outcome.RUNNING: "bold yellow",
    Outcome.SUCCEEDED: "green",
    Outcome.CACHED: "cyan",
    Outcome.FAILED: "bold red",
    Outcome.DEP_FAILED: "red",
    Outcome.BLOCKED: "red",
    Outcome.CANCELLED: "magenta",
}


@dataclass(frozen=True)
class Board:
    """The table to draw: a title and rows; ``points`` labels sweep rows by step identity;
    ``timed`` shows each step's time (not in a dry run's plan); ``height`` caps the lines
    (None: all)."""

    title: str
    rows: Sequence[Row]
    points: Mapping[str, str]
    timed: bool = True
    height: int | None = None
    _seen: dict[tuple[str, str], int] | None = field(default=None, init=False, compare=False)

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        width = options.max_width
        lines = None if self.height is None else self.height - RESERVED_LINES
        shown, hidden = window(self.rows, lines, ranked=self.timed)
        labels = self._labels(shown)
        step_width = max([4, *(len(label) for label in labels)])
        fixed = STATE_WIDTH + len(GAP) + (TIME_WIDTH + len(GAP) if self.timed else 0)
        where_width = min(max(9, (width - fixed) // 7), WHERE_WIDTH)
        wheres = [_where(row, where_width) for row in shown]
        where_width = min(where_width, max([5, *(len(w) for w in wheres)]))
        # the step's name gets what it needs, as long as DETAIL_WIDTH is left; the detail the rest
        room = width - fixed - len(GAP) - where_width - len(GAP) - DETAIL_WIDTH
        step_width = min(step_width, max(12, room))
        detail_width = width - fixed - step_width - len(GAP) - where_width - len(GAP)
        if detail_width < 16:  # too narrow for where it runs too: the output matters more
            where_width, detail_width = 0, width - fixed - step_width - len(GAP)
        yield _line(Text(self.title, style="bold"), width)
        head = ["state", *(["time"] if self.timed else []), "step"]
        head += ["where"] if where_width else []
        widths = self._widths(step_width, where_width)
        cells = [_cut(h, w) for h, w in zip(head, widths, strict=True)]
        yield _line(Text(GAP.join(cells) + GAP + "output / reason", style="bold dim"), width)
        now = time.monotonic()
        for row, label, where in zip(shown, labels, wheres, strict=True):
            text = Text()
            word, style = _state(row)
            text.append(_cut(word, STATE_WIDTH), style=style)
            if self.timed:
                text.append(GAP + _cut(_elapsed(row, now), TIME_WIDTH, right=True))
            name, gap, point = _cut(label, step_width).partition("  ")
            text.append(GAP + name)
            text.append(gap + point, style="dim")  # the sweep point, or the padding
            if where_width:
                text.append(GAP + _cut(where, where_width))
            text.append(GAP + _detail(row, self._why(row), detail_width))
            yield _line(text, width)
        if hidden:
            counts = ", ".join(f"{n} {word}" for word, n in hidden.items())
            more = sum(hidden.values())
            yield _line(Text(f"… and {more} more: {counts}", style="dim"), width)

    def _widths(self, step_width: int, where_width: int) -> list[int]:
        widths = [STATE_WIDTH, *([TIME_WIDTH] if self.timed else []), step_width]
        return widths + ([where_width] if where_width else [])

    def _labels(self, rows: Sequence[Row]) -> list[str]:
        """Each row's step: its name and its sweep point after two spaces (``train
        lr=3e-4``); where that is not enough to tell two steps apart, six characters of the
        hash too (``train-04a62e``)."""
        labels = []
        for row in rows:
            name, point = self._name(row.plan)
            labels.append(f"{name}  {point}" if point else name)
        return labels

    def _name(self, plan: StepPlan) -> tuple[str, str]:
        """The step's name (with six characters of its hash if needed) and its point."""
        if self._seen is None:
            seen: dict[tuple[str, str], int] = {}
            for row in self.rows:
                key = (row.plan.spec.name, self.points.get(row.plan.spec.identity, ""))
                seen[key] = seen.get(key, 0) + 1
            object.__setattr__(self, "_seen", seen)
        assert self._seen is not None
        spec, point = plan.spec, self.points.get(plan.spec.identity, "")
        name = spec.name if self._seen[spec.name, point] == 1 else f"{spec.name}-{spec.hash[:6]}"
        return name, point

    def _why(self, row: Row) -> str:
        """Why a row is stopped: ``not run: dependency train (lr=3) failed`` (the failed
        step named as its own row names it)."""
        if row.failed_dep is None:
            return row.why
        name, point = self._name(row.failed_dep)
        own = self.points.get(row.plan.spec.identity, "")
        return f"not run: dependency {name}{f' ({point})' if point and point != own else ''} failed"


def window(
    rows: Sequence[Row], lines: int | None, *, ranked: bool = True
) -> tuple[list[Row], dict[str, int]]:
    """The rows to show, at most ``lines`` of them (None: all), the most telling first (or
    in plan order if not ``ranked``), and how many of each state were left out."""
    order = [r for _, r in sorted(enumerate(rows), key=lambda i: _rank(*i))] if ranked else rows
    if lines is None or len(rows) <= lines:
        return list(order), {}
    lines = max(lines, 1)
    shown, left = list(order[:lines]), order[lines:]
    hidden: dict[str, int] = {}
    for row in left:
        word = _state(row)[0]
        hidden[word] = hidden.get(word, 0) + 1
    return shown, hidden


def _rank(position: int, row: Row) -> tuple[int, float]:
    """Running first (longest running first), then failed, stopped, waiting (in plan order),
    succeeded (latest first), cached."""
    if row.started is not None:
        return (0, row.started)
    if row.state is Outcome.FAILED:
        return (1, position)
    if row.state.stopped:
        return (2, position)
    if row.seconds is None and row.state is not Outcome.CACHED:  # not started yet
        return (3, position)
    if row.state is Outcome.SUCCEEDED:
        return (4, -position)
    return (5, position)


def _state(row: Row) -> tuple[str, str]:
    """The word shown for the row's state, and its style."""
    if row.stopping:
        return "stopping", "magenta"
    if row.state is Outcome.RUNNING and row.started is None:  # planned: another launch has it
        return "held", "yellow"
    return row.state.value, _STYLES.get(row.state, "")


def _where(row: Row, width: int) -> str:
    """``local job (cpu=2)``, or ``local job`` where that is too wide."""
    where = where_of(row.plan)
    return where if len(where) <= width else row.plan.where


def _elapsed(row: Row, now: float) -> str:
    seconds = row.seconds if row.started is None else now - row.started
    if seconds is None or (row.state.stopped and not seconds):  # never started
        return ""
    if seconds < 1000:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 100 else f"{minutes // 60}h{minutes % 60:02d}m"


def _detail(row: Row, why: str, width: int) -> str:
    """The row's output (a path: cut on the left, where it's least telling), its error, or
    why it is in its state."""
    if row.error is not None:
        return _cut(first_line(row.error), width)
    if why:
        return _cut(why, width)
    if row.state.has_result:
        return _cut(row.plan.output, width, right=False, left=True)
    return _cut(row.plan.reason, width)


def _cut(text: str, width: int, *, right: bool = False, left: bool = False) -> str:
    """``text`` in exactly ``width`` characters: padded, or cut with ``…`` (on the left for
    ``left``); right-aligned for ``right``."""
    if width <= 0:
        return ""
    if len(text) > width:
        text = "…" + text[len(text) - width + 1 :] if left else text[: width - 1] + "…"
    return text.rjust(width) if right else text.ljust(width)


def _line(text: Any, width: int) -> Any:
    """One line, cut to ``width``: never wrapped."""
    text.no_wrap = True
    text.overflow = "ellipsis"
    text.truncate(width, overflow="ellipsis")
    text.rstrip()
    return text
