"""Backend kinds and how each is built: ``make_backend(kind, settings, prefix=...)``.

``settings`` is the resolved ``backend`` node (plain data whose keys the compiler has
checked against the kind's schema); each builder makes it into the kind's settings class,
which checks every value (one ConfigError line naming the key), and builds the backend.
``local`` is ``confpipe.backends.local``; ``gcp`` is ``confpipe.backends.gcp.router``'s
``GcpBackend``, imported only when chosen, so that a local run pays for none of the gcp
modules (and never for Google's SDKs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from confpipe.backends import Backend, BackendKind
from confpipe.backends import local as local_backend
from confpipe.backends.gcp.settings import GcpConf
from confpipe.backends.settings import BackendConf
from confpipe.errors import ConfigError, did_you_mean

__all__ = ["make_backend"]


def make_backend(kind: object, settings: Mapping[str, Any], *, prefix: str) -> Backend:
    """The backend of ``kind`` (``backend.kind``), built from its ``settings`` for runs under
    ``prefix``; ConfigError for an unknown kind or a wrong setting."""
    try:
        build = _BUILDERS[BackendKind(kind)]
    except ValueError:
        kinds = [k.value for k in BackendKind]
        raise ConfigError(
            f"backend.kind: unknown backend {kind!r}{did_you_mean(str(kind), kinds)}; "
            f"backends: {', '.join(kinds)}"
        ) from None
    return build(settings, prefix)


def _local(settings: Mapping[str, Any], prefix: str) -> Backend:
    return local_backend.build(BackendConf(**settings))


def _gcp(settings: Mapping[str, Any], prefix: str) -> Backend:
    # imported when chosen: the gcp modules (catalogues, staging, requests) cost a local run
    from confpipe.backends.gcp import router

    return router.build(GcpConf(**settings), prefix=prefix)


_BUILDERS: dict[BackendKind, Callable[[Mapping[str, Any], str], Backend]] = {
    BackendKind.LOCAL: _local,
    BackendKind.GCP: _gcp,
}
