"""The Cloud Batch and Cloud TPU API clients: endpoint, credentials, calls that outlast outages.

``batch_client(endpoint)`` and ``tpu_client(endpoint)`` talk to Google with application
default credentials, or to a local server (``localhost:PORT``, e.g. ``FakeBatch``,
``FakeTpu``) over an insecure channel that reconnects quickly. ``call`` retries UNAVAILABLE
and DEADLINE_EXCEEDED with backoff for up to ``api_timeout`` seconds, and
``wait_operation`` waits for a long-running operation the same way; the clients' own
retries are turned off so there is one policy, here. Each SDK is imported on use
(google-cloud-tpu only by ``tpu_client``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from confpipe import cancel
from confpipe.errors import ConfigError, StepFailed

if TYPE_CHECKING:
    from google.cloud import batch_v1, tpu_v2

__all__ = [
    "BATCH", "CALL_TIMEOUT", "TPU", "batch_client", "call", "close", "tpu_client", "transient",
    "wait_operation",
]  # fmt: skip

logger = logging.getLogger(__name__)
T = TypeVar("T")
C = TypeVar("C")
BATCH, TPU = "Cloud Batch", "Cloud TPU"  # the services, as messages name them
CALL_TIMEOUT = 30.0  # seconds per API call
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
CHANNEL_OPTIONS = [  # a local server that restarts is found again within half a second
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def batch_client(endpoint: str | None) -> batch_v1.BatchServiceClient:
    """The Batch client: Google's endpoint with default credentials, or ``endpoint``."""
    with _needs("backend=gcp needs google-cloud-batch"):
        from google.cloud import batch_v1
        from google.cloud.batch_v1.services.batch_service import transports
    return _client(endpoint, batch_v1.BatchServiceClient, transports.BatchServiceGrpcTransport)


def tpu_client(endpoint: str | None) -> tpu_v2.TpuClient:
    """The Cloud TPU client (v2: stable, with queued resources), like ``batch_client``."""
    with _needs("TPU steps on backend=gcp need google-cloud-tpu"):
        from google.cloud import tpu_v2
        from google.cloud.tpu_v2.services.tpu import transports
    return _client(endpoint, tpu_v2.TpuClient, transports.TpuGrpcTransport)


@contextlib.contextmanager
def _needs(what: str) -> Iterator[None]:
    """Imports of an optional SDK: a missing one is a ConfigError saying how to install it."""
    try:
        yield
    except ImportError:
        raise ConfigError(f"{what}: pip install 'confpipe[gcp]'") from None


def _client(endpoint: str | None, make: Callable[..., C], grpc_transport: Callable[..., Any]) -> C:
    """``make`` (a client class) for Google's endpoint with default credentials, or for
    ``endpoint``: a loopback one gets ``grpc_transport`` over an insecure channel."""
    host = (endpoint or "").removeprefix("http://")
    if host.rsplit(":", 1)[0] in LOCAL_HOSTS:
        import grpc

        channel = grpc.insecure_channel(host, options=CHANNEL_OPTIONS)
        return make(transport=grpc_transport(channel=channel))
    from google.auth import exceptions as auth_exceptions

    try:
        return make(client_options={"api_endpoint": host} if host else None)
    except auth_exceptions.DefaultCredentialsError as err:
        raise ConfigError(
            f"backend=gcp: no Google credentials ({err}); run `gcloud auth application-default "
            "login` or set GOOGLE_APPLICATION_CREDENTIALS"
        ) from None


def close(api: object) -> None:
    """Close the client's channel (the client can't be used afterwards)."""
    cast(Any, api).transport.close()


def transient() -> tuple[type[BaseException], ...]:
    """The errors worth retrying: the service is down or slow, not refusing the request."""
    from google.api_core import exceptions

    return (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded)


def call(
    service: str,
    step: str,
    method: Callable[..., T],
    request: object,
    api_timeout: float,
    *,
    cancellable: bool = True,
) -> T:
    """``method(request)``, retrying transient errors with backoff for up to ``api_timeout``.

    ``service`` names the API in messages (``Cloud Batch``). A cancelled step stops
    waiting, unless ``cancellable`` is false (a delete must land).
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
                    step, f"{service} unreachable for {api_timeout:g}s: {err}"
                ) from err
            logger.info("step %r: %s: %s; retrying in %.2fs", step, service, err, delay)
        if not cancellable:
            time.sleep(delay)
        elif scope.wait(delay):
            raise StepFailed(step, f"cancelled: {scope.reason}")
        delay = min(delay * 2, 10.0)


def wait_operation(service: str, step: str, what: str, operation: Any, api_timeout: float) -> None:
    """Wait (cancellably) until the long-running ``operation`` (a ``what``, e.g. ``create``)
    is done; raise its error, if any."""
    scope = cancel.current()
    deadline = time.monotonic() + api_timeout
    delay = 0.05
    while True:
        with contextlib.suppress(*transient()):
            if operation.done(retry=None):
                break
        if time.monotonic() > deadline:
            raise StepFailed(step, f"{service}: {what} not done after {api_timeout:g}s")
        if scope.wait(delay):
            raise StepFailed(step, f"cancelled: {scope.reason}")
        delay = min(delay * 2, 5.0)
    error = operation.exception()
    if error is not None:
        raise error
