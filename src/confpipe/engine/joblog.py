"""A job's log seen from the driver: followed as it grows, then made the step's log.

``LogFollower`` reads only the new bytes of a running job's log (wherever the backend's
status says it is now: a local file, a spool, an object on gs://), at most every
``FOLLOW_EVERY`` seconds, ``FOLLOW_EVERY_REMOTE`` on a remote store where each read is a
request, and gives each new line to an echo (the reporter's ``step_output``).
``StepJobLogs`` copies each attempt's log, as it ends, to the step's ``.confpipe/log.txt``:
the last attempt's, after the earlier (preempted) ones' under a header each, within the
cap of a step's log (its first 1 MiB and its last 9 MiB: ``logcap``); the job's own log in
its job folder stays whole.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable

from confpipe.backends import JobState, JobStatus
from confpipe.engine import logcap
from confpipe.engine.logcap import cap, read_capped
from confpipe.storage import loss_level, store_for

__all__ = ["FOLLOW_EVERY", "FOLLOW_EVERY_REMOTE", "LogFollower", "StepJobLogs"]

FOLLOW_EVERY = 0.5  # seconds between reads of a running job's log on a local disk
FOLLOW_EVERY_REMOTE = 10.0  # and on a remote store (each read is a request)

logger = logging.getLogger(__name__)


class LogFollower:
    """A job's log as it grows: each new line given to ``echo``, the log's new bytes read
    at most every ``FOLLOW_EVERY`` seconds (``FOLLOW_EVERY_REMOTE`` on a remote store)."""

    def __init__(self, path: str, echo: Callable[[str], None] | None) -> None:
        self.path, self.echo = path, echo
        self.label = ""
        self.offset = 0  # bytes of the log read so far
        self._partial = b""
        self._last = -math.inf

    def at(self, status: JobStatus) -> None:
        """Follow the log ``status`` names (a spool, then its upload: the same bytes; another
        host's log: read from its start)."""
        path = status.log or self.path
        if status.log_label != self.label:
            self.offset, self._partial, self.label = 0, b"", status.log_label
        self.path = path

    def follow(self) -> None:
        """Echo the log's new lines, if it is time to look."""
        if self.echo is None:
            return
        now = time.monotonic()
        every = FOLLOW_EVERY_REMOTE if "://" in self.path else FOLLOW_EVERY
        if now - self._last >= every:
            self._last = now
            self._echo(self._new())

    def finish(self) -> bytes:
        """The log as it is now, within the cap (``logcap``: only its head and tail are
        read), echoing the lines not echoed yet (of its tail); b"" if none."""
        try:
            with store_for(self.path).fs.open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                rest = b""
                if self.echo is not None and size > self.offset:
                    f.seek(max(self.offset, size - logcap.LOG_TAIL))
                    rest = f.read()
                data = read_capped(f, size)
        except Exception as err:  # no log (a job that never started), or unreadable
            logger.debug("no log at %s: %s", self.path, err)
            return b""
        if rest:  # the lines not echoed yet, the last one ended
            self._echo(rest + (b"" if rest.endswith(b"\n") else b"\n"))
        self.offset = size
        return data

    def _new(self) -> bytes:
        try:
            data: bytes = store_for(self.path).fs.cat_file(self.path, start=self.offset)
        except Exception:  # not written yet, or nothing past the offset (a range error)
            return b""
        self.offset += len(data)
        return data

    def _echo(self, data: bytes) -> None:
        assert self.echo is not None
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self.echo(line.decode(errors="replace").rpartition("\r")[2])


class StepJobLogs:
    """A step's jobs' logs, copied to its log (``to``) as each attempt ends: the last
    attempt's, after the earlier (preempted) ones' under a header each."""

    def __init__(self, to: str | None, echo: Callable[[str], None] | None) -> None:
        self.to, self.echo = to, echo
        self.earlier = b""

    def ended(
        self, follower: LogFollower, job_dir: str, attempt: int, how: str,
        status: JobStatus | None = None,
    ) -> None:  # fmt: skip
        if status is not None:
            follower.at(status)
        data = follower.finish()
        if self.to is None:
            return
        if attempt or (status is not None and status.state is JobState.PREEMPTED):
            data = f"--- attempt {attempt + 1} ({how}), job {job_dir} ---\n".encode() + data
        text = self.earlier + data  # each attempt's log is capped (``finish``); with
        if self.earlier:  # earlier ones, the whole is (their cut lines count as cut)
            text = cap(text)
        if not text:  # a silent job: no log, as for a silent thread step
            return
        try:
            store_for(self.to).write(self.to, text)
        except Exception as err:  # the job's own log stays in its folder
            logger.log(loss_level(err), "could not copy the job's log to %s: %s", self.to, err)
        self.earlier = text if text.endswith(b"\n") or not text else text + b"\n"
