"""The size cap of a step's log (``.confpipe/log.txt``): its first ``LOG_HEAD`` bytes and its
last ``LOG_TAIL`` bytes, with one line between them saying how much was cut.

A chatty step would otherwise fill the disk with its log (and make the driver hold all of a
job's log to copy it). The head keeps how the step started, the tail how it ended. A thread
step's log on a local disk is appended to as lines come and compacted back to the cap each
time it grows ``LOG_TAIL`` bytes past it (so it never holds more than the cap plus
``LOG_TAIL``, and compacting costs the I/O of the bytes logged, once more); a log kept in
memory (a remote store's, a job's copy) is compacted the same way. The job's own log, in its
job folder, is the backend's, and is left whole.
"""

from __future__ import annotations

import os
from typing import BinaryIO

__all__ = ["LOG_HEAD", "LOG_TAIL", "LogCap", "cap", "read_capped"]

LOG_HEAD = 1024 * 1024  # bytes kept from the start of a step's log
LOG_TAIL = 9 * 1024 * 1024  # and from its end


def cut_line(cut: int) -> bytes:
    """The line that stands for the ``cut`` bytes between the head and the tail."""
    return (
        f"\n[confpipe: {cut:,} bytes of this log were cut here; a step's log keeps its first "
        f"{LOG_HEAD:,} and its last {LOG_TAIL:,} bytes]\n"
    ).encode()


class LogCap:
    """One log against the cap: how much was cut so far, and how long the line saying so,
    in place after the head, is."""

    def __init__(self) -> None:
        self.cut = 0
        self.marker = 0

    def over(self, size: int) -> bool:
        """A log of ``size`` bytes is past the cap."""
        return size > LOG_HEAD + self.marker + LOG_TAIL

    def due(self, size: int) -> bool:
        """A log of ``size`` bytes is to be compacted (``LOG_TAIL`` past the cap)."""
        return size > LOG_HEAD + self.marker + 2 * LOG_TAIL

    def compact(self, data: bytes) -> bytes:
        """``data`` (the whole log as it stands) back within the cap."""
        if not self.over(len(data)):
            return data
        skipped = len(data) - LOG_HEAD - self.marker - LOG_TAIL
        return self._join(data[:LOG_HEAD], skipped, data[-LOG_TAIL:])

    def compact_file(self, path: str) -> int:
        """Compact the local file at ``path`` (written anew and renamed into place), reading
        only its head and its tail; its new size."""
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if not self.over(size):
                return size
            f.seek(0)
            head = f.read(LOG_HEAD)
            f.seek(size - LOG_TAIL)
            tail = f.read()
        data = self._join(head, size - LOG_HEAD - self.marker - LOG_TAIL, tail)
        tmp = f"{path}.cap-{os.getpid()}"
        with open(tmp, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
        return len(data)

    def _join(self, head: bytes, skipped: int, tail: bytes) -> bytes:
        """The head, the line saying how much is cut in all, and the tail (from a line's
        start where one starts near its start)."""
        newline = tail.find(b"\n", 0, 4096)
        if newline >= 0:
            skipped, tail = skipped + newline + 1, tail[newline + 1 :]
        self.cut += skipped
        line = cut_line(self.cut)
        self.marker = len(line)
        return head + line + tail


def cap(data: bytes) -> bytes:
    """``data`` within the cap, in one go."""
    return LogCap().compact(data)


def read_capped(f: BinaryIO, size: int) -> bytes:
    """The capped content of the open binary file ``f`` of ``size`` bytes (of any store),
    reading only its head and its tail."""
    f.seek(0)
    if size <= LOG_HEAD + LOG_TAIL:
        return f.read()
    head = f.read(LOG_HEAD)
    f.seek(size - LOG_TAIL)
    return LogCap()._join(head, size - LOG_HEAD - LOG_TAIL, f.read())
