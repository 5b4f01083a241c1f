"""run(steps): plan the DAG, wrap every step once (cache ∘ lock ∘ remote?), hand it to the runner.

This is the one place where a step's function is composed with the wrappers:
``cache(lock(as_job(fn)))`` for a step with resources, ``cache(lock(captured(fn)))``
without: a thread step's output goes to its own log (``steplog``), a job's log is copied
there when it ends, and each line either prints reaches the reporter's ``step_output``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from confpipe import interrupt
from confpipe.backends import Backend
from confpipe.backends.resources import Resources
from confpipe.cancel import CancelScope
from confpipe.engine import beside
from confpipe.engine.cache import Records, cache, previous_failure, record_dep_failed, succeeded
from confpipe.engine.lock import LockOptions, abandon_held, lock
from confpipe.engine.options import RunOptions
from confpipe.engine.outcome import Outcome
from confpipe.engine.plan import (
    THREAD,
    StepPlan,
    collect,
    describe,
    needed_checked,
    read_all,
    warn_code_changes,
)
from confpipe.engine.remote import as_job, step_resources
from confpipe.engine.report import LineReporter, Reporter
from confpipe.engine.runner import Result, Task, run_tasks
from confpipe.engine.select import select
from confpipe.engine.spec import StepSpec, check_inside
from confpipe.engine.status import Status, launch_id, log_path
from confpipe.engine.steplog import Echo, captured, routing
from confpipe.errors import ConfigError, Interrupted, RunFailed
from confpipe.storage import check_writable, local_path, loss_level, split_protocol, store_for
from confpipe.storage.probe import check_creatable

log = logging.getLogger("confpipe")

RELEASE_WAIT = 60.0  # seconds a run waits, at its end, for its leases' releases
STOP_WAIT = 5.0  # the same, when it was interrupted


@dataclass(frozen=True)
class Summary:
    """What a run did: the plan, the steps it ran, the ones it found done, and outputs."""

    plan: list[StepPlan]
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Context:
    """What the steps of one run share: its options (with the backend jobs go to), the
    launch that owns their leases, and the run's cancel scope."""

    options: RunOptions
    owner: str
    scope: CancelScope


def executable(
    spec: StepSpec, output: str, resources: Resources | None, where: str, ctx: _Context,
    echo: Echo | None = None, seen: tuple[Status | None, str | None] | None = None,
) -> Callable[..., Any]:  # fmt: skip
    """The step's function wrapped for its log, caching, locking and (with resources) remote
    submission; ``echo`` is given each line the step prints. ``seen``: the status the plan
    read and its version, which the step starts from rather than reading it again."""
    fn, options = spec.fn, ctx.options
    if resources is not None:
        assert options.backend is not None
        fn = as_job(
            fn, step=spec.name, resources=resources, backend=options.backend,
            detach=options.detach, echo=echo, log_level=options.log_level, stored=True,
        )  # fmt: skip
    else:
        fn = captured(fn, path=log_path(output), echo=echo, level=options.log_level)
    store = store_for(output)
    reattaches = (
        resources is not None and options.backend is not None and options.backend.reattaches
    )
    records = Records(store, spec, ctx.owner, where, reattaches)
    if seen is not None:
        records.prime(*seen)
    fn = lock(
        fn, store=store, step=spec.name, owner=ctx.owner, options=options.lock_options,
        scope=ctx.scope, hooks=records,
    )  # fmt: skip
    return cache(
        fn, records, force_run_failed=options.force_run_failed,
        rerun_on_code_change=options.rerun_on_code_change,
    )  # fmt: skip


def run(
    steps: StepSpec | Iterable[StepSpec],
    *,
    prefix: str = "outputs",
    dry_run: bool = False,
    run_only: str | Sequence[str] | None = None,
    force_run_failed: bool = True,
    max_concurrent: int = 32,
    detach: bool = False,
    lock_options: LockOptions | None = None,
    backend: Backend | None = None,
    reporter: Reporter | None = None,
    log_level: str = "INFO",
    rerun_on_code_change: bool = False,
) -> Summary:
    """Run ``steps`` and everything they depend on; skip what already succeeded.

    Raises ConfigError before anything runs, RunFailed when steps failed (the others still
    ran), Interrupted on Ctrl-C (or SIGTERM through the CLI): running steps are cancelled and
    recorded as interrupted (state FAILED with ``interrupted: true``, which is not a failure:
    ``force_run_failed=false`` runs them again).
    """
    options = RunOptions(
        prefix, dry_run, _patterns(run_only), force_run_failed,
        max_concurrent, detach, lock_options or LockOptions(), backend, log_level.upper(),
        rerun_on_code_change,
    )  # fmt: skip
    return run_steps(steps, options, reporter)


def _patterns(run_only: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``run_only`` as RunOptions holds it: one name or glob, or several."""
    if run_only is None:
        return None
    return (run_only,) if isinstance(run_only, str) else tuple(run_only)


def run_steps(
    steps: StepSpec | Iterable[StepSpec], options: RunOptions, reporter: Reporter | None = None
) -> Summary:
    """``run()`` with its options given whole. Without ``options.backend``, a step with
    resources runs on a LocalBackend made here and closed when the run ends; a backend given
    is the caller's to close."""
    given = [steps] if isinstance(steps, StepSpec) else list(steps)
    specs = collect(given)
    resources = {s.identity: step_resources(s.resources, s.fn) for s in specs}
    with _backend(options, resources) as options:
        return _plan_and_run(given, specs, resources, options, reporter or LineReporter(log.info))


def survey(steps: StepSpec | Iterable[StepSpec], options: RunOptions) -> list[StepPlan]:
    """The plan of every step and all its dependencies, none pruned (a succeeded step's
    upstream steps too): what ``status``, ``show`` and ``report`` show. Read-only: it writes
    nothing and takes no lease; ``run_only`` and ``dry_run`` play no part."""
    specs = collect([steps] if isinstance(steps, StepSpec) else list(steps))
    resources = {s.identity: step_resources(s.resources, s.fn) for s in specs}
    with _backend(options, resources) as options:
        prefix, outputs, where = _places(specs, resources, options)
        statuses = read_all(specs, outputs)
        return describe(
            specs, outputs, statuses, resources, where, prefix, options.force_run_failed,
            options.lock_options.lease_timeout, options.rerun_on_code_change,
        )  # fmt: skip


@contextlib.contextmanager
def _backend(options: RunOptions, resources: dict[str, Resources | None]) -> Iterator[RunOptions]:
    """``options``, with a LocalBackend made for the steps with resources if it has no backend
    (closed when the block ends); a backend given is the caller's to close."""
    if options.backend is not None or not any(resources.values()):
        yield options
        return
    # a job's machinery (subprocesses, signals): imported only when a step is a job
    from confpipe.backends.local import LocalBackend

    made = LocalBackend()
    try:
        yield dataclasses.replace(options, backend=made)
    finally:
        made.close()


def _places(
    specs: list[StepSpec], resources: dict[str, Resources | None], options: RunOptions
) -> tuple[str, dict[str, str], dict[str, str]]:
    """The prefix, each step's output and where it runs (a job's place: its backend's check)."""
    backend = options.backend
    prefix = local_path(options.prefix)
    outputs = {s.identity: local_path(s.output_under(prefix)) for s in specs}
    _check_unique(specs, outputs)
    if split_protocol(prefix)[0] is None:  # a local prefix: symlinks in it are resolved
        for spec in specs:
            check_inside(spec, outputs[spec.identity], prefix)
    where = {s.identity: THREAD for s in specs}
    for spec in specs:
        res = resources[spec.identity]
        if res is not None and backend is not None:
            where[spec.identity] = backend.check(spec.name, res)
    return prefix, outputs, where


def _plan_and_run(
    given: list[StepSpec], specs: list[StepSpec], resources: dict[str, Resources | None],
    options: RunOptions, show: Reporter,
) -> Summary:  # fmt: skip
    """Check and plan the steps, report the plan, and (unless a dry run) run what is to do."""
    prefix, outputs, where = _places(specs, resources, options)
    run_only = options.run_only
    targets, unmatched = select(specs, given, run_only)
    if run_only and len(unmatched) == len(run_only):  # a typo would run nothing, silently
        names = ", ".join(sorted({s.name for s in specs}))
        raise ConfigError(
            f"run_only: {list(run_only)} matches no step; steps: {names} (run_only takes exact "
            "step names or shell globs, e.g. train_*)"
        )
    for pattern in unmatched:
        log.warning("run_only pattern %r matches no step", pattern)
    versions: dict[str, str | None] = {}
    statuses = read_all(specs, outputs, versions)
    rerun = options.rerun_on_code_change
    need = needed_checked(specs, targets, statuses, outputs, rerun)
    todo = [s for s in need if not succeeded(s, statuses[s.identity], rerun)]
    if todo:  # read-only outputs that are all cached are fine
        for folder in _folders(prefix, [outputs[s.identity] for s in todo]):
            check_writable(folder)
            if split_protocol(folder)[0] is None:  # a dry run writes nothing, not even a probe
                check_creatable(folder, probe=not options.dry_run)
    if not options.force_run_failed and not options.dry_run:  # a dry run shows them
        for spec in todo:
            status = statuses[spec.identity]
            if status is not None and status.is_failure():
                raise previous_failure(spec.name, status)
    plans = describe(
        need, outputs, statuses, resources, where, prefix, options.force_run_failed,
        options.lock_options.lease_timeout, rerun,
    )  # fmt: skip
    show.planned(plans, options.dry_run)
    if options.dry_run:
        return Summary(plans, outputs={p.label: p.output for p in plans})
    warn_code_changes(plans)
    try:
        ctx = _Context(options, launch_id(), CancelScope())
        seen = {s.identity: (statuses[s.identity], versions[s.identity]) for s in todo}
        return _run_planned(plans, todo, resources, prefix, show, ctx, seen)
    finally:
        show.close()


def _run_planned(
    plans: list[StepPlan], todo: list[StepSpec], resources: dict[str, Resources | None],
    prefix: str, show: Reporter, ctx: _Context,
    seen: dict[str, tuple[Status | None, str | None]] | None = None,
) -> Summary:  # fmt: skip
    """Hand the steps still to do to the runner; report each; raise if any failed. ``seen``:
    each step's status as the plan read it, and its version."""
    seen = seen or {}
    plan_of = {p.spec.identity: p for p in plans}
    to_run = {spec.identity for spec in todo}
    tasks = [
        Task(
            spec.identity,
            tuple(d.identity for d in spec.dependencies if d.identity in to_run),
            functools.partial(
                executable(
                    spec,
                    plan_of[spec.identity].output,
                    resources[spec.identity],
                    plan_of[spec.identity].where,
                    ctx,
                    _echo(show, plan_of[spec.identity]),
                    seen.get(spec.identity),
                ),
                output_path=plan_of[spec.identity].output,
                **spec.resolved_config(prefix),
            ),
        )
        for spec in todo
    ]
    started: dict[str, float] = {}

    def on_start(key: str) -> None:
        started[key] = time.monotonic()
        show.started(plan_of[key])

    def on_done(result: Result) -> None:
        plan = plan_of[result.key]
        if result.outcome is Outcome.DEP_FAILED and result.failed_dep is not None:
            try:
                record_dep_failed(
                    store_for(plan.output), plan.spec, plan.output,
                    plan_of[result.failed_dep].label, ctx.owner, ctx.options.lock_options,
                    ctx.scope,
                )  # fmt: skip
            except Exception as err:  # the record is a courtesy; the run goes on without it
                log.log(
                    loss_level(err), "step %s: could not record that it was not run: %s",
                    plan.label, err,
                )  # fmt: skip
        end = result.outcome
        if end is Outcome.SUCCEEDED and result.value is Outcome.CACHED:
            end = Outcome.CACHED  # found done: by an earlier launch, or one it waited for
        if end is Outcome.FAILED and ctx.scope.interrupted:
            end = Outcome.CANCELLED  # stopped by Ctrl-C, not failed by itself
        now = time.monotonic()
        took = now - started.get(result.key, now)  # 0 for a step that never started
        show.finished(plan, end, took, result.error)

    def on_stop(keys: list[str], grace: float) -> None:
        stopping = getattr(show, "stopping", None)  # a reporter written before it: not told
        if stopping is not None:
            stopping([plan_of[key] for key in keys], grace)

    threads = any(resources[spec.identity] is None for spec in todo)
    level = logging.getLevelName(ctx.options.log_level)
    try:
        with routing(level) if threads else contextlib.nullcontext():  # once for the whole run
            report = run_tasks(
                tasks, max_concurrent=ctx.options.max_concurrent, cancel=ctx.scope,
                on_start=on_start, on_done=on_done, on_stop=on_stop,
            )  # fmt: skip
    except BaseException:
        beside.flush(STOP_WAIT)
        raise
    if report.interrupted:  # the interrupted steps are recorded first: a SIGTERM's grace
        error = Interrupted(f"{interrupt.interrupted()}: running steps were cancelled")
        abandon_held(error)  # period may be short
        beside.flush(STOP_WAIT)
        raise error
    beside.flush(RELEASE_WAIT)  # the leases of committed steps, released beside the run
    results = report.results.values()
    label = {key: p.label for key, p in plan_of.items()}
    failures = {label[r.key]: r.error for r in results if r.outcome is Outcome.FAILED}
    dep_failed = {label[r.key]: label[r.failed_dep] for r in results if r.failed_dep}
    if failures:
        first = next(iter(failures.values()))
        raise RunFailed({k: v for k, v in failures.items() if v is not None}, dep_failed) from first
    ran = [r.key for r in results if r.value is not Outcome.CACHED]
    ran_set = set(ran)
    cached = [p.spec.identity for p in plans if p.spec.identity not in ran_set]
    return Summary(plans, ran, cached, {p.label: p.output for p in plans})


def _echo(show: Reporter, plan: StepPlan) -> Echo | None:
    """What a line the step prints is given to: the reporter's ``step_output`` (a reporter
    written before it existed has none: its lines go to the log only)."""
    step_output = getattr(show, "step_output", None)
    if step_output is None:
        return None
    return functools.partial(step_output, plan)


def _check_unique(specs: Sequence[StepSpec], outputs: dict[str, str]) -> None:
    owners: dict[str, StepSpec] = {}
    for spec in specs:
        other = owners.setdefault(outputs[spec.identity], spec)
        if other is not spec:
            raise ConfigError(
                f"steps {other.identity!r} and {spec.identity!r} both write to "
                f"{outputs[spec.identity]!r}: give one of them another output_path"
            )


def _folders(prefix: str, outputs: Iterable[str]) -> list[str]:
    """The prefix, and the parent of each output not under it (an absolute output_path)."""
    under = prefix.rstrip("/") + "/"
    others = {o.rstrip("/").rpartition("/")[0] for o in outputs if not o.startswith(under)}
    return [prefix, *sorted(others - {prefix})]
