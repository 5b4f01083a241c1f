"""The Cloud Batch API client: which endpoint and credentials, and calls that outlast outages.

``client(endpoint)`` talks to Google with application default credentials, or to a local
server (``localhost:PORT``, e.g. ``confpipe.testing.batch.FakeBatch``) over an insecure
channel that reconnects quickly. ``call`` retries UNAVAILABLE and DEADLINE_EXCEEDED with
backoff for up to ``api_timeout`` seconds; the client's own retries are turned off so
there is one policy, here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from confpipe import cancel
from confpipe.errors import ConfigError, StepFailed

if TYPE_CHECKING:
    from google.cloud import batch_v1

logger = logging.getLogger(__name__)
T = TypeVar("T")
CALL_TIMEOUT = 30.0  # seconds per API call
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def client(endpoint: str | None) -> batch_v1.BatchServiceClient:
    """The Batch client: Google's endpoint with default credentials, or ``endpoint``."""
    try:
        from google.cloud import batch_v1
    except ImportError:
        raise ConfigError(
            "backend=gcp needs google-cloud-batch: pip install 'confpipe[gcp]'"
        ) from None
    host = (endpoint or "").removeprefix("http://")
    if host.rsplit(":", 1)[0] in LOCAL_HOSTS:
        import grpc
        from google.cloud.batch_v1.services.batch_service.transports import (
            BatchServiceGrpcTransport,
        )

        options = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
        ]
        channel = grpc.insecure_channel(host, options=options)
        return batch_v1.BatchServiceClient(transport=BatchServiceGrpcTransport(channel=channel))
    from google.auth import exceptions as auth_exceptions

    try:
        return batch_v1.BatchServiceClient(client_options={"api_endpoint": host} if host else None)
    except auth_exceptions.DefaultCredentialsError as err:
        raise ConfigError(
            f"backend=gcp: no Google credentials ({err}); run `gcloud auth application-default "
            "login` or set GOOGLE_APPLICATION_CREDENTIALS"
        ) from None


def close(api: batch_v1.BatchServiceClient) -> None:
    cast(Any, api.transport).close()


def transient() -> tuple[type[BaseException], ...]:
    """The errors worth retrying: the service is down or slow, not refusing the request."""
    from google.api_core import exceptions

    return (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded)


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
                    step, f"Cloud Batch unreachable for {api_timeout:g}s: {err}"
                ) from err
            logger.info("step %r: Cloud Batch: %s; retrying in %.2fs", step, err, delay)
        if not cancellable:
            time.sleep(delay)
        elif scope.wait(delay):
            raise StepFailed(step, f"cancelled: {scope.reason}")
        delay = min(delay * 2, 10.0)
