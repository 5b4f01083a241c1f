"""The ``backend`` settings made into the Backend they select (local or gcp), each value checked.

``make_backend(settings, prefix=...)`` takes the resolved ``backend`` node (plain data whose
keys the compiler has checked against its schema) and builds the backend, raising one
ConfigError line per wrong value; ``missing_setting(key)`` says how to set a mandatory
setting left at ``???``. For ``gcp``, ``storage_endpoint`` points this process's ``gs://``
store at an emulator (``storage.configure``) and ``stage_code`` stages the working tree under
``{prefix}/.confpipe/code``. Backends, and Google's SDKs, are imported only when built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import MISSING

from confpipe import storage
from confpipe.backends import Backend, BackendKind
from confpipe.errors import ConfigError
from confpipe.explain import did_you_mean
from confpipe.schema import GcpConf, parse_size
from confpipe.status import RECORDS

__all__ = ["make_backend", "missing_setting"]

_HOW_TO_SET = {  # a mandatory setting -> (what it is, an example)
    "project": ("the Google Cloud project the jobs run in", "my-project"),
    "region": ("the region the jobs run in", "us-central1"),
    "image": (
        "the container image the jobs run in (confpipe installed)",
        "us-docker.pkg.dev/my-project/ml/confpipe:latest",
    ),
}


def make_backend(settings: Mapping[str, Any], *, prefix: str) -> Backend:
    """The backend ``settings["kind"]`` names, built from its checked ``settings``."""
    kind = settings.get("kind")
    if kind == BackendKind.LOCAL.value:
        return _local(settings)
    if kind == BackendKind.GCP.value:
        return _gcp(GcpConf(**settings), prefix)
    kinds = [k.value for k in BackendKind]
    raise ConfigError(
        f"backend.kind: unknown backend {kind!r}{did_you_mean(str(kind), kinds)}; "
        f"backends: {', '.join(kinds)}"
    )


def missing_setting(key: str) -> str:
    """The message for ``backend.KEY`` left unset: what it is and how to set it."""
    what, example = _HOW_TO_SET.get(key, ("a value", "..."))
    return f"backend.{key}: missing; set {what}, e.g. backend.{key}={example}"


def _local(settings: Mapping[str, Any]) -> Backend:
    from confpipe.backends.local import LocalBackend

    cpu = settings.get("cpu")
    if cpu is not None and not cpu > 0:
        raise ConfigError(f"backend.cpu: must be a positive number of CPUs, got {cpu!r}")
    memory = settings.get("memory")
    if memory is not None:
        try:
            memory = parse_size(memory)
        except ValueError as err:
            raise ConfigError(f"backend.memory: {err}") from None
        if memory <= 0:
            got = settings["memory"]
            raise ConfigError(f"backend.memory: must be positive, got {got!r}; use e.g. 16GiB")
    return LocalBackend(cpu=cpu, memory=memory)


def _gcp(conf: GcpConf, prefix: str) -> Backend:
    """Cloud Batch in ``conf.project``; nothing is sent until a step is submitted."""
    for key in ("cpu", "memory"):
        if getattr(conf, key) is not None:
            raise ConfigError(
                f"backend.{key}: only the local backend has a {key} budget; with backend=gcp "
                f"each step's resources.{key} sizes its own machine, so drop backend.{key}"
            )
    for key in ("project", "region", "image"):
        value = getattr(conf, key)
        if value is None or value == MISSING or not str(value).strip():
            raise ConfigError(missing_setting(key))
    for key in ("poll_interval", "api_timeout"):
        value = getattr(conf, key)
        if not value > 0:
            raise ConfigError(f"backend.{key}: must be a positive number of seconds, got {value!r}")
    if conf.storage_endpoint:
        storage.configure(storage_endpoint=conf.storage_endpoint)
    from confpipe.backends.batch import BatchBackend

    code = f"{storage.local_path(prefix).rstrip('/')}/{RECORDS}/code" if conf.stage_code else None
    return BatchBackend(
        conf.project,
        conf.region,
        conf.image,
        service_account=conf.service_account,
        network=conf.network,
        subnetwork=conf.subnetwork,
        labels=conf.labels,
        poll_interval=conf.poll_interval,
        batch_endpoint=conf.batch_endpoint,
        stage_code=code,
        api_timeout=conf.api_timeout,
        storage_endpoint=conf.storage_endpoint,
    )
