"""fsspec ``memory://`` as a Store: one process's objects under one lock (tests, dry runs)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable

from confpipe.storage.base import Blob


class MemoryStore:
    """fsspec ``memory://``: one process's objects, guarded by one lock (tests, dry runs)."""

    _lock = threading.Lock()
    _versions = itertools.count(1)

    def __init__(self) -> None:
        import fsspec

        self.fs = fsspec.filesystem("memory")

    retry_window = 0.0  # a local call fails at once; it never retries

    def read(self, path: str) -> Blob | None:
        with self._lock:
            return self._read(path)

    def read_many(self, paths: Iterable[str]) -> list[Blob | None]:
        with self._lock:
            return [self._read(p) for p in paths]

    def create(self, path: str, data: bytes) -> str | None:
        with self._lock:
            if self._key(path) in self.fs.store:
                return None
            return self._put(path, data)

    def replace(self, path: str, data: bytes, version: str) -> str | None:
        with self._lock:
            current = self._read(path)
            if current is None or current.version != version:
                return None
            return self._put(path, data)

    def delete(self, path: str, version: str) -> bool:
        with self._lock:
            current = self._read(path)
            if current is None or current.version != version:
                return False
            self.fs.rm_file(self._key(path))
            return True

    def write(self, path: str, data: bytes) -> None:
        with self._lock:
            self._put(path, data)

    def now(self) -> float:
        return time.time()

    def _key(self, path: str) -> str:
        return str(self.fs._strip_protocol(path))

    def _read(self, path: str) -> Blob | None:
        obj = self.fs.store.get(self._key(path))
        if obj is None:
            return None
        version = getattr(obj, "_confpipe_version", None)
        if version is None:  # written by someone else through fsspec
            version = obj._confpipe_version = str(next(self._versions))
        return Blob(bytes(obj.getvalue()), version, obj.modified.timestamp())

    def _put(self, path: str, data: bytes) -> str:
        key = self._key(path)
        self.fs.pipe_file(key, data)
        version = str(next(self._versions))
        self.fs.store[key]._confpipe_version = version
        return version
