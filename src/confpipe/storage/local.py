"""Local (or locally mounted) files as a Store.

Create is a hard link of a temporary file, overwrite a rename, and compare-and-swap a rename
under ``flock`` on the record's folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from confpipe.storage.base import Blob

_tmp_counter = itertools.count()


class LocalStore:
    """Local (or locally mounted) files: hard-link create, rename overwrite, flock-guarded CAS."""

    @property
    def fs(self) -> Any:  # imported on use: a local job's worker should not pay for fsspec
        import fsspec

        return fsspec.filesystem("file")

    retry_window = 0.0  # a local call fails at once; it never retries

    def read(self, path: str) -> Blob | None:
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                return Blob(f.read(), _version(st), st.st_mtime)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_many(self, paths: Iterable[str]) -> list[Blob | None]:
        return [self.read(p) for p in paths]

    def create(self, path: str, data: bytes) -> str | None:
        tmp = self._write_tmp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
        finally:
            os.unlink(tmp)
        return _version(os.stat(path))

    def replace(self, path: str, data: bytes, version: str) -> str | None:
        with self._guard(path):
            current = self._stat_version(path)
            if current != version:
                return None
            os.replace(self._write_tmp(path, data), path)
            return _version(os.stat(path))

    def delete(self, path: str, version: str) -> bool:
        with self._guard(path):
            if self._stat_version(path) != version:
                return False
            os.unlink(path)
            return True

    def write(self, path: str, data: bytes) -> None:
        os.replace(self._write_tmp(path, data), path)

    def now(self) -> float:
        return time.time()

    @staticmethod
    def _write_tmp(path: str, data: bytes) -> str:
        tmp = f"{path}.tmp-{os.getpid()}-{next(_tmp_counter)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException:  # a full disk, say: leave no half-written temporary behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp

    @staticmethod
    def _stat_version(path: str) -> str | None:
        try:
            return _version(os.stat(path))
        except FileNotFoundError:
            return None

    @staticmethod
    @contextmanager
    def _guard(path: str) -> Iterator[None]:
        """Serialize CAS on one folder across processes (the kernel drops it if we die)."""
        try:
            fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        except FileNotFoundError:  # no folder: the object is absent, CAS fails below
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _version(st: os.stat_result) -> str:
    return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"
