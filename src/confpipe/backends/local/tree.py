"""A local job's process tree: which processes are the job's, what memory they hold, its end.

A job's worker runs in a session and process group of its own, but what it starts need not
stay there: a child started with ``setsid`` (``start_new_session``) leaves the group, and
once its parent exits it is re-parented to init, out of reach of any tree walk. So the tree
is walked while the job runs (``sample``, every ``POLL_INTERVAL`` seconds, every job's from
one scan of the process table: ``ProcessTable``) and every descendant seen is remembered;
when the job ends, or is cancelled, its process group and each remembered process still
alive are stopped (``signal``, ``end``). ``sample`` also
sums the resident memory (RSS) of the job's processes and keeps the peak: the local
backend enforces ``resources.memory`` with it.

Granularity, documented for users: a process that is started and leaves the group within
one interval of the job's end escapes; a job may go over its memory for up to one
interval before it is killed (so a fast allocation can still meet the kernel's OOM
killer first); pages shared between the tree's processes (after a fork) count once per
process. psutil is imported with the first job: a run without jobs never loads it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

POLL_INTERVAL = 0.25  # seconds between two walks of a running job's tree
MiB = 2**20
GiB = 2**30


class ProcessTable:
    """Who is whose child, from one scan of this machine's processes: every job's walk of a
    tick reads the same scan, so the cost does not grow with the number of jobs."""

    def __init__(self) -> None:
        import psutil  # lazily, as ProcessTree

        self.children: dict[int, list[psutil.Process]] = {}
        for proc in psutil.process_iter(["ppid"]):
            ppid = proc.info.get("ppid")
            if ppid is not None:
                self.children.setdefault(ppid, []).append(proc)


class ProcessTree:
    """The processes of the job led by ``pid``, a group leader not reaped yet (so its group
    id can't be reused while the tree is stopped)."""

    def __init__(self, pid: int) -> None:
        import psutil  # lazily: a run without local jobs never pays for it

        self.pid = pid
        self.peak = 0  # the most RSS the tree held at once, in bytes, as sampled
        self._psutil = psutil
        try:
            self._leader = psutil.Process(pid)
        except psutil.Error as err:  # as the start of a job that can't be watched
            raise OSError(f"can't watch process {pid}: {err}") from err
        self._known: dict[int, psutil.Process] = {}  # descendants ever seen, still running
        self._lock = threading.Lock()
        self._group_gone = False  # the leader is reaped and no process is left in its group

    def sample(self, table: ProcessTable) -> int:
        """Remember each descendant ``table`` shows the leader has; the RSS of the job's
        processes now."""
        error = self._psutil.Error
        found, todo = [], [self.pid]
        while todo:
            for child in table.children.get(todo.pop(), ()):
                found.append(child)
                todo.append(child.pid)
        with self._lock:
            for child in found:
                self._known.setdefault(child.pid, child)
            self._known = {pid: p for pid, p in self._known.items() if _running(p, error)}
            procs = [self._leader, *self._known.values()]
        rss = 0
        for proc in procs:
            with contextlib.suppress(error):
                rss += proc.memory_info().rss
        self.peak = max(self.peak, rss)
        return rss

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the job's process group and to every descendant seen outside it."""
        with self._lock:
            procs = list(self._known.values())
            if not self._group_gone:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, sig)
        for proc in procs:
            with contextlib.suppress(self._psutil.Error):
                proc.send_signal(sig)  # psutil checks the pid was not reused

    def end(self, reap: Callable[[], object], grace: float) -> int:
        """Stop what is left of the tree once its leader has exited: SIGTERM, then SIGKILL
        after ``grace`` seconds; ``reap`` reaps the leader once its group has the SIGTERM.
        How many processes were left running (the group counts as one when it had members
        the walks never saw)."""
        self.signal(signal.SIGTERM)
        reap()
        left = len(self._alive()) + (0 if self._group_empty() else 1)
        deadline = time.monotonic() + grace
        while (self._alive() or not self._group_empty()) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._alive() or not self._group_empty():
            self.signal(signal.SIGKILL)
        return left

    def _alive(self) -> list[psutil.Process]:
        error = self._psutil.Error
        with self._lock:
            return [p for p in self._known.values() if _running(p, error)]

    def _group_empty(self) -> bool:
        """No live process is left in the job's group (its leader is reaped: see ``end``);
        zombies don't count (an init that reaps slowly must not hold the job up)."""
        with self._lock:
            if self._group_gone:
                return True
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                self._group_gone = True
                return True
            except PermissionError:
                pass
        psutil = self._psutil
        for proc in psutil.process_iter(["status"]):
            with contextlib.suppress(OSError, psutil.Error):
                if proc.info["status"] != "zombie" and os.getpgid(proc.pid) == self.pid:
                    return False
        return True


def _running(proc: psutil.Process, error: type[Exception]) -> bool:
    """Alive and not a zombie; False for a pid reused by another process."""
    try:
        return bool(proc.is_running() and proc.status() != "zombie")
    except error:
        return False


def wait_exit(pid: int) -> None:
    """Return when the child ``pid`` has exited, leaving it unreaped: its process group id
    stays its own until the group has been stopped (``ProcessTree.end``)."""
    while True:
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        except InterruptedError:
            continue
        except ChildProcessError:
            pass
        return


def size_text(size: int) -> str:
    """``128 MiB``, ``1.5 GiB``: a memory size as a job's failure reports it."""
    if size >= GiB:
        return f"{size / GiB:.1f}".removesuffix(".0") + " GiB"
    return f"{size / MiB:.0f} MiB"
