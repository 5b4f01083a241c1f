"""The Cloud TPU API client (``google.cloud.tpu_v2``): endpoint, credentials, outage-proof calls.

v2 is the API's stable version and has queued resources (Create/Get/List/Delete), so v2alpha1
is not needed. ``client(endpoint)`` talks to Google with application default credentials,
or to a local server (``localhost:PORT``, e.g. ``confpipe.testing.tpu.FakeTpu``) over an
insecure channel that reconnects quickly. ``call`` retries UNAVAILABLE and
DEADLINE_EXCEEDED with backoff for up to ``api_timeout`` seconds (the client's own retries
are off, so there is one policy, here).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from confpipe import cancel
from confpipe.backends.batch_api import CALL_TIMEOUT, LOCAL_HOSTS, transient
from confpipe.errors import ConfigError, StepFailed

if TYPE_CHECKING:
    from google.cloud import tpu_v2

__all__ = ["CALL_TIMEOUT", "call", "client", "close", "transient"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


def client(endpoint: str | None) -> tpu_v2.TpuClient:
    """The Cloud TPU client: Google's endpoint with default credentials, or ``endpoint``."""
    try:
        from google.cloud import tpu_v2
    except ImportError:
        raise ConfigError(
            "TPU steps on backend=gcp need google-cloud-tpu: pip install 'confpipe[gcp]'"
        ) from None
    host = (endpoint or "").removeprefix("http://")
    if host.rsplit(":", 1)[0] in LOCAL_HOSTS:
        import grpc
        from google.cloud.tpu_v2.services.tpu.transports import TpuGrpcTransport

        options = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
        ]
        channel = grpc.insecure_channel(host, options=options)
        return tpu_v2.TpuClient(transport=TpuGrpcTransport(channel=channel))
    from google.auth import exceptions as auth_exceptions

    try:
        return tpu_v2.TpuClient(client_options={"api_endpoint": host} if host else None)
    except auth_exceptions.DefaultCredentialsError as err:
        raise ConfigError(
            f"backend=gcp: no Google credentials ({err}); run `gcloud auth application-default "
            "login` or set GOOGLE_APPLICATION_CREDENTIALS"
        ) from None


def close(api: tpu_v2.TpuClient) -> None:
    cast(Any, api.transport).close()


def call(
    step: str,
    method: Callable[..., T],
    request: object,
    api_timeout: float,
    *,
    cancellable: bool = True,
) -> T:
    """``method(request)``, retrying transient errors with backoff for up to ``api_timeout``.

    A cancelled step stops waiting, unless ``cancellable`` is false (a delete must land).
    """
    scope = cancel.current()
    deadline = time.monotonic() + api_timeout
    delay = 0.25
    while True:
        try:
            return method(request=request, retry=None, timeout=CALL_TIMEOUT)
        except transient() as err:
            if time.monotonic() + delay > deadline:
                raise StepFailed(
                    step, f"Cloud TPU unreachable for {api_timeout:g}s: {err}"
                ) from err
            logger.info("step %r: Cloud TPU: %s; retrying in %.2fs", step, err, delay)
        if not cancellable:
            time.sleep(delay)
        elif scope.wait(delay):
            raise StepFailed(step, f"cancelled: {scope.reason}")
        delay = min(delay * 2, 10.0)
