"""The few atomic primitives each store offers; records, leases and jobs build on these.

Every store kind (local files, fsspec ``memory://``, and ``gs://`` in ``confpipe.gcs``)
implements the same small ``Store`` protocol: read a small object with its version and the
store's own timestamp, create-if-absent, compare-and-swap on the version, delete-if-version,
and an atomic overwrite. Objects are always replaced whole, never modified in place, so a
reader sees either the old or the new content. ``store_for(url)`` picks the store; the
``gs://`` one (and gcsfs, google-auth) is imported only when a ``gs://`` URL is used, and
``configure(storage_endpoint=...)`` points it elsewhere (an emulator) before first use.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from confpipe.errors import ConfigError


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


_tmp_counter = itertools.count()


class LocalStore:
    """Local (or locally mounted) files: hard-link create, rename overwrite, flock-guarded CAS."""

    @property
    def fs(self) -> Any:  # imported on use: a local job's worker should not pay for fsspec
        import fsspec

        return fsspec.filesystem("file")

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


class MemoryStore:
    """fsspec ``memory://``: one process's objects, guarded by one lock (tests, dry runs)."""

    _lock = threading.Lock()
    _versions = itertools.count(1)

    def __init__(self) -> None:
        import fsspec

        self.fs = fsspec.filesystem("memory")

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


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()
_gcs_options: dict[str, Any] = {}
_SUPPORTED = ("a local path or file://", "memory://", "gs://")
_ALIASES = {"local": "file", "gcs": "gs"}


def split_protocol(url: str) -> tuple[str | None, str]:
    """``("gs", "bucket/x")`` for ``gs://bucket/x``; ``(None, path)`` for a plain path."""
    protocol, sep, rest = url.partition("://")
    if sep and protocol.isidentifier():
        return protocol, rest
    return None, url


def store_for(url: str) -> Store:
    """The Store serving ``url`` (one shared instance per protocol)."""
    protocol, _ = split_protocol(url)
    kind = _ALIASES.get(protocol or "file", protocol or "file")
    store = _stores.get(kind)
    if store is None:
        with _stores_lock:
            store = _stores.get(kind)
            if store is None:
                store = _stores[kind] = _new_store(kind, url)
    return store


def configure(*, storage_endpoint: str | None = None, token: Any = None) -> None:
    """Where this process's ``gs://`` store sends requests (call it before the first use).

    ``storage_endpoint``: an emulator's URL (``http://127.0.0.1:4443``) or another Cloud
    Storage endpoint; None: ``$STORAGE_EMULATOR_HOST`` if set, else Google. ``token``: as
    gcsfs takes it; with an endpoint and no token the client is anonymous. An endpoint is
    also exported as ``STORAGE_EMULATOR_HOST``, so that step functions using gcsfs or
    google-cloud-storage themselves, in this process or in local jobs, reach it too.
    """
    if storage_endpoint:
        os.environ["STORAGE_EMULATOR_HOST"] = storage_endpoint
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    with _stores_lock:
        _gcs_options.clear()
        _gcs_options.update(endpoint=storage_endpoint, token=token)
        _stores.pop("gs", None)


def _new_store(kind: str, url: str) -> Store:
    if kind == "file":
        return LocalStore()
    if kind == "memory":
        return MemoryStore()
    if kind == "gs":
        try:
            from confpipe.gcs import GcsStore
        except ImportError as err:
            missing = (err.name or "").partition(".")[0]
            if missing not in ("gcsfs", "google", "aiohttp"):
                raise
            raise ConfigError(
                f"{kind}://{split_protocol(url)[1].partition('/')[0]}: gs:// needs confpipe's "
                f"gcp extra (missing: {missing}); install it "
                "with pip install 'confpipe[gcp]' (from a checkout: pip install -e '.[gcp]')"
            ) from err
        return GcsStore(**_gcs_options)
    raise ConfigError(
        f"prefix {url!r}: storage {kind}:// has no atomic create/compare-and-swap in "
        f"confpipe; use {' or '.join(_SUPPORTED)}"
    )


def check_writable(folder: str) -> None:
    """Raise ConfigError if outputs can't go under ``folder`` (writes nothing): a local folder
    under a file or in a folder this user can't write, a gs:// bucket that doesn't exist."""
    protocol, path = split_protocol(folder)
    if protocol in (None, "file", "local"):
        existing = local_path(folder)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise ConfigError(
                f"prefix {folder!r}: {existing} is a file, not a folder; choose another prefix"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(
                f"prefix {folder!r}: {existing} is not writable by this user; choose another prefix"
            )
    elif protocol in ("gs", "gcs"):
        bucket = path.partition("/")[0]
        try:  # a listing (which a run needs anyway), not buckets.get (which it may lack)
            store_for(folder).fs.call("GET", "b/{}/o", bucket, json_out=True, maxResults=1)
        except FileNotFoundError:
            raise ConfigError(
                f"prefix {folder!r}: bucket gs://{bucket} doesn't exist; create it or choose "
                "another prefix"
            ) from None
        except Exception:  # no permission to list, no network: the run will say what it meets
            return


def local_path(url: str) -> str:
    """An absolute path for a local URL (``file://`` stripped), unchanged for other stores."""
    protocol, path = split_protocol(url)
    if protocol in (None, "file", "local"):
        return os.path.abspath(
            os.path.expanduser(path if protocol is None else "/" + path.lstrip("/"))
        )
    return url
