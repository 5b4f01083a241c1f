"""The plan as the command line shows it: a table, or the DAG as a mermaid or dot diagram.

``plan_format`` chooses; the table itself is the engine's (``confpipe.engine.report``), as
``run()`` prints it on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from confpipe.engine.plan import StepPlan
from confpipe.engine.report import plan_table
from confpipe.errors import ConfigError

__all__ = ["PLAN_FORMATS", "format_diagram", "show_plan"]

PLAN_FORMATS = ("table", "mermaid", "dot")


def show_plan(plans: Sequence[StepPlan], plan_format: str) -> str:
    """The plan in ``plan_format``: a plain-text table or a diagram."""
    return plan_table(plans) if plan_format == "table" else format_diagram(plans, plan_format)


def format_diagram(plans: Sequence[StepPlan], kind: str) -> str:
    """The planned DAG as a ``mermaid`` flowchart or a Graphviz ``dot`` digraph."""
    ids = {p.spec.identity: f"s{i}" for i, p in enumerate(plans)}
    edges = [
        (ids[d.identity], ids[p.spec.identity])
        for p in plans
        for d in p.spec.dependencies
        if d.identity in ids
    ]
    if kind == "mermaid":
        lines = ["graph TD"]
        lines += [f'  {ids[p.spec.identity]}["{p.label}<br/>{p.state.value}"]' for p in plans]
        lines += [f"  {a} --> {b}" for a, b in edges]
    elif kind == "dot":
        lines = ["digraph confpipe {", "  rankdir=TB;"]
        lines += [f'  {ids[p.spec.identity]} [label="{p.label}\\n{p.state.value}"];' for p in plans]
        lines += [f"  {a} -> {b};" for a, b in edges]
        lines.append("}")
    else:
        raise ConfigError(f"plan_format={kind!r} is unknown: use table, mermaid or dot")
    return "\n".join(lines)
