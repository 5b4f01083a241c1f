"""Each running thread step's log: its stdout, stderr and logging records in its own log.txt.

Thread steps share one process, so their output is routed by thread: while a run lasts
(``routing``), ``sys.stdout`` and ``sys.stderr`` are proxies and the root logger has one more
handler; each sends what the current thread writes to that thread's active ``StepLog``
(``captured`` makes one around a step's call), or to where it went before when no step runs
in the thread. Threads a step starts itself are not followed: what they print goes to the
terminal as before. When the last run ends, everything is put back as it was.

A ``StepLog`` on a local prefix appends to ``{output}/.confpipe/log.txt`` as lines come; on
any other store it buffers and uploads the whole log when the step ends, and every
``FLUSH_EVERY`` seconds while it runs, when something new was written. A step that prints
nothing has no log, and opens no file: an earlier attempt's log is removed as the step
starts (on a remote store by the uploading thread, so the round trip overlaps the step's
work rather than lengthening its commit), unless the caller says, with ``first_attempt``,
that no attempt ran before. A step that
raises ends its log with the traceback, as a job's log does (not echoed: the run's summary
shows the failure). Each complete line is
also echoed (the reporter shows it prefixed with the step's name), at most ``ECHO_BURST``
lines at once and ``ECHO_RATE`` lines a second after that, so a chatty step can't slow the
run down: the lines held back are counted, and the file always gets everything, up to its
cap: its first 1 MiB and its last 9 MiB (``logcap``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from confpipe.backends import LOG_DATEFMT, LOG_FORMAT
from confpipe.engine.logcap import LogCap
from confpipe.storage import loss_level, store_for

__all__ = ["FLUSH_EVERY", "StepLog", "captured", "first_attempt", "routing"]

FLUSH_EVERY = 5.0  # seconds between uploads of a running step's log to a remote store
ECHO_BURST = 200  # lines echoed at once before the rate applies
ECHO_RATE = 50.0  # lines echoed per second, once the burst is spent
NOTE_EVERY = 2.0  # seconds between notes of how many lines were held back
_PARTIAL_LIMIT = 64 * 1024  # characters of an unfinished line kept for its echo

Echo = Callable[[str], None]

_here = threading.local()  # .log: the StepLog of the step running in this thread, if any
_formatter = logging.Formatter(LOG_FORMAT, LOG_DATEFMT)


def _current() -> StepLog | None:
    return getattr(_here, "log", None)


class StepLog:
    """The log of one attempt of one step: ``path`` (started afresh), and ``echo`` for each
    complete line. Logging records below ``level`` are left out."""

    def __init__(
        self,
        path: str,
        echo: Echo | None = None,
        level: int = logging.INFO,
        *,
        earlier: bool = True,
    ) -> None:
        self.path, self.echo, self.level = path, echo, level
        self._earlier = earlier  # False: no earlier attempt left a remote log to remove
        self._lock = threading.Lock()
        self._partial = ""
        self._tokens, self._refilled = float(ECHO_BURST), time.monotonic()
        self._held = 0  # lines not echoed since the last note that said how many
        self._noted = -NOTE_EVERY  # when that note was echoed
        self._closed = False
        self._failed: OSError | None = None  # writing the local log failed
        self._file: TextIO | None = None
        self._buffer: io.StringIO | None = None
        self._dirty = False
        self._cap = LogCap()  # the log keeps its head and its tail (logcap)
        self._size = 0  # characters in the log (file or buffer), about its bytes
        self._stop: threading.Event | None = None
        self._flusher: threading.Thread | None = None
        if "://" in path:
            self._buffer, self._stop = io.StringIO(), threading.Event()
            self._flusher = threading.Thread(
                target=self._flush_every, name="confpipe-steplog", daemon=True
            )
            self._flusher.start()
        else:  # a fresh attempt starts a fresh log, made when the step first prints (an
            # unlink costs next to nothing: done even on a first attempt, which appends)
            with contextlib.suppress(OSError):  # none yet; or in the way: said at close
                os.unlink(path)

    def write(self, text: str, echo: bool = True) -> None:
        """Append ``text`` (from a stream or a formatted record) and echo its complete lines
        (unless not ``echo``)."""
        if not text:
            return
        with self._lock:
            if self._closed:
                return
            self._size += len(text)
            if self._buffer is not None:
                self._buffer.write(text)
                self._dirty = True
                if self._cap.due(self._size):
                    self._compact_buffer()
            elif self._failed is None:  # line-buffered: each line lands as it comes
                try:
                    if self._file is None:
                        self._file = _open(self.path)
                    self._file.write(text)
                    if self._cap.due(self._size):
                        self._compact_file()
                except OSError as err:  # the step goes on (its log is the loss: said at close)
                    self._failed = err
            if self.echo is None or not echo:
                return
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()[-_PARTIAL_LIMIT:]
            shown = self._admitted(lines)
        self._echo(shown)

    def close(self) -> None:
        """Echo the unfinished last line and the count of lines held back; write the log
        out (an upload, for a remote one). Later writes are dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            rest = [self._partial.rpartition("\r")[2]] if self._partial.strip() else []
            if self._held:
                rest.append(self._held_note())
        if self._stop is not None and self._flusher is not None:
            self._stop.set()
            self._flusher.join()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
                if self._cap.over(self._size):  # within the cap once it ends
                    self._cap.compact_file(self.path)
        elif self._buffer is not None:
            self._upload()
        if self._failed is not None:
            logging.getLogger(__name__).log(
                loss_level(self._failed), "could not write %s: %s", self.path, self._failed
            )
        if self.echo is not None:
            self._echo(rest)

    def _compact_file(self) -> None:
        """Bring the local log back within its cap and append to it anew (lock held)."""
        assert self._file is not None
        self._file.close()
        self._size = self._cap.compact_file(self.path)
        self._file = _open(self.path)

    def _compact_buffer(self) -> None:
        """Bring the buffered log back within its cap (lock held)."""
        assert self._buffer is not None
        data = self._cap.compact(self._buffer.getvalue().encode(errors="replace"))
        self._buffer = io.StringIO(data.decode(errors="replace"))
        self._buffer.seek(0, io.SEEK_END)
        self._size = len(data)

    def _admitted(self, lines: list[str]) -> list[str]:
        """The lines to echo now, as a terminal shows them (the text after a last ``\\r``),
        after the count of those held back before them, if any (lock held)."""
        now = time.monotonic()
        self._tokens = min(ECHO_BURST, self._tokens + (now - self._refilled) * ECHO_RATE)
        self._refilled = now
        shown = min(len(lines), int(self._tokens))
        self._tokens -= shown
        note = []
        if shown and self._held and now - self._noted >= NOTE_EVERY:
            note, self._noted = [self._held_note()], now
        self._held += len(lines) - shown
        return [*note, *(line.rpartition("\r")[2] for line in lines[:shown])]

    def _held_note(self) -> str:
        note = f"... {self._held} more line(s) not shown here; all are in {self.path}"
        self._held = 0
        return note

    def _echo(self, lines: list[str]) -> None:
        """Echo ``lines`` with this thread's capture off: what the echo writes or logs goes
        to the terminal, never back into this log."""
        if not lines or self.echo is None:
            return
        saved, _here.log = _current(), None
        try:
            for line in lines:
                self.echo(line)
        finally:
            _here.log = saved

    def _flush_every(self) -> None:
        """Remove an earlier attempt's log, then upload what is new every ``FLUSH_EVERY``."""
        assert self._stop is not None
        if self._earlier:
            self._remove_earlier()
        while not self._stop.wait(FLUSH_EVERY):
            if self._dirty:
                self._upload()

    def _upload(self) -> None:
        """Write the whole log (an object store can't append); a step that printed nothing
        leaves none (an earlier attempt's went as this one started)."""
        with self._lock:
            assert self._buffer is not None
            if self._cap.over(self._size):
                self._compact_buffer()
            data, self._dirty = self._buffer.getvalue().encode(errors="replace"), False
        if not data:  # an earlier attempt's log was removed as this one started
            return
        try:
            store_for(self.path).write(self.path, data)
        except Exception as err:  # the step goes on; its log is the loss
            logging.getLogger(__name__).log(
                loss_level(err), "could not write %s: %s", self.path, err
            )

    def _remove_earlier(self) -> None:
        """Delete an earlier attempt's log (in the flusher thread, as the step starts: the
        round trip overlaps the step's work, not its commit); uploads come after it."""
        try:
            with contextlib.suppress(FileNotFoundError):
                store_for(self.path).fs.rm(self.path)
        except Exception as err:  # the step goes on; the stale log is the loss
            logging.getLogger(__name__).log(
                loss_level(err), "could not remove %s: %s", self.path, err
            )


def _open(path: str) -> TextIO:
    """The log file, line-buffered, closed by ``StepLog.close``."""
    return open(path, "a", buffering=1, encoding="utf-8", errors="replace")


@contextlib.contextmanager
def first_attempt() -> Iterator[None]:
    """Say, around a ``captured`` call in this thread, that no attempt of the step ran before
    (its RUNNING record was created, not replaced): no earlier log can exist, so a remote
    one is not removed, which saves the step that round trip."""
    saved, _here.first = getattr(_here, "first", False), True
    try:
        yield
    finally:
        _here.first = saved


def captured(
    fn: Callable[..., Any], *, path: str, echo: Echo | None = None, level: str = "INFO"
) -> Callable[..., Any]:
    """``fn`` whose output, while it runs in this thread, goes to a fresh ``StepLog``."""
    number = logging.getLevelName(level)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with routing(number):
            log = StepLog(path, echo, number, earlier=not getattr(_here, "first", False))
            saved, _here.log = _current(), log
            try:
                return fn(*args, **kwargs)
            except BaseException as err:  # the log ends as a job's does: with the traceback
                # (also for sys.exit() in a step, which the runner records as its failure)
                log.write("".join(traceback.format_exception(err)), echo=False)
                raise
            finally:
                _here.log = saved
                log.close()

    return run


class _Router:
    """What ``sys.stdout`` / ``sys.stderr`` is during a run: the current step's log, or the
    stream it replaced. Everything else is the replaced stream's."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def write(self, text: str) -> int:
        log = _current()
        if log is None:
            written = self._real.write(text)
            return len(text) if written is None else int(written)
        log.write(text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _current() is None:
            self._real.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _RouteHandler(logging.Handler):
    """On the root logger during a run: a record of a thread running a step goes to its log
    (at its level); any other record is told only where Python would have told it with no
    handler installed (``logging.lastResort``), at the level the root logger had."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_formatter)
        self.outside = logging.WARNING  # the root logger's level before the run

    def emit(self, record: logging.LogRecord) -> None:
        log = _current()
        if log is not None:
            if record.levelno >= log.level:
                log.write(self.format(record) + "\n")
            return
        last = logging.lastResort
        alone = all(h is self for h in logging.getLogger().handlers)
        if alone and last is not None and record.levelno >= max(self.outside, last.level):
            last.handle(record)


class _Routing:
    """What ``routing`` installed and what it replaced (guarded by ``_guard``)."""

    def __init__(self) -> None:
        self.users = 0
        self.levels: list[int] = []
        self.handler = _RouteHandler()
        self.saved: dict[str, Any] = {}


_guard = threading.Lock()
_routing = _Routing()


@contextlib.contextmanager
def routing(level: int = logging.INFO) -> Iterator[None]:
    """Route each thread's output to its step's log while the block lasts (nested and
    concurrent blocks share one installation); records from ``level`` up reach the root
    logger. The last block to end puts back the streams, handler and levels it replaced."""
    with _guard:
        _install(level)
    try:
        yield
    finally:
        with _guard:
            _uninstall(level)


def _install(level: int) -> None:
    r, root = _routing, logging.getLogger()
    if r.users == 0:
        r.saved = {
            "stdout": sys.stdout, "stderr": sys.stderr, "level": root.level,
            "handlers": {h: h.level for h in root.handlers},
        }  # fmt: skip
        outside = root.getEffectiveLevel()
        r.handler.outside = outside
        for handler in root.handlers:  # they keep telling what they told before
            if handler.level == logging.NOTSET:
                handler.setLevel(outside)
        for name in ("stdout", "stderr"):  # none (pythonw, a daemon): nothing to route
            if getattr(sys, name) is not None:
                setattr(sys, name, _Router(getattr(sys, name)))
        root.addHandler(r.handler)
    r.users += 1
    r.levels.append(level)
    if root.getEffectiveLevel() > level:
        root.setLevel(level)


def _uninstall(level: int) -> None:
    r, root = _routing, logging.getLogger()
    r.users -= 1
    r.levels.remove(level)
    if r.users:
        return
    root.removeHandler(r.handler)
    root.setLevel(r.saved["level"])
    for handler, was in r.saved["handlers"].items():
        handler.setLevel(was)
    for name in ("stdout", "stderr"):  # unless someone replaced our proxy meanwhile
        if isinstance(getattr(sys, name), _Router):
            setattr(sys, name, r.saved[name])
    r.saved = {}
