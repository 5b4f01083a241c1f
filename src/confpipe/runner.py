"""Run a DAG of tasks on a few threads, starting each task as soon as its dependencies succeeded.

Deliberately dumb: a task is a key, the keys it depends on and a callable. The runner knows
nothing about steps, caching, locks or remote jobs; those are wrapped into ``Task.call``.

It is event-driven: worker threads post each result to an inbox that the calling thread
blocks on (no polling), so a dependent starts as soon as the calling thread sees its last
dependency succeed. A failure settles only the failure's dependents (``DEP_FAILED``).
Ctrl-C (or ``cancel`` set by another thread) stops launching, sets ``cancel`` so running
tasks can return early, waits up to ``grace`` seconds for them and reports the rest as
``CANCELLED``.
"""

from __future__ import annotations

import contextlib
import difflib
import queue
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from confpipe.errors import ConfigError

__all__ = ["Outcome", "Report", "Result", "Task", "execute"]

# How long the thread that watches a caller's cancel event may outlive the run. It wakes at
# once when the event is set; this timeout only lets it notice that the run is over.
_WATCH_REAP_SECONDS = 0.5


class Outcome(Enum):
    """How a task ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEP_FAILED = "dep_failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Task:
    """One unit of work: ``call`` runs once every task named in ``deps`` has succeeded."""

    key: str
    deps: tuple[str, ...]
    call: Callable[[], object]


@dataclass(frozen=True)
class Result:
    """The end of one task: its value, its error, or the failed task that kept it from running."""

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


def execute(
    tasks: Sequence[Task],
    *,
    max_concurrent: int,
    cancel: threading.Event | None = None,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[Result], None] | None = None,
    grace: float = 5.0,
) -> Report:
    """Run ``tasks`` with at most ``max_concurrent`` calls in flight and report how each ended.

    Raises ValueError for duplicate keys, unknown dependencies or ``max_concurrent < 1``, and
    ConfigError for a dependency cycle, before anything runs. A task that raises is FAILED and
    never re-raised. ``on_start`` and ``on_done`` run in the calling thread; an error they
    raise propagates after the run was stopped as on Ctrl-C. Ctrl-C is not re-raised: the
    report says ``interrupted``.
    """
    graph = _Graph(tasks, max_concurrent)
    if not tasks:
        return Report({}, interrupted=False)
    watched = cancel
    cancel = threading.Event() if cancel is None else cancel
    with _Inbox() as inbox:
        pool = _Pool(inbox)
        run = _Run(graph, pool, inbox, cancel, on_start, on_done, max_concurrent)
        run_over = threading.Event()
        if watched is not None:
            args = (watched, run_over, inbox)
            threading.Thread(target=_watch, args=args, name="confpipe-cancel", daemon=True).start()
        try:
            report = run.go(grace)
        except BaseException:
            pool.close(wait=False)
            raise
        finally:
            run_over.set()
        pool.close(wait=not report.interrupted)
    return report


class _Graph:
    """The validated tasks: each one's distinct deps, its dependents and its topological rank."""

    def __init__(self, tasks: Sequence[Task], max_concurrent: int) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self.tasks: dict[str, Task] = {}
        for task in tasks:
            if task.key in self.tasks:
                raise ValueError(f"duplicate task key {task.key!r}")
            self.tasks[task.key] = task
        self.deps = {key: tuple(dict.fromkeys(task.deps)) for key, task in self.tasks.items()}
        self.dependents: dict[str, list[str]] = {key: [] for key in self.tasks}
        for key, deps in self.deps.items():
            for dep in deps:
                if dep not in self.tasks:
                    close = difflib.get_close_matches(dep, self.tasks, n=3)
                    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                    raise ValueError(f"task {key!r} depends on {dep!r}, which is not a task{hint}")
                self.dependents[dep].append(key)
        self.roots = [key for key, deps in self.deps.items() if not deps]
        # Kahn's algorithm, FIFO in input order: the order the runner uses with one thread.
        self.rank: dict[str, int] = {}
        waiting = {key: len(deps) for key, deps in self.deps.items()}
        ready = deque(self.roots)
        while ready:
            key = ready.popleft()
            self.rank[key] = len(self.rank)
            for dependent in self.dependents[key]:
                waiting[dependent] -= 1
                if not waiting[dependent]:
                    ready.append(dependent)
        if len(self.rank) < len(self.tasks):
            cycle = " -> ".join(self._cycle())
            raise ConfigError(
                f"dependency cycle: {cycle} (each task depends on the next;"
                " remove one of these dependencies)"
            )

    def _cycle(self) -> list[str]:
        """One cycle among the unranked tasks, from its earliest task in input order, closed."""
        # Every unranked task waits on an unranked dep, so following them must loop.
        position = {key: i for i, key in enumerate(self.tasks)}
        node = next(key for key in self.tasks if key not in self.rank)
        path: list[str] = []
        seen: dict[str, int] = {}
        while node not in seen:
            seen[node] = len(path)
            path.append(node)
            node = next(dep for dep in self.deps[node] if dep not in self.rank)
        cycle = path[seen[node] :]
        first = min(range(len(cycle)), key=lambda i: position[cycle[i]])
        cycle = cycle[first:] + cycle[:first]
        return [*cycle, cycle[0]]


class _Inbox:
    """Results from the workers (``None``: cancel was set); a blocked get() also wakes for Ctrl-C.

    A blocked lock or queue in the main thread does not wake for ``_thread.interrupt_main()``
    nor for a signal delivered to another thread. So the calling thread blocks on a socket
    that every put() writes a byte to and that is also the signal wake-up fd while we run.
    """

    def __init__(self) -> None:
        self._items: queue.SimpleQueue[Result | None] = queue.SimpleQueue()
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._lock = threading.Lock()
        self._closed = False
        self._old_wakeup_fd: int | None = None

    def __enter__(self) -> _Inbox:
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError):  # e.g. in a subinterpreter
                fd = self._writer.fileno()
                self._old_wakeup_fd = signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._old_wakeup_fd is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
        with self._lock:  # a worker still running after the grace period may put() later
            self._closed = True
            self._reader.close()
            self._writer.close()

    def put(self, message: Result | None) -> None:
        """Deliver ``message`` and wake the calling thread (any thread may call this)."""
        self._items.put(message)
        with self._lock, contextlib.suppress(BlockingIOError):  # full: a wake-up is pending
            if not self._closed:
                self._writer.send(b"\0")

    def get(self, timeout: float | None = None) -> Result | None:
        """Block until a message arrives; raise queue.Empty after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with contextlib.suppress(queue.Empty):
                return self._items.get_nowait()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise queue.Empty
            self._reader.settimeout(remaining)
            with contextlib.suppress(TimeoutError):
                self._reader.recv(4096)

    def drain(self) -> list[Result | None]:
        """The messages already delivered, without waiting."""
        messages = []
        with contextlib.suppress(queue.Empty):
            while True:
                messages.append(self._items.get_nowait())
        return messages


class _Pool:
    """Daemon worker threads, created when needed and reused; each makes one call at a time."""

    def __init__(self, inbox: _Inbox) -> None:
        self._inbox = inbox
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running: set[str] = set()  # as the workers see it, under _lock
        self._stopping = False
        self._closed = False
        self.busy = 0  # submitted and not yet answered, as the calling thread sees it

    def submit(self, task: Task) -> None:
        self.busy += 1
        if self.busy > len(self._threads):
            name = f"confpipe-runner-{len(self._threads)}"
            thread = threading.Thread(target=self._work, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._tasks.put(task)

    def stop(self) -> set[str]:
        """Start no more calls; return the keys of the calls in progress.

        Any call not in the returned set either never started or has its result in the inbox.
        """
        with self._lock:
            self._stopping = True
            running = set(self._running)
        self.close(wait=False)
        return running

    def close(self, *, wait: bool) -> None:
        """Let each worker exit once idle; ``wait`` joins them (only when none is busy)."""
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._tasks.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            with self._lock:
                if self._stopping:
                    continue
                self._running.add(task.key)
            try:
                result = Result(task.key, Outcome.SUCCEEDED, value=task.call())
            except BaseException as exc:  # SystemExit in a task must not kill the scheduler
                result = Result(task.key, Outcome.FAILED, error=exc)
            with self._lock:
                self._running.discard(task.key)
                self._inbox.put(result)
            del task, result  # keep no finished value alive while idle


def _watch(cancel: threading.Event, run_over: threading.Event, inbox: _Inbox) -> None:
    """Wake the calling thread when someone sets ``cancel``; return when the run is over."""
    while not cancel.wait(_WATCH_REAP_SECONDS):
        if run_over.is_set():
            return
    inbox.put(None)


class _Run:
    """The calling thread's bookkeeping for one execute(): what is ready, running and settled."""

    def __init__(
        self,
        graph: _Graph,
        pool: _Pool,
        inbox: _Inbox,
        cancel: threading.Event,
        on_start: Callable[[str], None] | None,
        on_done: Callable[[Result], None] | None,
        max_concurrent: int,
    ) -> None:
        self._graph = graph
        self._pool = pool
        self._inbox = inbox
        self._cancel = cancel
        self._on_start = on_start
        self._on_done = on_done
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

    def _notify(self, result: Result) -> None:
        """Call on_done during shutdown; an error it raises is kept, and it is not called again."""
        if self._on_done is None or self._callback_error is not None:
            return
        try:
            self._on_done(result)
        except Exception as exc:
            self._callback_error = exc
