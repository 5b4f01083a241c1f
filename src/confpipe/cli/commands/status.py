"""``confpipe status``: one row per step of the config named — state, when, how long, where,
output — and a line counting the states.

A rich table on a terminal wide enough for it; plain aligned columns otherwise and when
piped (rich is imported only for a terminal); ``--json`` gives the rows as JSON. STEP
names, if given, limit the rows.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from confpipe.cli.commands import words
from confpipe.cli.commands.args import Request
from confpipe.cli.commands.target import Target
from confpipe.cli.history import StepHistory, gather
from confpipe.engine.status import StepState

__all__ = ["COLUMNS", "rows", "run", "summary"]

COLUMNS = ("step", "state", "ran at", "took", "where", "output")


def run(target: Target, request: Request) -> int:
    plans = target.pick(request.steps) if request.steps else target.plans
    histories = gather(plans, results=False, infos=False)  # status records say where
    table = rows(histories)
    if request.json:
        print(json.dumps([_record(h) for h in histories], indent=1))
        return 0
    if sys.stdout.isatty():
        _rich(table, target.title)
    else:
        print(plain(table))
    print(summary(histories))
    return 0


def rows(histories: Sequence[StepHistory]) -> list[tuple[str, ...]]:
    """One row of COLUMNS per step."""
    return [
        (
            h.plan.label,
            words.state(h),
            words.local_time(None if h.status is None else h.status.started or h.status.time),
            words.took(h),
            words.where(h),
            words.shown_path(h.plan.output),
        )
        for h in histories
    ]


def plain(table: Sequence[tuple[str, ...]]) -> str:
    """The rows under COLUMNS, aligned with spaces (the last column as it is)."""
    lines = [COLUMNS, *table]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)), line[-1]])
        for line in lines
    )


def summary(histories: Sequence[StepHistory]) -> str:
    """``5 steps: 3 SUCCESS, 1 FAILED, 1 never run; 1 code changed``."""
    counts = Counter(
        words.NEVER_RUN if h.status is None else h.status.state.value for h in histories
    )
    order = [*(s.value for s in StepState), words.NEVER_RUN]
    parts = [f"{counts[state]} {state}" for state in order if counts[state]]
    changed = sum(1 for h in histories if h.plan.code_note)
    tail = f"; {changed} code changed (bump `version` to re-run)" if changed else ""
    noun = "step" if len(histories) == 1 else "steps"
    return f"{len(histories)} {noun}: {', '.join(parts)}{tail}"


def _rich(table: Sequence[tuple[str, ...]], title: str) -> None:
    from rich import box  # rich: imported only for a terminal
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text  # cells are text, not markup

    console = Console()
    needed = sum(max(len(r[i]) for r in [COLUMNS, *table]) + 3 for i in range(len(COLUMNS)))
    if console.width < needed:  # folded paths can't be copied: columns as for a pipe
        print(plain(table))
        return
    shown = Table(title=Text(f"status: {title}"), box=box.SIMPLE_HEAD, pad_edge=False)
    for column in COLUMNS:
        shown.add_column(column, no_wrap=True)
    styles = {"SUCCESS": "green", "FAILED": "red", "DEP_FAILED": "yellow", "RUNNING": "cyan"}
    for row in table:
        style = styles.get(row[1].split(" ", 1)[0], "dim")
        shown.add_row(*(Text(cell, style=style if i == 1 else "") for i, cell in enumerate(row)))
    console.print(shown)


def _record(history: StepHistory) -> dict[str, Any]:
    """A row as JSON: the same facts, times as seconds since the epoch."""
    status, plan = history.status, history.plan
    return {
        "step": plan.label,
        "name": plan.spec.name,
        "hash": plan.spec.hash,
        "state": None if status is None else status.state.value,
        "notes": words.notes(history),
        "started": None if status is None else status.started,
        "time": None if status is None else status.time,
        "ran_for": history.ran_for,
        "where": words.where(history),
        "output": plan.output,
        "code_note": plan.code_note,
    }
