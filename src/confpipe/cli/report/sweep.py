"""The run report's sweep section: the results table and a plot of each metric against the
swept value (the key=value that differs between points)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from html import escape
from typing import Any

from confpipe.cli.report.charts import Dot, metric_svg
from confpipe.cli.results import PointResult, PointStatus

__all__ = ["sweep_section", "swept_axis"]

_OVERRIDE = re.compile(r"^[+~]*([^=]+)=(.*)$")


def _value(text: str) -> str:
    text = text.strip()
    return text[1:-1] if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"" else text


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def swept_axis(rows: Sequence[PointResult]) -> tuple[str, list[float], list[str]]:
    """What the plots put on x: (its name, each point's number, the categories).

    One swept key of numbers: its values (categories empty). One key of other values: each
    point's category index as its number, and the categories in first-seen order. Several
    keys (or none): the point's number in the table, each point its own category."""
    parsed = []
    for row in rows:
        pairs = [m.groups() for m in map(_OVERRIDE.match, row.overrides) if m]
        parsed.append({k.strip(): _value(v) for k, v in pairs})
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1] or keys
    if len(varying) == 1:
        key = varying[0]
        values = [p.get(key, "") for p in parsed]
        numbers = [_float(v) for v in values]
        if all(n is not None for n in numbers):
            return key, [n for n in numbers if n is not None], []
        categories = list(dict.fromkeys(values))
        return key, [float(categories.index(v)) for v in values], categories
    return (
        "point (see the table)",
        [float(i) for i in range(len(rows))],
        [f"#{i + 1}" for i in range(len(rows))],
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_POINT_CSS = {
    PointStatus.RAN: "s-succeeded", PointStatus.CACHED: "s-succeeded",
    PointStatus.FAILED: "s-failed", PointStatus.NOT_RUN: "s-dep-failed",
    PointStatus.SKIPPED: "s-not-run", PointStatus.PARTIAL: "s-not-run",
}  # fmt: skip


def sweep_section(rows: Sequence[PointResult]) -> str:
    metrics = list(dict.fromkeys(k for row in rows for k in row.metrics))
    head = "".join(f'<th class="num">{escape(m)}</th>' for m in metrics)
    body = []
    for i, row in enumerate(rows, 1):
        cells = "".join(
            f'<td class="num">{escape(_cell(row.metrics.get(m)))}</td>' for m in metrics
        )
        body.append(
            f"<tr><td>{i}</td><td><code>{escape(' '.join(row.overrides) or '(base)')}</code></td>"
            f'<td><span class="badge {_POINT_CSS[row.status]}">{escape(row.status.value)}</span>'
            f'</td>{cells}<td class="err">{escape(row.error)}</td></tr>'
        )
    table = (
        f'<div class="scroll fit"><table class="results"><thead><tr><th>#</th><th>point</th>'
        f"<th>status</th>{head}<th>error</th></tr></thead><tbody>{''.join(body)}</tbody>"
        "</table></div>"
    )
    x_name, xs, categories = swept_axis(rows)
    plots = []
    for metric in metrics:
        dots = [
            Dot(x, float(row.metrics[metric]), f"#{i + 1} {' '.join(row.overrides)}: "
                f"{metric} = {_cell(row.metrics[metric])}")
            for i, (row, x) in enumerate(zip(rows, xs, strict=True))
            if _is_number(row.metrics.get(metric))
        ]  # fmt: skip
        if dots:
            missing = len(rows) - len(dots)
            note = f'<p class="hint">{missing} point(s) without a value</p>' if missing else ""
            svg = metric_svg(metric, dots, x_label=x_name, categories=categories or None)
            plots.append(f"<figure>{svg}{note}</figure>")
    shown = f'<div class="plots">{"".join(plots)}</div>' if plots else ""
    return (
        f'<section id="sweep"><h2>Sweep results</h2><p class="hint">{len(rows)} point(s); '
        f"each metric plotted against {escape(x_name)}.</p>{table}{shown}</section>"
    )
