"""The read-only plan: which steps are needed, each one's status, reason and where it runs.

Planning reads one status record per step (and one lease per step that is not done),
prunes every subtree whose root already succeeded, and writes nothing at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from confpipe.errors import ConfigError
from confpipe.lock import read_holder
from confpipe.spec import Resources, StepSpec
from confpipe.status import Status, StepState, read_statuses
from confpipe.storage import store_for


class Where(Enum):
    THREAD = "thread"
    LOCAL_JOB = "local job"
    BATCH = "batch"
    TPU = "tpu"


class PlanState(Enum):
    CACHED = "cached"
    WILL_RUN = "will run"
    RUNNING = "running"


@dataclass(frozen=True)
class StepPlan:
    spec: StepSpec
    output: str
    state: PlanState
    reason: str
    where: Where
    resources: Resources | None


def collect(steps: Iterable[StepSpec]) -> list[StepSpec]:
    """Every step and its transitive dependencies, deduplicated by identity, deps first."""
    order: dict[str, StepSpec] = {}
    visiting: set[str] = set()
    stack: list[tuple[StepSpec, bool]] = [(s, False) for s in reversed(list(steps))]
    while stack:
        spec, expanded = stack.pop()
        if spec.identity in order:
            continue
        if expanded:
            visiting.discard(spec.identity)
            order[spec.identity] = spec
            continue
        if spec.identity in visiting:
            continue
        visiting.add(spec.identity)
        stack.append((spec, True))
        stack.extend((dep, False) for dep in reversed(spec.dependencies))
    return list(order.values())


def select(
    specs: Sequence[StepSpec], given: Sequence[StepSpec], run_only: Sequence[str] | None
) -> tuple[list[StepSpec], list[str]]:
    """The targets: steps matching ``run_only`` (the ``given`` ones if None), and the patterns
    that matched nothing."""
    if not run_only:
        return list(given), []
    patterns = []
    for text in run_only:
        try:
            patterns.append(re.compile(text))
        except re.error as err:
            raise ConfigError(
                f"run_only: {text!r} is not a valid regular expression: {err}"
            ) from err
    targets = [s for s in specs if any(p.search(s.name) for p in patterns)]
    unmatched = [p.pattern for p in patterns if not any(p.search(s.name) for s in specs)]
    return targets, unmatched


def needed(
    specs: Sequence[StepSpec], targets: Sequence[StepSpec], statuses: dict[str, Status | None]
) -> list[StepSpec]:
    """Targets and the deps they still need, in ``specs`` order; a succeeded step's subtree is
    pruned."""
    keep: set[str] = set()
    stack = list(targets)
    while stack:
        spec = stack.pop()
        if spec.identity in keep:
            continue
        keep.add(spec.identity)
        status = statuses[spec.identity]
        if status is None or status.state is not StepState.SUCCESS:
            stack.extend(spec.dependencies)
    return [s for s in specs if s.identity in keep]


def read_all(specs: Sequence[StepSpec], outputs: dict[str, str]) -> dict[str, Status | None]:
    """One status read per step, batched per store."""
    by_store: dict[int, tuple[list[StepSpec], list[str]]] = {}
    for spec in specs:
        out = outputs[spec.identity]
        group = by_store.setdefault(id(store_for(out)), ([], []))
        group[0].append(spec)
        group[1].append(out)
    result: dict[str, Status | None] = {}
    for group_specs, outs in by_store.values():
        for spec, status in zip(group_specs, read_statuses(store_for(outs[0]), outs), strict=True):
            result[spec.identity] = status
    return result


def describe(
    specs: Sequence[StepSpec],
    outputs: dict[str, str],
    statuses: dict[str, Status | None],
    resources: dict[str, Resources | None],
    where: dict[str, Where],
) -> list[StepPlan]:
    """The plan of each step: cached, or why it will run (reads leases of steps not done)."""
    plans = []
    for spec in specs:
        out, status = outputs[spec.identity], statuses[spec.identity]
        state, reason = PlanState.WILL_RUN, "no previous output"
        if status is not None and status.state is StepState.SUCCESS:
            state, reason = PlanState.CACHED, "succeeded earlier"
        elif status is not None and status.state is StepState.FAILED:
            reason = f"retry: failed earlier ({status.error})"
        elif status is not None and status.state is StepState.DEP_FAILED:
            reason = f"retry: dependency {status.failed_dep} had failed"
        if state is not PlanState.CACHED:
            holder = read_holder(store_for(out), out)
            if holder is not None:
                state = PlanState.RUNNING
                reason = f"held by {holder.owner}, heartbeat {holder.age:.0f}s ago; will wait"
            elif status is not None and status.state is StepState.RUNNING:
                reason = f"retry: interrupted run by {status.worker} left no lease"
        plans.append(
            StepPlan(spec, out, state, reason, where[spec.identity], resources[spec.identity])
        )
    return plans


def format_plan(plans: Sequence[StepPlan]) -> str:
    """A plain-text table of the plan."""
    rows = [("step", "hash", "status", "where", "output", "reason")]
    for p in plans:
        where = p.where.value + (f" ({p.resources.describe()})" if p.resources else "")
        rows.append((p.spec.name, p.spec.hash, p.state.value, where, p.output, p.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[5] for r in rows
    ]
    counts = {s: sum(p.state is s for p in plans) for s in PlanState}
    lines.append(", ".join(f"{n} {s.value}" for s, n in counts.items()))
    return "\n".join(lines)
