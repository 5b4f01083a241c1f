"""A store clock the test moves: ``ClockedStore(store).advance(seconds)`` makes time pass for
leases (and every other record) without sleeping.

The lock judges a lease by the store's clock, ``store.now() - blob.mtime >= lease_timeout``.
``ClockedStore`` wraps a real store (local, ``memory://``, ``gs://``) and runs its clock
``advance``d seconds ahead. An object written through it after an advance reads back with
its mtime moved ahead by as much, so it is exactly as fresh as it really is; every other
object (written before the advance, or not through this wrapper: a dead launch's lease)
looks that much older. Everything else is the wrapped store's own behaviour.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from confpipe.storage import Blob, Store


class ClockedStore:
    """``inner`` with its clock ``offset`` seconds ahead of the real one."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.offset = 0.0
        self._written_at: dict[str, float] = {}  # version -> the offset when it was written
        self._writing = 0  # writes under way: their versions may land before they are noted
        self._noted = threading.Condition()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on the store's clock: objects age, nobody heartbeats."""
        with self._noted:
            self.offset += seconds

    @property
    def fs(self) -> Any:
        return self.inner.fs

    @property
    def retry_window(self) -> float:
        return self.inner.retry_window

    def now(self) -> float:
        return self.inner.now() + self.offset

    def read(self, path: str) -> Blob | None:
        return self._shifted(self.inner.read(path))

    def read_many(self, paths: Iterable[str]) -> list[Blob | None]:
        return [self._shifted(blob) for blob in self.inner.read_many(paths)]

    def create(self, path: str, data: bytes) -> str | None:
        return self._written(self.inner.create, path, data)

    def replace(self, path: str, data: bytes, version: str) -> str | None:
        return self._written(self.inner.replace, path, data, version)

    def delete(self, path: str, version: str) -> bool:
        return self.inner.delete(path, version)

    def write(self, path: str, data: bytes) -> None:
        def write_then_read(path: str, data: bytes) -> str | None:
            self.inner.write(path, data)
            blob = self.inner.read(path)  # write() returns no version
            return None if blob is None else blob.version

        self._written(write_then_read, path, data)

    def _written(self, write: Callable[..., str | None], *args: Any) -> str | None:
        """Run ``write`` and note its version's offset (the offset when the write began)."""
        with self._noted:
            offset = self.offset
            self._writing += 1
        version = None
        try:
            version = write(*args)
        finally:
            with self._noted:
                self._writing -= 1
                if version is not None:
                    self._written_at[version] = offset
                self._noted.notify_all()
        return version

    def _shifted(self, blob: Blob | None) -> Blob | None:
        if blob is None:
            return None
        with self._noted:  # a version read before its write returned: wait for its note
            self._noted.wait_for(lambda: blob.version in self._written_at or not self._writing)
            offset = self._written_at.get(blob.version, 0.0)
        return replace(blob, mtime=blob.mtime + offset)
