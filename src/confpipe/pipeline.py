"""run(steps): plan the DAG, wrap every step once (cache ∘ lock ∘ remote?), hand it to the runner.

This is the one place where a step's function is composed with the wrappers:
``cache(lock(as_job(fn)))`` for a step with resources, ``cache(lock(fn))`` without.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confpipe.backends import Backend, BackendKind
from confpipe.cache import Records, cache, previous_failure, record_dep_failed
from confpipe.cancel import CancelScope
from confpipe.errors import ConfigError, Interrupted, RunFailed
from confpipe.lock import LockOptions, abandon_held, lock
from confpipe.plan import StepPlan, Where, collect, describe, format_plan, needed, read_all, select
from confpipe.jobs import as_job, step_resources
from confpipe.runner import Outcome, Result, Task, execute
from confpipe.spec import Resources, StepSpec
from confpipe.status import CACHED, StepState, launch_id
from confpipe.storage import local_path, store_for

log = logging.getLogger("confpipe")


@dataclass(frozen=True)
class Summary:
    """What a run did: the plan, the steps it ran, the ones it found done, and outputs."""

    plan: list[StepPlan]
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Context:
    owner: str
    backend: Backend | None
    options: LockOptions
    scope: CancelScope
    force_run_failed: bool
    detach: bool


def executable(
    spec: StepSpec, output: str, resources: Resources | None, ctx: _Context
) -> Callable[..., Any]:
    """The step's function wrapped for caching, locking and (with resources) remote submission."""
    fn = spec.fn
    if resources is not None:
        assert ctx.backend is not None
        fn = as_job(fn, step=spec.name, resources=resources, backend=ctx.backend, detach=ctx.detach)
    store = store_for(output)
    records = Records(store, spec, ctx.owner)
    fn = lock(
        fn, store=store, step=spec.name, owner=ctx.owner, options=ctx.options,
        scope=ctx.scope, hooks=records,
    )  # fmt: skip
    return cache(fn, records, force_run_failed=ctx.force_run_failed)


def run(
    steps: StepSpec | Iterable[StepSpec],
    *,
    prefix: str = "outputs",
    dry_run: bool = False,
    run_only: Sequence[str] | None = None,
    force_run_failed: bool = True,
    max_concurrent: int = 32,
    detach: bool = False,
    lock_options: LockOptions | None = None,
    backend: Backend | None = None,
) -> Summary:
    """Run ``steps`` and everything they depend on; skip what already succeeded.

    Raises ConfigError before anything runs, RunFailed when steps failed (the others still
    ran), Interrupted on Ctrl-C (running steps cancelled and recorded as failed).
    """
    given = [steps] if isinstance(steps, StepSpec) else list(steps)
    specs = collect(given)
    prefix = local_path(prefix)
    outputs = {s.identity: local_path(s.output_under(prefix)) for s in specs}
    _check_unique(specs, outputs)
    resources = {s.identity: step_resources(s.resources, s.fn) for s in specs}
    if backend is None and any(resources.values()):
        from confpipe.backends.local import LocalBackend

        backend = LocalBackend()
    where = {s.identity: _where(resources[s.identity], backend) for s in specs}
    for spec in specs:
        res = resources[spec.identity]
        if res is not None and backend is not None:
            backend.check(spec.name, res)

    targets, unmatched = select(specs, given, run_only)
    for pattern in unmatched:
        log.warning("run_only pattern %r matches no step", pattern)
    statuses = read_all(specs, outputs)
    need = needed(specs, targets, statuses)
    todo = [s for s in need if _state(statuses[s.identity]) is not StepState.SUCCESS]
    if not force_run_failed:
        for spec in todo:
            status = statuses[spec.identity]
            if status is not None and status.state is StepState.FAILED:
                raise previous_failure(spec.name, status)
    if dry_run:
        plans = describe(need, outputs, statuses, resources, where)
        print(format_plan(plans))
        return Summary(plans, outputs={s.name: outputs[s.identity] for s in need})

    options = lock_options or LockOptions()
    ctx = _Context(launch_id(), backend, options, CancelScope(), force_run_failed, detach)
    by_id = {s.identity: s for s in todo}
    tasks = [
        Task(
            spec.identity,
            tuple(d.identity for d in spec.dependencies if d.identity in by_id),
            functools.partial(
                executable(spec, outputs[spec.identity], resources[spec.identity], ctx),
                output_path=outputs[spec.identity],
                **spec.resolved_config(prefix),
            ),
        )
        for spec in todo
    ]
    names = _display_names(todo)
    started: dict[str, float] = {}

    def on_start(key: str) -> None:
        started[key] = time.monotonic()
        log.info("step %s: started (%s)", names[key], where[key].value)

    def on_done(result: Result) -> None:
        key = result.key
        if result.outcome is Outcome.DEP_FAILED and result.failed_dep is not None:
            spec = by_id[key]
            record_dep_failed(
                store_for(outputs[key]), spec, outputs[key], names[result.failed_dep],
                ctx.owner, options, ctx.scope,
            )  # fmt: skip
        elif result.outcome is Outcome.SUCCEEDED:
            took = time.monotonic() - started.get(key, time.monotonic())
            log.info("step %s: %s in %.2fs", names[key], _verb(result.value), took)
        elif result.outcome is Outcome.FAILED:
            log.error("step %s: failed: %s", names[key], result.error)

    report = execute(
        tasks, max_concurrent=max_concurrent, cancel=ctx.scope, on_start=on_start, on_done=on_done
    )
    if report.interrupted:
        error = Interrupted("interrupted (Ctrl-C): running steps were cancelled")
        abandon_held(error)
        raise error
    results = report.results.values()
    failures = {names[r.key]: r.error for r in results if r.outcome is Outcome.FAILED}
    dep_failed = {names[r.key]: names[r.failed_dep or ""] for r in results if r.failed_dep}
    if failures:
        first = next(iter(failures.values()))
        raise RunFailed({k: v for k, v in failures.items() if v is not None}, dep_failed) from first
    ran = [r.key for r in results if r.value is not CACHED]
    cached = [s.identity for s in need if s.identity not in ran]
    return Summary([], ran, cached, {s.name: outputs[s.identity] for s in need})


def _state(status: Any) -> StepState | None:
    return None if status is None else status.state


def _verb(value: object) -> str:
    return "done by another launch" if value is CACHED else "succeeded"


def _where(resources: Resources | None, backend: Backend | None) -> Where:
    if resources is None:
        return Where.THREAD
    if backend is None or backend.kind is BackendKind.LOCAL:
        return Where.LOCAL_JOB
    return Where.TPU if resources.tpu else Where.BATCH


def _display_names(specs: Sequence[StepSpec]) -> dict[str, str]:
    """Step names for messages; the identity where two steps of a run share a name."""
    counts: dict[str, int] = {}
    for spec in specs:
        counts[spec.name] = counts.get(spec.name, 0) + 1
    names = {s.identity: s.name if counts[s.name] == 1 else s.identity for s in specs}
    names[""] = ""
    return names


def _check_unique(specs: Sequence[StepSpec], outputs: dict[str, str]) -> None:
    owners: dict[str, StepSpec] = {}
    for spec in specs:
        other = owners.setdefault(outputs[spec.identity], spec)
        if other is not spec:
            raise ConfigError(
                f"steps {other.identity!r} and {spec.identity!r} both write to "
                f"{outputs[spec.identity]!r}: give one of them another output_path"
            )
