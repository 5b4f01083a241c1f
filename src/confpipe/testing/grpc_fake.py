"""What the fake Google APIs (``FakeBatch``, ``FakeTpu``) share: their in-process gRPC server.

Private to ``confpipe.testing``. ``GrpcFake`` serves the methods a fake lists in
``_services`` on a loopback port, records every request (``requests``, ``count``), turns
``Abort`` into the gRPC status the real service would answer, and can refuse connections
for a while (``refuse_connections``) to play an outage. What every Google API does alike
is here too: labels (``check_labels``), pages (``page``), long-running operations
(``Operations``); and the "image" a fake runs code in (``image_env``: this environment).
For ``main``: ``parser`` and ``serve`` (until Ctrl-C, or SIGTERM, which stops the fake and
what it runs cleanly).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from typing import Any, ClassVar, Self, TypeVar

import grpc
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2

__all__ = [
    "OPERATIONS", "Abort", "GrpcFake", "Methods", "Operations", "check_labels", "encode",
    "image_env", "page", "parser", "serve",
]  # fmt: skip

T = TypeVar("T")
OPERATIONS = "google.longrunning.Operations"
Methods = dict[str, tuple[Any, Callable[[Any], bytes]]]  # method -> (request class, handler)
_LABEL = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")


class Abort(Exception):
    """Ends the RPC with ``code`` and the message, as the real service would."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class GrpcFake:
    """A gRPC server on a free loopback port (or ``port``) for the methods of ``_services``.

    A subclass names its threads (``_name``), lists its services and stops what it runs in
    ``_shutdown``; its handlers take the request and return the response's bytes.
    """

    _name: ClassVar[str]  # e.g. "fake-batch": the prefix of the server's thread names

    def __init__(self, port: int = 0) -> None:
        self.requests: list[tuple[str, Any]] = []  # (method, request), in arrival order
        self._port = port
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self._timers: list[threading.Thread] = []

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self._port}"

    def start(self) -> Self:
        self._server = self._serve()
        return self

    def stop(self) -> None:
        """Stop serving, then whatever the fake runs (``_shutdown``)."""
        for timer in self._timers:  # a refusal in progress ends first (it restarts serving)
            timer.join()
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
        self._shutdown()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, method: str | None = None) -> int:
        """How many requests (of ``method``, e.g. ``"ListJobs"``) arrived."""
        with self._lock:
            return sum(1 for m, _ in self.requests if method in (None, m))

    def refuse_connections(self, seconds: float) -> None:
        """Stop the server now (connections are refused) and serve again after ``seconds``."""
        assert self._server is not None, "start() the fake first"
        self._server.stop(grace=None).wait()
        timer = threading.Thread(
            target=self._restart, args=(seconds,), name=f"{self._name}-restart", daemon=True
        )
        self._timers.append(timer)
        timer.start()

    def _services(self) -> Mapping[str, Methods]:
        """Each gRPC service's full name -> its methods."""
        raise NotImplementedError

    def _shutdown(self) -> None:
        """Stop what the fake runs (the server has stopped)."""

    def _restart(self, seconds: float) -> None:
        time.sleep(seconds)
        self._server = self._serve()

    def _serve(self) -> grpc.Server:
        pool = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"{self._name}-grpc")
        server = grpc.server(pool)
        for service, methods in self._services().items():
            handlers = {
                name: grpc.unary_unary_rpc_method_handler(
                    self._handler(name, fn),
                    request_deserializer=getattr(cls, "deserialize", None) or cls.FromString,
                )
                for name, (cls, fn) in methods.items()
            }
            server.add_generic_rpc_handlers(
                [grpc.method_handlers_generic_handler(service, handlers)]
            )
        for _ in range(50):  # the port may take a moment to be free again after a stop
            with contextlib.suppress(RuntimeError):
                self._port = server.add_insecure_port(
                    self.endpoint if self._port else "127.0.0.1:0"
                )
                if self._port:
                    break
            time.sleep(0.05)
        server.start()
        return server

    def _handler(self, method: str, fn: Callable[[Any], bytes]) -> Callable[..., bytes]:
        def handle(request: Any, context: grpc.ServicerContext) -> bytes:
            copy = type(request)(request) if _plus(request) else request
            with self._lock:
                self.requests.append((method, copy))
            try:
                return fn(request)
            except Abort as err:
                context.abort(err.code, str(err))
                raise  # unreachable: abort raises

        return handle


class Operations:
    """A fake's long-running operations, and the ``OPERATIONS`` service that reads them.

    ``uncancellable`` is what CancelOperation answers (UNIMPLEMENTED).
    """

    def __init__(self, uncancellable: str) -> None:
        self._uncancellable = uncancellable
        self._lock = threading.Lock()
        self._table: dict[str, operations_pb2.Operation] = {}

    def add(self, operation: operations_pb2.Operation) -> bytes:
        """Keep the (pending) ``operation``; its bytes, as an RPC that starts it answers."""
        with self._lock:
            self._table[operation.name] = operation
            return self._bytes(operation.name)

    def finish(self, name: str, response: Any) -> None:
        """The operation ``name`` is done with ``response`` (a protobuf message)."""
        packed = any_pb2.Any()
        packed.Pack(response)
        with self._lock:
            operation = self._table[name]
            operation.done = True
            operation.response.CopyFrom(packed)

    def serialized(self, name: str) -> bytes:
        with self._lock:
            return self._bytes(name)

    def methods(self) -> Methods:
        return {
            "GetOperation": (operations_pb2.GetOperationRequest, self._get),
            "ListOperations": (operations_pb2.ListOperationsRequest, self._list),
            "DeleteOperation": (operations_pb2.DeleteOperationRequest, self._delete),
            "CancelOperation": (operations_pb2.CancelOperationRequest, self._cancel),
        }

    def _bytes(self, name: str) -> bytes:
        operation = self._table.get(name)
        if operation is None:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"operation {name} not found")
        return bytes(operation.SerializeToString())

    def _get(self, request: operations_pb2.GetOperationRequest) -> bytes:
        return self.serialized(request.name)

    def _list(self, request: operations_pb2.ListOperationsRequest) -> bytes:
        with self._lock:
            found = [o for o in self._table.values() if o.name.startswith(request.name + "/")]
            return bytes(
                operations_pb2.ListOperationsResponse(operations=found).SerializeToString()
            )

    def _delete(self, request: operations_pb2.DeleteOperationRequest) -> bytes:
        with self._lock:
            self._table.pop(request.name, None)
        return bytes(empty_pb2.Empty().SerializeToString())

    def _cancel(self, request: operations_pb2.CancelOperationRequest) -> bytes:
        raise Abort(grpc.StatusCode.UNIMPLEMENTED, self._uncancellable)


def check_labels(labels: Mapping[str, str]) -> None:
    """Refuse labels Google refuses: keys start with a lowercase letter; at most 63 of
    lowercase letters, digits, '_' and '-'."""
    for key, value in labels.items():
        if not _LABEL.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad label {key}={value!r}")


def page(items: list[T], token: str, size: int) -> tuple[list[T], str]:
    """The page of ``items`` that ``token`` starts (at most 100), and the next page's token."""
    start = int(token or 0)
    size = min(size or 100, 100)
    more = start + size < len(items)
    return items[start : start + size], str(start + size) if more else ""


def encode(message: Any) -> bytes:
    """A proto-plus message, serialized."""
    return bytes(type(message).serialize(message))


def _plus(message: Any) -> bool:
    """A proto-plus message (copied on record), not a plain protobuf one."""
    return hasattr(type(message), "pb")


def image_env() -> dict[str, str]:
    """This environment, with this process's ``sys.path`` (the "image" has our code)."""
    paths = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    pythonpath = os.pathsep.join(dict.fromkeys(p for p in paths if os.path.exists(p)))
    return {**os.environ, "PYTHONPATH": pythonpath}


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of ``python -m PROG``: ``--port``; the doc's first paragraph says what."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: free)")
    return parser


def serve(fake: GrpcFake, line: str) -> int:
    """Start ``fake``, print ``line`` (``{}``: its endpoint), serve until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())  # stop what it runs too
    with fake:
        print(line.format(fake.endpoint), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0
