"""How a sweep ends: one line naming every failed point, and one table of an adaptive
sweep's trials.

A sweeper hands the launcher one batch of points at a time (Optuna: ``n_jobs`` trials);
the launcher (``confpipe.cli.sweep``) reports each batch's run, and notes here what only
the whole sweep can say. The CLI (``confpipe.cli.main``) ends a sweep with ``end()``: the
table of every trial, best first, for an adaptive sweeper, then one line with the count
and the failed points (exit 1), whichever launcher ran them and whether or not the sweeper
carried on past them. What is noted is the process's: one CLI run is one sweep.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from confpipe.cli import results
from confpipe.errors import RunFailed, one_line
from confpipe.redact import redact_overrides

__all__ = ["end", "failed_points", "note_failed", "point_names", "study"]

SHOWN_FAILURES = 3  # failed points named in the last line; the others are counted

# of every sweep of this process: see failed_points(); by the point's overrides
_failed_points: dict[tuple[str, ...], str] = {}


def failed_points() -> list[str]:
    """Every failed point of this process's sweeps (``lr=3: train: ValueError: ...``, by
    its swept overrides)."""
    return list(_failed_points.values())


def note_failed(returns: Sequence[JobReturn]) -> None:
    """Remember the failed points among ``returns`` (once each, whichever launcher ran
    them), named by what the sweep varies."""
    every = [list(r.overrides or ()) for r in returns]
    for ret, overrides, name in zip(returns, every, point_names(every), strict=True):
        if ret.status is JobStatus.FAILED and tuple(overrides) not in _failed_points:
            named = name or " ".join(redact_overrides(overrides)) or "(base)"
            _failed_points[tuple(overrides)] = f"{named}: {_error_of(ret)}"


def point_names(every: Sequence[Sequence[str]]) -> list[str]:
    """Each point (``every``: each one's overrides) by what the sweep varies in it:
    ``lr=3e-4 seed=1``, a key by its last part where that is unambiguous; "" where no
    override varies."""
    counts = Counter(o for own in every for o in set(own))  # in how many points, each
    varied = [[o for o in own if counts[o] < len(every)] for own in every]
    keys = {o.partition("=")[0] for v in varied for o in v}
    short = {k: k.rsplit(".", 1)[-1].lstrip("+~") for k in keys}
    unique = {k for k in keys if sum(short[k] == short[o] for o in keys) == 1}
    names = []
    for overrides in varied:  # env values hidden once what varies is known
        parts = [o.partition("=") for o in redact_overrides(overrides)]
        names.append(" ".join(f"{short[k] if k in unique else k}={v}" for k, _, v in parts))
    return names


def _error_of(ret: JobReturn) -> str:
    """A failed point's error in a line: its failed steps' errors, or what it raised."""
    err = ret._return_value  # read directly: the property prints Hydra's "Error executing job"
    if isinstance(err, RunFailed):
        failed = "; ".join(f"{name}: {one_line(e)}" for name, e in err.failures.items())
        return failed or f"not run: {', '.join(sorted(err.dep_failed))}"
    return one_line(err) if isinstance(err, BaseException) else str(err)


@dataclass
class Study:
    """An adaptive sweep's trials, every batch's, with each one's objective value."""

    rows: list[results.PointResult] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    sweeper: str = ""
    objective: str = ""
    maximize: bool = False

    def add(
        self, rows: Sequence[results.PointResult], sweeps: Sequence[Mapping[str, Any]],
        sweeper: str, hydra_cfg: Any,
    ) -> None:  # fmt: skip
        """A batch's rows; ``sweeps``: each point's ``sweep`` settings (its objective)."""
        direction = OmegaConf.select(hydra_cfg, "sweeper.direction", default="minimize")
        if OmegaConf.is_list(direction) or isinstance(direction, list):
            direction = direction[0] if len(direction) else "minimize"
        self.maximize = "max" in str(direction).lower()
        self.sweeper = sweeper
        for row, sweep in zip(rows, sweeps, strict=True):
            self.objective = self.objective or ", ".join(results.names(sweep.get("objective")))
            self.rows.append(row)
            self.values.append(_value(row, sweep))

    def table(self) -> Any:
        """Every trial, best first; the ones without a value (failed) last."""
        sign = -1.0 if self.maximize else 1.0
        order = sorted(
            range(len(self.rows)),
            key=lambda i: (self.values[i] is None, sign * (self.values[i] or 0.0), i),
        )
        way = "maximized" if self.maximize else "minimized"
        title = f"{len(self.rows)} trials of {self.sweeper}, best first ({self.objective} {way})"
        return results.table([self.rows[i] for i in order], title, label="trial")


def _value(row: results.PointResult, sweep: Mapping[str, Any]) -> float | None:
    """The trial's objective (the first, if several); None if it has none."""
    if not row.finished:
        return None
    try:
        value = results.objective_of(row, sweep)
    except ValueError:
        return None
    if isinstance(value, list):
        return value[0] if value else None
    return value


study = Study()


def end() -> int:
    """End the sweep: the study's table (an adaptive sweep's), then one line naming the
    failed points; the exit code (1 if a point failed, else 0)."""
    if study.rows:
        from rich.console import Console  # rich costs a cached run's start-up: only when shown

        Console(file=sys.stderr, width=None if sys.stderr.isatty() else 200).print(study.table())
    failed = failed_points()
    if not failed:
        return 0
    shown = "; ".join(failed[:SHOWN_FAILURES])
    more = f" (and {len(failed) - SHOWN_FAILURES} more)" if len(failed) > SHOWN_FAILURES else ""
    points = f"{len(failed)} sweep point{'s' * (len(failed) != 1)}"
    print(f"confpipe: {points} failed: {shown}{more}", file=sys.stderr)
    return RunFailed.exit_code
