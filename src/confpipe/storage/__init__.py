"""The storage layer: the few atomic primitives each store kind offers, for records and leases.

base        ``Blob`` and the ``Store`` protocol: the seam every store kind implements
local       local (or mounted) files: hard-link create, rename overwrite, flock-guarded CAS
memory      fsspec ``memory://``: one process's objects under one lock (tests, dry runs)
gcs         ``gs://`` on Cloud Storage's JSON API through gcsfs, with the server's clock
gcsreach    a ``gs://`` server that is down: the retry window, fast failures, quiet tracebacks
probe       whether a folder can be made (a real run tries; a dry run reads the mounts)

Every store kind implements the same small ``Store`` protocol: read a small object with its
version and the store's own timestamp, create-if-absent, compare-and-swap on the version,
delete-if-version, and an atomic overwrite. Objects are always replaced whole, never modified
in place, so a reader sees either the old or the new content. ``store_for(url)`` picks the
store; the ``gs://`` one (and gcsfs, google-auth) is imported only when a ``gs://`` URL is
used, and ``configure(storage_endpoint=...)`` points it elsewhere (an emulator) before first
use.

May import: ``confpipe.errors`` only (gcsfs and google-auth lazily, in ``gcs``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from confpipe.errors import ConfigError
from confpipe.storage.base import Blob, Store, StoreUnreachable
from confpipe.storage.local import LocalStore
from confpipe.storage.memory import MemoryStore

__all__ = [
    "loss_level",
    "Blob",
    "LocalStore",
    "MemoryStore",
    "Store",
    "StoreUnreachable",
    "check_writable",
    "configure",
    "local_path",
    "split_protocol",
    "store_for",
]

_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()
_gcs_options: dict[str, Any] = {}
_SUPPORTED = ("a local path or file://", "memory://", "gs://")
_ALIASES = {"local": "file", "gcs": "gs"}


def loss_level(err: BaseException) -> int:
    """The level to log a record or log that could not be written at: DEBUG when the store is
    unreachable (the step's failure already says so, once), WARNING otherwise."""
    return logging.DEBUG if isinstance(err, StoreUnreachable) else logging.WARNING


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
            from confpipe.storage.gcs import GcsStore  # lazy: gcsfs and google-auth are heavy
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
