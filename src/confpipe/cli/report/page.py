"""The run report: one self-contained HTML page of what a pipeline's steps did.

``render(histories, title=...)`` makes the page from ``history.gather``'s records: counts
by state, the DAG coloured by state, a timeline of each step's last run, and per step its
hash, place, config, resources, result and log tail or error; with ``sweep=`` (a sweep's
PointResults) also the results table and a plot of each numeric metric against the swept
value. ``write_report(path, ...)`` writes it through the store (a local path or gs://).

The page loads nothing (a Content-Security-Policy forbids it): no network, no CDN, no
fonts; its CSS and a few lines of JS are inline, and it reads fully without JS. Every text
from records (labels, configs, logs) is escaped. Each step's texts are cut to a budget
(4 KB each, less for thousands of steps), saying so, so that a big pipeline's page stays
a few megabytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Sequence
from enum import Enum
from html import escape
from typing import Any

from confpipe.cli.history import StepHistory, config_of
from confpipe.cli.report.assets import CSS, JS
from confpipe.cli.report.charts import Bar, duration, gantt_svg
from confpipe.cli.report.graph import Node, dag_svg
from confpipe.cli.report.sweep import sweep_section
from confpipe.cli.results import PointResult
from confpipe.engine.outcome import Outcome
from confpipe.engine.plan import THREAD
from confpipe.engine.status import Status, StepState
from confpipe.redact import public_resources
from confpipe.storage import local_path, store_for

__all__ = ["Shown", "render", "shown_state", "write_report"]

TEXT_LIMIT = 4096  # characters of each text of a step (log tail, error, result, config)
TEXT_BUDGET = 12_000_000  # characters of step texts on the whole page: more steps, less each
TEXT_FLOOR = 256


class Shown(Enum):
    """A step's state as the report colours it (from its status record and its plan)."""

    SUCCEEDED = "succeeded"
    RUNNING = "running"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    DEP_FAILED = "dep failed"
    NOT_RUN = "not run"

    @property
    def css(self) -> str:
        return "s-" + self.name.lower().replace("_", "-")


def shown_state(history: StepHistory) -> Shown:
    """What the step's records say of its last run; a step without a record is ``dep failed``
    when its plan is blocked by a failed step, else ``not run``."""
    status, plan = history.status, history.plan
    if status is None:
        return Shown.DEP_FAILED if plan.state is Outcome.BLOCKED else Shown.NOT_RUN
    if status.state is StepState.SUCCESS:
        return Shown.SUCCEEDED
    if status.state is StepState.DEP_FAILED:
        return Shown.DEP_FAILED
    if status.state is StepState.RUNNING:  # held by a live lease, or left by a killed run
        return Shown.RUNNING if plan.state is Outcome.RUNNING else Shown.INTERRUPTED
    return Shown.INTERRUPTED if status.interrupted else Shown.FAILED


def write_report(
    path: str, histories: Sequence[StepHistory], *, title: str,
    sweep: Sequence[PointResult] | None = None,
) -> str:  # fmt: skip
    """Write the page to ``path`` (a local path or a store URL such as gs://); returns it."""
    page = render(histories, title=title, sweep=sweep)
    target = local_path(path)
    store_for(target).write(target, page.encode("utf-8", errors="replace"))
    return path


def render(
    histories: Sequence[StepHistory], *, title: str, sweep: Sequence[PointResult] | None = None
) -> str:
    """The whole page as a string."""
    now = time.time()
    states = [shown_state(h) for h in histories]
    anchors = {h.plan.spec.identity: f"step-{i}" for i, h in enumerate(histories)}
    limit = max(TEXT_FLOOR, min(TEXT_LIMIT, TEXT_BUDGET // max(1, 4 * len(histories))))
    body = [
        _header(histories, states, title, now, sweep is not None),
        sweep_section(sweep) if sweep is not None else "",
        _graph(histories, states, anchors),
        _timeline(histories, states, anchors, now),
        _steps(histories, states, anchors, limit),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>"
        + "\n".join(part for part in body if part)
        + f"\n<script>{JS}</script></body></html>\n"
    )


def _header(
    histories: Sequence[StepHistory], states: Sequence[Shown], title: str, now: float,
    sweep: bool,
) -> str:  # fmt: skip
    counts = {s: states.count(s) for s in Shown}
    badges = "".join(
        f'<span class="badge {s.css}">{counts[s]} {escape(s.value)}</span>'
        for s in Shown
        if counts[s]
    )
    outputs = [h.plan.output for h in histories]
    # the folder all outputs are in (a prefix, local or gs://), when they share one
    common = os.path.commonprefix(outputs)  # noqa: RUF071 (cut at its last "/" next)
    under = common.rpartition("/")[0] if len(outputs) > 1 else ""
    shared = under.strip("/") and not under.endswith(":/")
    where = f" · outputs under <code>{escape(under)}</code>" if shared else ""
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    links = [("graph", "Graph"), ("timeline", "Timeline"), ("steps", "Steps")]
    if sweep:
        links.insert(0, ("sweep", "Sweep results"))
    nav = " · ".join(f'<a href="#{k}">{v}</a>' for k, v in links)
    return (
        f'<header><h1>{escape(title)}</h1><p class="meta">made {made} · '
        f"{len(histories)} step{'s' if len(histories) != 1 else ''}{where}</p>"
        f'<div class="counts">{badges}</div><nav>{nav}</nav></header>'
    )


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span class="{css}"><i></i>{escape(text)}</span>' for css, text in items)
        + "</div>"
    )


def _graph(
    histories: Sequence[StepHistory], states: Sequence[Shown], anchors: dict[str, str]
) -> str:
    index = {h.plan.spec.identity: i for i, h in enumerate(histories)}
    parents = [
        list(
            dict.fromkeys(
                index[d.identity] for d in h.plan.spec.dependencies if d.identity in index
            )
        )
        for h in histories
    ]
    nodes = [
        Node(
            h.plan.label,
            s.css,
            anchors[h.plan.spec.identity],
            f"{s.value}; next run: {h.plan.state.value} ({h.plan.reason})"
            + (f"; {h.plan.code_note}" if h.plan.code_note else ""),
            marked=h.plan.code_note is not None,
        )
        for h, s in zip(histories, states, strict=True)
    ]
    present = [s for s in Shown if s in states]
    items = [(s.css, s.value) for s in present]
    if any(n.marked for n in nodes):
        items.append(("marked", "code changed since its output was made"))
    return (
        '<section id="graph"><h2>Graph</h2>'
        '<p class="hint">Each box is a step, each arrow a dependency; click a step for its '
        "details.</p>"
        f'{_legend(items)}<div class="scroll">{dag_svg(nodes, parents)}</div></section>'
    )


WAIT_SHOWN = 0.05  # seconds: a shorter ``waited`` is taking a free lease, not waiting


def _waited(status: Status) -> float:
    """Seconds the step waited for another launch's lease (0 when it did not really wait)."""
    waited = status.waited or 0.0
    return waited if waited >= WAIT_SHOWN else 0.0


def _where(history: StepHistory) -> str:
    info = history.info or {}
    return str(info.get("where") or history.plan.where)


def _timeline(
    histories: Sequence[StepHistory], states: Sequence[Shown], anchors: dict[str, str],
    now: float,
) -> str:  # fmt: skip
    bars, never = [], []
    for h, s in zip(histories, states, strict=True):
        status = h.status
        if status is None or status.started is None:
            never.append(h)
            continue
        where = _where(h)
        end = now if s is Shown.RUNNING else max(status.time, status.started)
        bars.append(
            Bar(
                h.plan.label,
                anchors[h.plan.spec.identity],
                s.css,
                where,
                where != THREAD,
                status.started,
                end,
                _waited(status),
            )
        )
    parts = ['<section id="timeline"><h2>Timeline</h2>']
    if bars:
        legend = _legend(
            [("t-thread", "thread step"), ("t-job", "job"), ("t-wait", "waiting for a lease")]
        )
        parts.append(
            '<p class="hint">The last run of each step, from when it started running to when '
            f"it ended (hover for times).</p>{legend}"
            f'<div class="scroll">{gantt_svg(bars)}</div>'
        )
    else:
        parts.append('<p class="hint">No step has run yet.</p>')
    if never:
        shown = ", ".join(
            f'<a href="#{anchors[h.plan.spec.identity]}">{escape(h.plan.label)}</a>'
            for h in never[:200]
        )
        more = f" and {len(never) - 200} more" if len(never) > 200 else ""
        parts.append(f'<p class="never">Never ran ({len(never)}): {shown}{more}</p>')
    parts.append("</section>")
    return "".join(parts)


_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean(text: str) -> str:
    """Terminal colour codes dropped, other control characters shown as U+FFFD."""
    return _CONTROL.sub(lambda m: "" if m.group().startswith("\x1b") else "\ufffd", text)


def _pre(text: str, limit: int, *, tail: bool, css: str = "") -> str:
    """``text`` in a <pre>, cut to ``limit`` characters (its end for logs and tracebacks, its
    start otherwise), saying how much was cut."""
    note = ""
    if len(text) > limit:
        cut = len(text) - limit
        text = text[-limit:] if tail else text[:limit]
        where = "first" if tail else "last"
        note = f'<p class="cut">({where} {cut:,} characters not shown: see the files)</p>'
    opening = f'<pre class="{css}">' if css else "<pre>"
    return f"{note}{opening}{escape(_clean(text))}</pre>"


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False, sort_keys=False)


def _step(h: StepHistory, state: Shown, anchor: str, anchors: dict[str, str], limit: int) -> str:
    plan, status, info = h.plan, h.status, h.info or {}
    rows: list[tuple[str, str]] = [
        ("state", f'<span class="badge {state.css}">{escape(state.value)}</span>'),
        ("next run", f"<b>{escape(plan.state.value)}</b>: {escape(plan.reason)}"),
        ("hash", f"<code>{escape(plan.spec.hash)}</code>"),
        ("where", escape(_where(h))),
        ("output", f"<code>{escape(plan.output)}</code>"),
    ]  # fmt: skip
    if plan.code_note:
        rows.append(("code", f'<span class="warn">{escape(plan.code_note)}</span>'))
    deps = [
        f'<a href="#{anchors[d.identity]}">{escape(d.name)}</a>'
        if d.identity in anchors
        else escape(d.identity)
        for d in plan.spec.dependencies
    ]
    if deps:
        rows.append(("depends on", ", ".join(deps)))
    if status is not None:
        if status.started is not None:
            start = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(status.started))
            ran = f" for {duration(h.ran_for)}" if h.ran_for is not None else ""
            rows.append(("ran", f"{start}{ran} by <code>{escape(status.worker)}</code>"))
        if _waited(status):
            rows.append(("waited", f"{duration(_waited(status))} for another launch's lease"))
        if status.error:
            rows.append(("error", f'<span class="err">{escape(status.error)}</span>'))
        if status.failed_dep:
            rows.append(("failed dependency", escape(status.failed_dep)))
    facts = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    config = info.get("config", plan.spec.hash_inputs["config"])
    resources = info.get("resources") or (
        dataclasses.asdict(plan.resources) if plan.resources is not None else None
    )
    resources = public_resources(resources) if resources else None  # env: names only
    parts = [
        f'<dl class="facts">{facts}</dl>',
        "<h4>config</h4>",
        _pre(_json(config_of(config)), limit, tail=False),
    ]
    if resources:
        parts += ["<h4>resources</h4>", _pre(_json(resources), limit, tail=False)]
    if h.has_result:
        parts += ["<h4>result</h4>", _pre(_json(h.result), limit, tail=False)]
    if h.error:
        parts += ["<h4>error</h4>", _pre(h.error, limit, tail=True, css="err")]
    if h.log:
        parts += ["<h4>log (its end)</h4>", _pre(h.log, limit, tail=True)]
    elif status is not None and status.started is not None:
        parts.append('<p class="hint">No log recorded.</p>')
    ran = f" · {duration(h.ran_for)}" if h.ran_for is not None else ""
    search = escape(f"{plan.label} {state.value}".lower())
    is_open = " open" if state is Shown.FAILED else ""
    return (
        f'<details class="step" id="{anchor}" data-search="{search}"{is_open}><summary>'
        f'<span class="badge {state.css}">{escape(state.value)}</span> '
        f'<b>{escape(plan.label)}</b> <span class="muted">{escape(plan.spec.hash)} · '
        f"{escape(_where(h))}{ran}</span>"
        + (' <span class="warn">code changed</span>' if plan.code_note else "")
        + f'</summary><div class="body">{"".join(parts)}</div></details>'
    )


def _steps(
    histories: Sequence[StepHistory], states: Sequence[Shown], anchors: dict[str, str],
    limit: int,
) -> str:  # fmt: skip
    tools = (
        '<div id="tools" class="tools" hidden><input id="filter" type="search" '
        'placeholder="filter steps by name or state" aria-label="filter steps">'
        '<button id="expand" type="button">expand all</button>'
        '<button id="collapse" type="button">collapse all</button></div>'
    )
    items = [
        _step(h, s, anchors[h.plan.spec.identity], anchors, limit)
        for h, s in zip(histories, states, strict=True)
    ]
    return f'<section id="steps"><h2>Steps</h2>{tools}{"".join(items)}</section>'
