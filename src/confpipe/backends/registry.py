"""Backend kinds, each with its settings class and its builder: ``make_backend(kind, ...)``.

One entry per kind (``_KINDS``): the settings class is also the Hydra schema of the
``backend`` node (``confpipe.config.schema`` registers it, ``settings_class`` names it), and
the builder makes a checked instance of it into the backend. ``settings`` given to
``make_backend`` is the resolved ``backend`` node (plain data whose keys the compiler has
checked against that class); the class checks every value (one ConfigError line naming the
key). The gcp builder imports ``confpipe.backends.gcp.router`` when chosen: a local run
loads none of the Batch and TPU modules (and never Google's SDKs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from confpipe.backends import Backend, BackendKind
from confpipe.backends import local as local_backend
from confpipe.backends.gcp.settings import GcpConf
from confpipe.backends.settings import BackendConf
from confpipe.errors import ConfigError, did_you_mean

__all__ = ["make_backend", "settings_class", "settings_classes"]


def make_backend(kind: object, settings: Mapping[str, Any], *, prefix: str) -> Backend:
    """The backend of ``kind`` (``backend.kind``), built from its ``settings`` for runs under
    ``prefix``; ConfigError for an unknown kind or a wrong setting."""
    try:
        known = BackendKind(kind)
    except ValueError:
        kinds = [k.value for k in BackendKind]
        raise ConfigError(
            f"backend.kind: unknown backend {kind!r}{did_you_mean(str(kind), kinds)}; "
            f"backends: {', '.join(kinds)}"
        ) from None
    schema, build = _KINDS[known]
    return build(schema(**settings), prefix)


def settings_class(kind: object) -> type[BackendConf]:
    """The settings class of backend ``kind`` (``BackendConf`` for an unknown kind)."""
    try:
        return _KINDS[BackendKind(kind)][0]
    except ValueError:
        return BackendConf


def settings_classes() -> dict[str, type[BackendConf]]:
    """Each kind's settings class, by the kind's name."""
    return {kind.value: schema for kind, (schema, _) in _KINDS.items()}


def _local(settings: BackendConf, prefix: str) -> Backend:
    return local_backend.build(settings)


def _gcp(settings: BackendConf, prefix: str) -> Backend:
    # imported when chosen: the Batch and TPU modules (catalogues, requests) cost a local run
    from confpipe.backends.gcp import router

    assert isinstance(settings, GcpConf)
    return router.build(settings, prefix=prefix)


_KINDS: dict[BackendKind, tuple[type[BackendConf], Callable[[BackendConf, str], Backend]]] = {
    BackendKind.LOCAL: (BackendConf, _local),
    BackendKind.GCP: (GcpConf, _gcp),
}
