"""The runner's thread plumbing: worker threads, and an inbox the calling thread sleeps on.

Private to ``confpipe.engine.runner``, and as dumb as it: the pool runs jobs it is given (anything
with a ``key``) through one function and posts what that returns to the inbox; neither knows
what a task or a result is. ``get()`` on the inbox blocks without polling, yet still wakes
for Ctrl-C, for ``wake()`` and for every message a worker posts.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["Inbox", "Pool", "watch_cancel"]

# How long the thread that watches a caller's cancel event may outlive the run. It wakes at
# once when the event is set; this timeout only lets it notice that the run is over.
_WATCH_REAP_SECONDS = 0.5


class Keyed(Protocol):
    """A job for the pool: its key names it among the calls in progress."""

    @property
    def key(self) -> str: ...


M = TypeVar("M")
J = TypeVar("J", bound=Keyed)


class Inbox(Generic[M]):
    """Messages from the workers (``None``: a wake-up); a blocked get() also wakes for Ctrl-C.

    A blocked lock or queue in the main thread does not wake for ``_thread.interrupt_main()``
    nor for a signal delivered to another thread. So the calling thread blocks on a socket
    that every put() writes a byte to and that is also the signal wake-up fd while we run.
    """

    def __init__(self) -> None:
        self._items: queue.SimpleQueue[M | None] = queue.SimpleQueue()
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._lock = threading.Lock()
        self._closed = False
        self._old_wakeup_fd: int | None = None

    def __enter__(self) -> Inbox[M]:
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

    def put(self, message: M | None) -> None:
        """Deliver ``message`` and wake the calling thread (any thread may call this)."""
        self._items.put(message)
        with self._lock, contextlib.suppress(BlockingIOError):  # full: a wake-up is pending
            if not self._closed:
                self._writer.send(b"\0")

    def wake(self) -> None:
        """Deliver ``None``: get() returns it, e.g. to say that cancel was set."""
        self.put(None)

    def get(self, timeout: float | None = None) -> M | None:
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

    def drain(self) -> list[M | None]:
        """The messages already delivered, without waiting."""
        messages = []
        with contextlib.suppress(queue.Empty):
            while True:
                messages.append(self._items.get_nowait())
        return messages


class Pool(Generic[J, M]):
    """Daemon worker threads, created when needed and reused; each makes one call at a time.

    A worker passes each job to ``run`` and posts what it returns to the inbox. ``run`` must
    not raise: the runner's returns what a task raised as the task's result.
    """

    def __init__(self, inbox: Inbox[M], run: Callable[[J], M]) -> None:
        self._inbox = inbox
        self._run = run
        self._jobs: queue.SimpleQueue[J | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running: set[str] = set()  # as the workers see it, under _lock
        self._stopping = False
        self._closed = False
        self.busy = 0  # submitted and not yet answered, as the calling thread sees it

    def submit(self, job: J) -> None:
        self.busy += 1
        if self.busy > len(self._threads):
            name = f"confpipe-runner-{len(self._threads)}"
            thread = threading.Thread(target=self._work, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._jobs.put(job)

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
                self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                if self._stopping:
                    continue
                self._running.add(job.key)
            result = self._run(job)
            with self._lock:
                self._running.discard(job.key)
                self._inbox.put(result)
            del job, result  # keep no finished value alive while idle


def watch_cancel(cancel: threading.Event, run_over: threading.Event, inbox: Inbox[M]) -> None:
    """Wake the calling thread when someone sets ``cancel``; return when the run is over."""
    while not cancel.wait(_WATCH_REAP_SECONDS):
        if run_over.is_set():
            return
    inbox.wake()
