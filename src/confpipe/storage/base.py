"""The storage seam: ``Blob`` and the ``Store`` protocol of atomic primitives every kind implements.

A ``Blob`` is a small object's content, version and store-clock mtime; ``StoreUnreachable``
is what a store raises when its server has not answered for its retry window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol


class StoreUnreachable(ConnectionError):
    """The store's server did not answer within the store's retry window (``retry_window``);
    the message says which server and for how long. (Not a TimeoutError: fsspec turns those
    into a bare ``FSTimeoutError``.)"""


@dataclass(frozen=True)
class Blob:
    """A small object's content, its opaque version and its last-modified time (store clock).

    ``read_many`` may round the mtime up (gs://: to the second), never down: ages computed
    from it are never overestimated.
    """

    data: bytes
    version: str
    mtime: float


class Store(Protocol):
    """The per-store seam: everything above uses only these methods."""

    @property
    def fs(self) -> Any:
        """The fsspec filesystem, for outputs and job folders."""
        ...

    @property
    def retry_window(self) -> float:
        """Seconds one primitive may keep retrying a failing store before it raises (0: it
        fails at once). The lock warns when a lease is too short to ride it out."""
        ...

    def read(self, path: str) -> Blob | None:
        """The object at ``path`` or None if absent."""
        ...

    def read_many(self, paths: Iterable[str]) -> list[Blob | None]:
        """Like ``read`` for many paths (mtimes maybe rounded up); stores with round trips do
        them concurrently."""
        ...

    def create(self, path: str, data: bytes) -> str | None:
        """Write ``path`` only if absent, atomically; its version, or None if it existed."""
        ...

    def replace(self, path: str, data: bytes, version: str) -> str | None:
        """Overwrite ``path`` only if its version is still ``version``; new version or None."""
        ...

    def delete(self, path: str, version: str) -> bool:
        """Delete ``path`` only if its version is still ``version``."""
        ...

    def write(self, path: str, data: bytes) -> None:
        """Overwrite ``path`` unconditionally, atomically (readers never see a partial object)."""
        ...

    def now(self) -> float:
        """The store's clock, comparable with ``Blob.mtime``."""
        ...
