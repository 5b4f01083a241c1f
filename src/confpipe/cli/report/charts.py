"""The run report's charts as inline SVG: the timeline of the steps' last runs, and a sweep
metric's plot against the swept value.

Both take plain data (no records), so they are tested on their own. Colours come from the
page's CSS, by class; axes get round ticks (1, 2, 5 times a power of ten; minutes and hours
on a timeline; powers of ten on a log axis).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Bar", "Dot", "duration", "gantt_svg", "metric_svg", "nice_ticks"]

LABEL_W = 250  # the timeline's column of step names
CHART_W = 860
ROW_H = 20
AXIS_H = 26
PLOT_W, PLOT_H = 440, 250
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 58, 14, 26, 58


@dataclass(frozen=True)
class Bar:
    """A step's last run on the timeline (times in seconds since the epoch)."""

    label: str
    anchor: str  # the id of its details on the page
    state: str  # CSS class of its state
    where: str  # thread, local job, batch, tpu
    job: bool
    start: float  # RUNNING from here
    end: float  # ended (or now, while running)
    waited: float = 0.0  # waited this long for another launch's lease before ``start``


@dataclass(frozen=True)
class Dot:
    """One sweep point on a metric's plot: x is a number, or a category's index."""

    x: float
    y: float
    tip: str


def duration(seconds: float) -> str:
    """``8ms``, ``4.2s``, ``42s``, ``3m``, ``2m30s``, ``1h``, ``1h05m``: an axis tick or a run's
    length."""
    if seconds < 1:
        return "0s" if seconds == 0 else f"{seconds * 1000:.3g}ms" if seconds >= 0.001 else "<1ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    whole = round(seconds)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"
    hours, rest = divmod(whole, 3600)
    return f"{hours}h{rest // 60:02d}m" if rest // 60 else f"{hours}h"


def _step(span: float, count: int) -> float:
    """A round tick step that cuts ``span`` into about ``count`` parts."""
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    return float(next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999))


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round ticks covering ``[low, high]`` (the first at or below low, the last at or above)."""
    if not high > low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    step = _step(high - low, count)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _time_ticks(span: float) -> list[float]:
    """Offsets in seconds for a timeline of ``span`` seconds: seconds, then whole minutes and
    hours."""
    step = _step(max(span, 1e-3), 8)
    if step >= 60:
        step = next((s for s in (60, 120, 300, 600, 900, 1800, 3600) if s >= step), None) or (
            3600 * math.ceil(step / 3600)
        )
    return [k * step for k in range(math.floor(span / step + 1e-9) + 1)]


def gantt_svg(bars: Sequence[Bar]) -> str:
    """The timeline: a row per bar in start order, the lease wait drawn before the run in a
    lighter shade, jobs hatched; a time axis from the first start."""
    if not bars:
        return ""
    bars = sorted(bars, key=lambda b: (b.start - b.waited, b.start, b.label))
    origin = min(b.start - b.waited for b in bars)
    span = max(max(b.end for b in bars) - origin, 1e-3)
    scale = CHART_W / span
    height = AXIS_H + len(bars) * ROW_H + 8
    width = LABEL_W + CHART_W + 20
    out = [
        f'<svg class="gantt" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="when each step ran">',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="2.5" height="6"/></pattern></defs>',
    ]
    out += [  # every other row shaded, under the axis' lines
        f'<rect class="stripe" x="0" y="{AXIS_H + r * ROW_H}" width="{width}" height="{ROW_H}"/>'
        for r in range(1, len(bars), 2)
    ]
    out.append('<g class="axis">')
    for tick in _time_ticks(span):
        x = LABEL_W + tick * scale
        out.append(
            f'<line x1="{x:.1f}" y1="{AXIS_H - 6}" x2="{x:.1f}" y2="{height}"/>'
            f'<text x="{x:.1f}" y="{AXIS_H - 10}">{escape(duration(tick))}</text>'
        )
    out.append("</g>")
    for r, bar in enumerate(bars):
        y = AXIS_H + r * ROW_H
        tip = (
            f"{bar.label} ({bar.where}): ran {duration(bar.end - bar.start)} from "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(bar.start))} "
            f"(+{duration(bar.start - origin)})"
            + (f", after waiting {duration(bar.waited)} for a lease" if bar.waited else "")
        )
        start = LABEL_W + (bar.start - origin) * scale
        run_w = max(2.0, (bar.end - bar.start) * scale)
        out.append(
            f'<g class="row {escape(bar.state)}"><title>{escape(tip)}</title>'
            f'<a href="#{escape(bar.anchor)}"><text x="6" y="{y + 14}">'
            f"{escape(_cut(bar.label, 24))}</text></a>"
            f'<text class="where" x="{LABEL_W - 8}" y="{y + 14}">{escape(bar.where)}</text>'
        )
        if bar.waited:
            wait_w = bar.waited * scale
            out.append(
                f'<rect class="wait" x="{start - wait_w:.1f}" y="{y + 4}" width="{wait_w:.1f}" '
                f'height="{ROW_H - 8}"/>'
            )
        out.append(
            f'<rect class="bar" x="{start:.1f}" y="{y + 3}" width="{run_w:.1f}" '
            f'height="{ROW_H - 6}" rx="2"/>'
        )
        if bar.job:
            out.append(
                f'<rect class="job" x="{start:.1f}" y="{y + 3}" width="{run_w:.1f}" '
                f'height="{ROW_H - 6}" rx="2"/>'
            )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _number(value: float) -> str:
    return f"{value:.4g}"


def metric_svg(
    title: str, dots: Sequence[Dot], *, x_label: str, categories: Sequence[str] | None = None,
) -> str:  # fmt: skip
    """A metric against the swept value: a line through the dots sorted by x for a numeric
    x (log-scaled when positive and spanning two decades or more), dots at each category
    otherwise (x is then the category's index)."""
    if not dots:
        return ""
    inner_w, inner_h = PLOT_W - PLOT_LEFT - PLOT_RIGHT, PLOT_H - PLOT_TOP - PLOT_BOTTOM
    y_low, y_high = min(d.y for d in dots), max(d.y for d in dots)
    margin = (y_high - y_low) * 0.05  # no dot on the frame
    below = 0.0 if y_low >= 0 > y_low - margin else y_low - margin  # no axis below 0 for >= 0
    ys = nice_ticks(below, y_high + margin)
    xs_given = [d.x for d in dots]
    log_x = categories is None and min(xs_given) > 0 and max(xs_given) / min(xs_given) >= 100
    if categories is not None:
        x_low, x_high = -0.5, len(categories) - 0.5
    elif log_x:
        x_low = math.floor(math.log10(min(xs_given)))
        x_high = max(math.ceil(math.log10(max(xs_given))), x_low + 1)
    else:
        xt = nice_ticks(min(xs_given), max(xs_given))
        x_low, x_high = xt[0], xt[-1]

    def px(x: float) -> float:
        at = math.log10(x) if log_x else x
        return PLOT_LEFT + (at - x_low) / (x_high - x_low) * inner_w

    def py(y: float) -> float:
        return PLOT_TOP + inner_h - (y - ys[0]) / (ys[-1] - ys[0]) * inner_h

    out = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{PLOT_W}" '
        f'height="{PLOT_H}" viewBox="0 0 {PLOT_W} {PLOT_H}" role="img" '
        f'aria-label="{escape(title)} against {escape(x_label)}">',
        f'<text class="title" x="{PLOT_LEFT}" y="16">{escape(title)}</text><g class="axis">',
    ]
    for y in ys:
        out.append(
            f'<line x1="{PLOT_LEFT}" y1="{py(y):.1f}" x2="{PLOT_W - PLOT_RIGHT}" y2="{py(y):.1f}"/>'
            f'<text class="y" x="{PLOT_LEFT - 6}" y="{py(y) + 4:.1f}">{_number(y)}</text>'
        )
    base = PLOT_TOP + inner_h
    if categories is not None:
        every = max(1, math.ceil(len(categories) / 12))
        for k in range(0, len(categories), every):
            out.append(
                f'<text class="x cat" transform="translate({px(k):.1f},{base + 14}) rotate(-30)">'
                f"{escape(_cut(categories[k], 16))}</text>"
            )
    else:
        ticks = (
            [10.0**e for e in range(int(x_low), int(x_high) + 1)]
            if log_x
            else nice_ticks(x_low, x_high)
        )
        for t in ticks:
            out.append(
                f'<line class="tick" x1="{px(t):.1f}" y1="{base}" x2="{px(t):.1f}" '
                f'y2="{base + 4}"/><text class="x" x="{px(t):.1f}" y="{base + 16}">'
                f"{_number(t)}</text>"
            )
    out.append(
        f'<line class="frame" x1="{PLOT_LEFT}" y1="{base}" x2="{PLOT_W - PLOT_RIGHT}" '
        f'y2="{base}"/></g><text class="xlabel" x="{PLOT_LEFT + inner_w / 2:.0f}" '
        f'y="{PLOT_H - 6}">{escape(x_label)}{" (log)" if log_x else ""}</text>'
    )
    ordered = sorted(dots, key=lambda d: d.x)
    if categories is None and len(ordered) > 1:
        line = " ".join(f"{px(d.x):.1f},{py(d.y):.1f}" for d in ordered)
        out.append(f'<polyline class="line" points="{line}"/>')
    for d in ordered:
        out.append(
            f'<circle cx="{px(d.x):.1f}" cy="{py(d.y):.1f}" r="4">'
            f"<title>{escape(d.tip)}</title></circle>"
        )
    out.append("</svg>")
    return "".join(out)
