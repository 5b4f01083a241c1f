"""Run a DAG of tasks on a few threads, starting each task as soon as its dependencies succeeded.

Deliberately dumb: a task is a key, the keys it depends on and a callable. The runner knows
nothing about steps, caching, locks or remote jobs; those are wrapped into ``Task.call``.

It is event-driven: worker threads post each result to an inbox that the calling thread
blocks on (no polling), so a dependent starts as soon as the calling thread sees its last
dependency succeed. A failure settles only the failure's dependents (``DEP_FAILED``).
Ctrl-C (or ``cancel`` set by another thread) stops launching, sets ``cancel`` so running
tasks can return early, says so (``on_stop``: which calls it waits for, and how long), waits
up to ``grace`` seconds for them (a second Ctrl-C ends the wait) and reports the rest as
``CANCELLED``.

This module is the public API and the scheduling; the checks and ranking of the tasks are in
``graph``, the worker threads and the inbox in ``threads``. May import only
``confpipe.engine.outcome`` and ``confpipe.errors``: never the cache, the lock or the jobs.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confpipe.engine.outcome import Outcome
from confpipe.engine.runner.graph import Graph
from confpipe.engine.runner.threads import Inbox, Pool, watch_cancel

__all__ = ["Report", "Result", "Task", "run_tasks"]


@dataclass(frozen=True)
class Task:
    """One unit of work: ``call`` runs once every task named in ``deps`` has succeeded."""

    key: str
    deps: tuple[str, ...]
    call: Callable[[], object]


@dataclass(frozen=True)
class Result:
    """The end of one task: its value, its error, or the failed task that kept it from running.

    ``outcome`` is SUCCEEDED, FAILED, DEP_FAILED or CANCELLED."""

    key: str
    outcome: Outcome
    value: object = None
    error: BaseException | None = None
    failed_dep: str | None = None


@dataclass(frozen=True)
class Report:
    """One result per task, in the input order of the tasks."""

    results: dict[str, Result]
    interrupted: bool


def run_tasks(
    tasks: Sequence[Task],
    *,
    max_concurrent: int,
    cancel: threading.Event | None = None,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[Result], None] | None = None,
    on_stop: Callable[[list[str], float], None] | None = None,
    grace: float = 5.0,
) -> Report:
    """Run ``tasks`` with at most ``max_concurrent`` calls in flight and report how each ended.

    Raises ValueError for duplicate keys, unknown dependencies or ``max_concurrent < 1``, and
    ConfigError for a dependency cycle, before anything runs. A task that raises is FAILED and
    never re-raised. ``on_start`` and ``on_done`` run in the calling thread; an error they
    raise propagates after the run was stopped as on Ctrl-C. Ctrl-C is not re-raised: the
    report says ``interrupted``. ``on_stop(keys, grace)``, in the calling thread too, is told
    once when a run stops early: the keys of the calls still running, which it waits up to
    ``grace`` seconds for.
    """
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
    graph = Graph(tasks)
    if not tasks:
        return Report({}, interrupted=False)
    watched = cancel
    cancel = threading.Event() if cancel is None else cancel
    with Inbox[Result]() as inbox:
        pool = Pool(inbox, _call)
        run = _Run(graph, pool, inbox, cancel, on_start, on_done, on_stop, max_concurrent)
        run_over = threading.Event()
        if watched is not None:
            args = (watched, run_over, inbox)
            watch = threading.Thread(
                target=watch_cancel, args=args, name="confpipe-cancel", daemon=True
            )
            watch.start()
        try:
            report = run.go(grace)
        except BaseException:
            pool.close(wait=False)
            raise
        finally:
            run_over.set()
        pool.close(wait=not report.interrupted)
    return report


def _call(task: Task) -> Result:
    """Make the task's call (in a worker thread); what it raises makes it FAILED."""
    try:
        return Result(task.key, Outcome.SUCCEEDED, value=task.call())
    except BaseException as exc:  # SystemExit in a task must not kill the scheduler
        return Result(task.key, Outcome.FAILED, error=exc)


class _Run:
    """The calling thread's bookkeeping for one run_tasks(): what is ready, running and settled."""

    def __init__(
        self,
        graph: Graph[Task],
        pool: Pool[Task, Result],
        inbox: Inbox[Result],
        cancel: threading.Event,
        on_start: Callable[[str], None] | None,
        on_done: Callable[[Result], None] | None,
        on_stop: Callable[[list[str], float], None] | None,
        max_concurrent: int,
    ) -> None:
        self._graph = graph
        self._pool = pool
        self._inbox = inbox
        self._cancel = cancel
        self._on_start = on_start
        self._on_done = on_done
        self._on_stop = on_stop
        self._max_concurrent = max_concurrent
        self._results: dict[str, Result] = {}
        self._waiting = {key: len(deps) for key, deps in graph.deps.items()}
        self._ready = deque(graph.roots)
        self._callback_error: Exception | None = None

    def go(self, grace: float) -> Report:
        """Run to the end, or stop early on Ctrl-C, ``cancel`` or a failing callback."""
        try:
            interrupted = not self._schedule()
        except KeyboardInterrupt:
            interrupted = True
        except BaseException:  # a callback failed: a bug, so call no callback again
            self._on_done = None
            self._shutdown(grace)
            raise
        if interrupted:
            self._shutdown(grace)
            if self._callback_error is not None:
                raise self._callback_error
        return Report({key: self._results[key] for key in self._graph.tasks}, interrupted)

    def _schedule(self) -> bool:
        """Dispatch and settle tasks until all are settled (True) or ``cancel`` is set (False)."""
        while len(self._results) < len(self._graph.tasks):
            while self._ready and self._pool.busy < self._max_concurrent:
                if self._cancel.is_set():
                    return False
                key = self._ready.popleft()
                if self._on_start is not None:
                    self._on_start(key)
                self._pool.submit(self._graph.tasks[key])
            if self._cancel.is_set():
                return False
            if not self._pool.busy:
                raise RuntimeError("runner bug: tasks are left but none is ready or running")
            message = self._inbox.get()
            if message is None:
                return False
            self._pool.busy -= 1
            self._settle(message)
        return True

    def _settle(self, result: Result) -> None:
        settled = [result]
        if result.outcome is Outcome.FAILED:
            settled += self._dep_failed(result.key)
        for each in settled:
            self._results[each.key] = each
        if result.outcome is Outcome.SUCCEEDED:
            for dependent in self._graph.dependents[result.key]:
                self._waiting[dependent] -= 1
                if not self._waiting[dependent]:
                    self._ready.append(dependent)
        if self._on_done is not None:
            for each in settled:
                self._on_done(each)

    def _dep_failed(self, root: str) -> list[Result]:
        """DEP_FAILED results for the unsettled transitive dependents of ``root``, in rank order."""
        found: dict[str, Result] = {}
        stack = [root]
        while stack:
            for dependent in self._graph.dependents[stack.pop()]:
                # None of them can have started; one already settled was settled with its own.
                if dependent not in self._results and dependent not in found:
                    found[dependent] = Result(dependent, Outcome.DEP_FAILED, failed_dep=root)
                    stack.append(dependent)
        return sorted(found.values(), key=lambda result: self._graph.rank[result.key])

    def _shutdown(self, grace: float) -> None:
        """Set cancel, start nothing more, give running calls ``grace`` seconds, cancel the rest."""
        deadline = time.monotonic() + max(grace, 0.0)
        try:
            self._cancel.set()
            running = self._pool.stop()
            for message in self._inbox.drain():  # finished before stop(), not yet settled
                if message is not None and message.key not in self._results:
                    self._results[message.key] = message
                    self._notify(message)
            pending = {key for key in running if key not in self._results}
            self._stopping(sorted(pending, key=self._graph.rank.__getitem__), grace)
            while pending:
                message = self._inbox.get(timeout=deadline - time.monotonic())
                if message is not None and message.key in pending:
                    pending.discard(message.key)
                    self._results[message.key] = message
                    self._notify(message)
        except (queue.Empty, KeyboardInterrupt):  # grace is over, or a second Ctrl-C
            self._cancel.set()
            self._pool.stop()  # idempotent; in case the second Ctrl-C came before it
        cancelled = [
            Result(key, Outcome.CANCELLED) for key in self._graph.tasks if key not in self._results
        ]
        cancelled.sort(key=lambda result: self._graph.rank[result.key])
        for result in cancelled:
            self._results[result.key] = result
        with contextlib.suppress(KeyboardInterrupt):
            for result in cancelled:
                self._notify(result)

    def _stopping(self, running: list[str], grace: float) -> None:
        """Call on_stop once; an error it raises is kept, as on_done's is."""
        if self._on_stop is None or self._callback_error is not None:
            return
        try:
            self._on_stop(running, grace)
        except Exception as exc:
            self._callback_error = exc

    def _notify(self, result: Result) -> None:
        """Call on_done during shutdown; an error it raises is kept, and it is not called again."""
        if self._on_done is None or self._callback_error is not None:
            return
        try:
            self._on_done(result)
        except Exception as exc:
            self._callback_error = exc
