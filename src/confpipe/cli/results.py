"""Results at the end of a launch: a sweep's, one row per point, shown as a table and written
as CSV and JSON; a single run's, its one row and each last step's JSON result.

A row holds the point's own overrides (what it sweeps), how it ended (``ran``: a step of it
ran; ``cached``: all of it was cached; ``failed``; ``not run``: blocked by a failure) and its
metrics: values of its steps' results named ``STEP.KEY`` (``sweep.metrics``; by default
every number the point's last steps returned). ``sweep.objective`` names the metric(s) a
point returns to the sweeper, so that an adaptive sweeper (Optuna) can drive the search.
Each result record is read once, however many points share the step. A single run is a
sweep of one point: ``run_results`` gives its row (the table is the sweep's) and the values of
its last steps, which ``compact`` shows on a line each.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from confpipe.engine.outcome import Outcome
from confpipe.engine.report import first_line
from confpipe.engine.spec import StepSpec
from confpipe.errors import ConfigError, did_you_mean
from confpipe.redact import redact_overrides
from confpipe.storage import store_for

__all__ = [
    "Point", "PointResult", "PointStatus", "check_names", "compact", "leaves", "objective_of",
    "results", "run_results", "write",
]  # fmt: skip

TABLE_METRICS = 6  # metric columns the table shows; the CSV and JSON have every one
COMPACT_CHARS = 300  # of a step's result shown on one line at the end of a run


@dataclass(frozen=True)
class Point:
    """A sweep point: its own overrides, its compiled steps and its ``sweep`` settings (a
    sweep over experiments has each experiment's metrics)."""

    overrides: list[str]
    steps: list[StepSpec]
    sweep: Mapping[str, Any]


class PointStatus(Enum):
    """How a sweep point ended, from its steps' outcomes; the value is what the table shows."""

    RAN = "ran"  # every step succeeded, and some ran now
    CACHED = "cached"  # every step had succeeded earlier
    FAILED = "failed"  # a step of it failed
    NOT_RUN = "not run"  # a step of it was stopped: a dependency failed, or Ctrl-C
    SKIPPED = "skipped"  # run_only left out all of it
    PARTIAL = "partial"  # run_only left out some of it


@dataclass
class PointResult:
    overrides: list[str]
    status: PointStatus
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # the failing step and the first line of its error

    @property
    def finished(self) -> bool:
        """Every step of the point succeeded (now or earlier): it has metrics."""
        return self.status in (PointStatus.RAN, PointStatus.CACHED)

    def as_dict(self) -> dict[str, Any]:
        return {
            "overrides": self.overrides,
            "status": self.status.value,
            "metrics": self.metrics,
            "error": self.error,
        }


def names(value: Any) -> list[str]:
    """``sweep.metrics`` / ``sweep.objective`` as a list of ``STEP.KEY`` names (``STEP``
    alone: the step's whole result, for a step that returns a number)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def check_names(sweep: Mapping[str, Any], steps: Iterable[str]) -> None:
    """Each ``sweep.metrics`` / ``sweep.objective`` entry must name a step: checked before
    anything runs (the keys of its result are known only once it ran)."""
    known = sorted(set(steps))
    for key in ("metrics", "objective"):
        for i, name in enumerate(names(sweep.get(key))):
            where = f"sweep.{key}" + (f"[{i}]" if not isinstance(sweep.get(key), str) else "")
            step = name.split(".", 1)[0]
            if step not in known:
                raise ConfigError(
                    f"{where}: {name!r} names no step{did_you_mean(step, known)}; use STEP.KEY "
                    f"of a step's result, e.g. {known[-1]}.loss (steps: {', '.join(known)})"
                )


End = tuple[Outcome, str, BaseException | None]
"""How a step ended, its output and its error, as the run's tally has them."""


def results(points: Sequence[Point], ends: Mapping[str, End], load: Any) -> list[PointResult]:
    """One PointResult per point. ``ends``: step identity -> End; ``load(output)`` reads a
    succeeded step's result value."""
    swept = _swept(points)
    loaded: dict[str, Any] = {}

    def value_of(spec: StepSpec) -> Any:
        if spec.identity not in loaded:
            state, output, _ = ends[spec.identity]
            loaded[spec.identity] = load(output) if state.has_result else None
        return loaded[spec.identity]

    rows = []
    for point in points:
        shown = redact_overrides(o for o in point.overrides if o in swept)  # env values hidden
        row = PointResult(shown, _status(point, ends))
        failed = [
            s for s in point.steps if s.identity in ends and ends[s.identity][0] is Outcome.FAILED
        ]
        if failed:
            row.error = f"{failed[0].name}: {first_line(ends[failed[0].identity][2])}"
        by_name = {s.name: s for s in point.steps if s.identity in ends}
        sweep = point.sweep
        wanted = list(dict.fromkeys(names(sweep.get("metrics")) + names(sweep.get("objective"))))
        if row.finished:
            for name in wanted or _leaf_metrics(point, by_name, value_of):
                step, _, key = name.partition(".")
                row.metrics[name] = (
                    _lookup(value_of(by_name[step]), key) if step in by_name else None
                )
            try:  # a point without its objective value fails: say why in its row
                objective_of(row, sweep)
            except ValueError as err:
                row.error = str(err)
        rows.append(row)
    return rows


def run_results(
    point: Point, ends: Mapping[str, End], load: Any
) -> tuple[PointResult, list[tuple[StepSpec, Any]]]:
    """A single run's results: its row, as a sweep of one point would have it, and the value
    of each of its last steps that has one (no step of the run depends on them). Each result
    record is read once."""
    loaded: dict[str, Any] = {}

    def once(output: str) -> Any:
        if output not in loaded:
            loaded[output] = load(output)
        return loaded[output]

    [row] = results([point], ends, once)
    values = [
        (spec, once(ends[spec.identity][1]))
        for spec in leaves(point.steps)
        if spec.identity in ends and ends[spec.identity][0].has_result
    ]
    return row, values


def leaves(steps: Sequence[StepSpec]) -> list[StepSpec]:
    """The steps no other of ``steps`` depends on: a run's last steps, in ``steps`` order."""
    used = {d.identity for s in steps for d in s.dependencies}
    return [s for s in steps if s.identity not in used]


def compact(value: Any, limit: int = COMPACT_CHARS) -> str:
    """``value`` as one line of JSON, at most ``limit`` characters: long strings, lists and
    mappings are cut short first (``"...(+12 more)"``), then the line itself."""
    text = json.dumps(_shortened(value), default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shortened(value: Any, items: int = 8, chars: int = 60) -> Any:
    if isinstance(value, str):
        return value if len(value) <= chars else value[: chars - 3] + "..."
    if isinstance(value, Mapping):
        pairs = list(value.items())
        out = {str(k): _shortened(v, items, chars) for k, v in pairs[:items]}
        if len(pairs) > items:
            out["..."] = f"+{len(pairs) - items} more"
        return out
    if isinstance(value, list | tuple):
        shown = [_shortened(v, items, chars) for v in value[:items]]
        return [*shown, f"...(+{len(value) - items} more)"] if len(value) > items else shown
    return value


def unreported(points: Sequence[Point], rows: Sequence[PointResult]) -> list[str]:
    """The ``sweep.metrics`` no finished point that asks for them has a value for (a
    misspelled key, likely)."""
    asked: dict[str, list[PointResult]] = {}
    for point, row in zip(points, rows, strict=True):
        if row.finished:
            for name in names(point.sweep.get("metrics")):
                asked.setdefault(name, []).append(row)
    return [n for n, done in asked.items() if all(r.metrics.get(n) is None for r in done)]


def objective_of(row: PointResult, sweep: Mapping[str, Any]) -> float | list[float] | None:
    """The point's objective value(s) for the sweeper; None when no objective is set.

    Raises ValueError naming the metric when the point has no number under it."""
    wanted = names(sweep.get("objective"))
    if not wanted:
        return None
    values = []
    for name in wanted:
        value = row.metrics.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(
                f"sweep.objective: {name} is {value!r} for point {' '.join(row.overrides)}: "
                "name a number the step returns (its result keys are in the results table)"
            )
        values.append(float(value))
    return values[0] if isinstance(sweep.get("objective"), str) else values


def write(rows: Sequence[PointResult], stem: str) -> tuple[str, str]:
    """``{stem}.csv`` (a column per metric) and ``{stem}.json``; returns both paths."""
    metric_names = _metric_names(rows)
    out = io.StringIO()
    table = csv.writer(out)
    table.writerow(["overrides", "status", *metric_names, "error"])
    for row in rows:
        values = [row.metrics.get(k) for k in metric_names]  # full precision: data, not display
        table.writerow([" ".join(row.overrides), row.status.value, *values, row.error])
    store = store_for(stem)
    paths = (f"{stem}.csv", f"{stem}.json")
    store.write(paths[0], out.getvalue().encode())
    body = json.dumps([row.as_dict() for row in rows], indent=1, default=str)
    store.write(paths[1], body.encode())
    return paths


def table(rows: Sequence[PointResult], title: str, label: str = "point") -> Any:
    """The rows as a rich Table: the first TABLE_METRICS metrics (the files have them all);
    ``label`` heads the column of each row's overrides."""
    from rich.table import Table  # rich costs a cached run's start-up: only when shown
    from rich.text import Text  # cells are text: an override like paths=[/a] is not markup

    metric_names = _metric_names(rows)
    shown_names = metric_names[:TABLE_METRICS]
    if len(metric_names) > len(shown_names):
        title += (
            f" ({len(shown_names)} of {len(metric_names)} metrics; the files have all; "
            "choose with sweep.metrics=[STEP.KEY,...])"
        )
    shown = Table(title=Text(title), expand=False)
    shown.add_column(Text(label), no_wrap=True)
    shown.add_column(Text("status"), no_wrap=True)
    for name in shown_names:
        shown.add_column(Text(name), overflow="fold")
    errors = any(row.error for row in rows)
    if errors:
        shown.add_column("error", overflow="fold")
    for row in rows:
        cells = [" ".join(row.overrides) or "(base)", row.status.value]
        cells += [_cell(row.metrics.get(k)) for k in shown_names]
        shown.add_row(*map(Text, [*cells, *([row.error] if errors else [])]))
    return shown


def _metric_names(rows: Sequence[PointResult]) -> list[str]:
    """Every metric of the rows, in first-seen order: the columns."""
    return list(dict.fromkeys(k for row in rows for k in row.metrics))


def _swept(points: Sequence[Point]) -> set[str]:
    """The overrides that differ between points (all of them for a single point)."""
    if len(points) < 2:
        return {o for p in points for o in p.overrides}
    common = set(points[0].overrides).intersection(*(p.overrides for p in points[1:]))
    return {o for p in points for o in p.overrides if o not in common}


def _status(point: Point, ends: Mapping[str, End]) -> PointStatus:
    states = [ends[s.identity][0] for s in point.steps if s.identity in ends]
    if not states:
        return PointStatus.SKIPPED
    if len(states) < len(point.steps):
        return PointStatus.PARTIAL
    if Outcome.FAILED in states:
        return PointStatus.FAILED
    if any(state.stopped for state in states):
        return PointStatus.NOT_RUN
    return PointStatus.RAN if Outcome.SUCCEEDED in states else PointStatus.CACHED


def _leaf_metrics(point: Point, by_name: Mapping[str, StepSpec], value_of: Any) -> list[str]:
    """``STEP.KEY`` of each number the point's last steps (no step of it depends on) returned."""
    last = {s.identity for s in leaves(point.steps)}
    found = []
    for name, spec in by_name.items():
        if spec.identity not in last:
            continue
        value = value_of(spec)
        if isinstance(value, Mapping):
            found += [f"{name}.{k}" for k, v in value.items() if _number(v)]
        elif _number(value):
            found.append(name)
    return found


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _lookup(value: Any, key: str) -> Any:
    """``value[k1][k2]...`` for ``key`` = ``k1.k2``; the value itself for an empty key."""
    for part in key.split(".") if key else []:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
