"""FakeTpu: an in-process gRPC server of the Cloud TPU API whose TPU hosts run on this machine.

The real ``google-cloud-tpu`` client talks to it: ``google.cloud.tpu.v2.Tpu`` (Create, Get,
List and DeleteQueuedResource) and ``google.longrunning.Operations`` (Get, List, Delete and
CancelOperation, for the create and delete operations). It records every request, checks
what the real service would refuse (ids, labels, a zone that doesn't offer the type, a
missing runtime version), and walks each queued resource CREATING -> ACCEPTED ->
PROVISIONING -> ACTIVE. Once ACTIVE, every host of the slice (as many as the accelerator
type has) runs the node's ``startup-script`` as a local subprocess, with a metadata server
of its own that answers ``agent-worker-number`` as a TPU VM's does
(``confpipe.testing.tpu_hosts``). The image is not pulled: the ``docker`` on the hosts'
PATH runs the container's command here, with this interpreter and this environment plus
its ``sys.path`` (so the code you have now is the code in the image).

    from confpipe.backends.tpu import TpuBackend
    from confpipe.testing.tpu import FakeTpu

    with FakeTpu() as fake:
        backend = TpuBackend("p", "us-central1", "img", tpu_endpoint=fake.endpoint)
        ...                               # run TPU steps; fake.requests has what was sent
        fake.preempt_next()               # the next slice is suspended once its hosts start
        fake.preempt(name)                # suspend this ACTIVE queued resource now
        fake.fail_host(name, 1)           # SIGKILL host 1's worker (as the OOM killer would)
        fake.serial_log(name, 1)          # what host 1's startup script printed

A loopback endpoint (``127.0.0.1:PORT``) makes the client use an insecure channel and no
credentials. To dry-run a pipeline's TPU path offline, start a server from your repository
root, ``python -m confpipe.testing.tpu [--port 8791]``, then run ``python -m confpipe
+experiment=... backend=gcp backend.tpu_endpoint=127.0.0.1:8791`` (hosts run on this
machine, so use a local prefix or one they can reach).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.cloud import tpu_v2
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2

from confpipe.backends.tpu_spec import hosts_of
from confpipe.backends.tpus import parse
from confpipe.errors import ConfigError
from confpipe.testing.tpu_hosts import Host, image_env, shims

__all__ = ["OPERATIONS", "SERVICE", "FakeTpu", "State", "main"]

SERVICE = "google.cloud.tpu.v2.Tpu"
OPERATIONS = "google.longrunning.Operations"
State = tpu_v2.QueuedResourceState.State
_Initiator = tpu_v2.QueuedResourceState.StateInitiator
_PARENT = re.compile(r"projects/[^/]+/locations/([a-z]+-[a-z]+[0-9]+-[a-z])")
_ID = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class _Run:
    """One queued resource: its message (changed under the fake's lock) and its hosts."""

    resource: tpu_v2.QueuedResource
    seq: int
    hosts: list[Host] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


class FakeTpu:
    """A Cloud TPU API server on a free loopback port (or ``port``); see the module docstring.

    ``step_seconds`` is how long each state before ACTIVE lasts; ``grace`` how long a host
    has to exit after SIGTERM when its slice is suspended or deleted.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        step_seconds: float = 0.02,
        grace: float = 2.0,
        port: int = 0,
    ) -> None:
        self.env = dict(env) if env is not None else image_env()
        self.cwd = cwd
        self.step_seconds = step_seconds
        self.grace = grace
        self.requests: list[tuple[str, Any]] = []  # (method, request), in arrival order
        self._port = port
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._operations: dict[str, operations_pb2.Operation] = {}
        self._request_ids: dict[str, str] = {}  # request id -> operation name
        self._seq = itertools.count()
        self._preempt = 0
        self._folder = Path(tempfile.mkdtemp(prefix="fake-tpu-"))
        self._shims = shims(self._folder / "bin")
        self._server: grpc.Server | None = None
        self._threads: list[threading.Thread] = []

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self._port}"

    def start(self) -> FakeTpu:
        self._server = self._serve()
        return self

    def stop(self) -> None:
        """Stop serving, shut every host down, forget the logs."""
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.stop.set()
            for host in run.hosts:
                host.stop(0)
        for thread in self._threads:
            thread.join(10)
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> FakeTpu:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, method: str | None = None) -> int:
        """How many requests (of ``method``, e.g. ``"CreateQueuedResource"``) arrived."""
        with self._lock:
            return sum(1 for m, _ in self.requests if method in (None, m))

    def queued_resources(self) -> list[tpu_v2.QueuedResource]:
        """Copies of the queued resources the fake has, oldest first."""
        with self._lock:
            runs = sorted(self._runs.values(), key=lambda r: r.seq)
            return [tpu_v2.QueuedResource(r.resource) for r in runs]

    def exit_codes(self, name: str) -> list[int | None]:
        """Each host's startup-script exit code (None: still running, or not started)."""
        with self._lock:
            hosts = list(self._runs[name].hosts) if name in self._runs else []
        return [host.proc.poll() for host in hosts]

    def serial_log(self, name: str, host: int) -> str:
        """What host ``host``'s startup script printed, as its serial console shows."""
        path = self._log_path(name, host)
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
            return f.read().decode(errors="replace")
        return ""

    def preempt_next(self, count: int = 1) -> None:
        """The next ``count`` slices are suspended by the "service" once their hosts start."""
        with self._lock:
            self._preempt += count

    def preempt(self, name: str) -> None:
        """Suspend the queued resource as the service does when it reclaims capacity."""
        run = self._run(name)
        self._set_state(run, State.SUSPENDING, _Initiator.SERVICE)
        for host in run.hosts:
            host.stop(self.grace)
        self._set_state(run, State.SUSPENDED, _Initiator.SERVICE)

    def fail_host(self, name: str, host: int) -> None:
        """SIGKILL the ``confpipe.worker`` process on host ``host`` (waits until it runs)."""
        target = self._run(name).hosts[host]
        deadline = time.monotonic() + 30
        while not target.kill_worker():
            if time.monotonic() > deadline or not target.running():
                raise RuntimeError(f"host {host} of {name} runs no confpipe.worker")
            time.sleep(0.01)

    # -- the queued resources' lives ------------------------------------------------------------

    def _run(self, name: str) -> _Run:
        with self._lock:
            run = self._runs.get(name)
        if run is None:
            raise KeyError(f"no queued resource {name}")
        return run

    def _log_path(self, name: str, host: int) -> Path:
        return self._folder / "serial" / f"{name.rsplit('/', 1)[-1]}-{host}.log"

    def _set_state(self, run: _Run, state: int, initiator: int = 0) -> None:
        with self._lock:
            run.resource.state = tpu_v2.QueuedResourceState(
                state=State(state), state_initiator=_Initiator(initiator)
            )

    def _drive(self, run: _Run, operation: str) -> None:
        """Walk the queued resource to ACTIVE, then boot its hosts."""
        for state in (State.ACCEPTED, State.PROVISIONING, State.ACTIVE):
            if run.stop.wait(self.step_seconds):
                return
            self._set_state(run, state)
            if state == State.ACCEPTED:
                self._finish_operation(operation, tpu_v2.QueuedResource.pb(run.resource))
        node = run.resource.tpu.node_spec[0].node
        attributes = {
            **node.metadata,
            "accelerator-type": node.accelerator_type or node.accelerator_config.topology,
        }
        count = hosts_of(run.resource)
        attributes["worker-network-endpoints"] = ",".join(
            f"unknown:unknown:10.0.0.{i + 2}" for i in range(count)
        )
        name = run.resource.name
        self._log_path(name, 0).parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if run.stop.is_set():
                return
            for i in range(count):
                run.hosts.append(
                    Host(i, attributes, self.env, self.cwd, self._log_path(name, i), self._shims)
                )
            preempt = self._preempt > 0
            self._preempt -= preempt
        if preempt:
            self.preempt(name)

    def _delete_run(self, run: _Run, operation: str) -> None:
        run.stop.set()
        for host in run.hosts:
            host.stop(self.grace)
        time.sleep(self.step_seconds)
        with self._lock:
            self._runs.pop(run.resource.name, None)
        self._finish_operation(operation, empty_pb2.Empty())

    def _finish_operation(self, name: str, response: Any) -> None:
        packed = any_pb2.Any()
        packed.Pack(response)
        with self._lock:
            operation = self._operations[name]
            operation.done = True
            operation.response.CopyFrom(packed)

    def _new_operation(self, target: str, verb: str) -> operations_pb2.Operation:
        """A pending operation on ``target`` (the caller holds the lock)."""
        zone = "/".join(target.split("/")[:4])
        metadata = any_pb2.Any()
        metadata.Pack(
            tpu_v2.OperationMetadata.pb(
                tpu_v2.OperationMetadata(target=target, verb=verb, api_version="v2")
            )
        )
        name = f"{zone}/operations/operation-{uuid.uuid4().hex[:12]}"
        operation = operations_pb2.Operation(name=name, metadata=metadata, done=False)
        self._operations[name] = operation
        return operation

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name="fake-tpu", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    # -- the API --------------------------------------------------------------------------------

    def _serve(self) -> grpc.Server:
        pool = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="fake-tpu-grpc")
        server = grpc.server(pool)
        tpu: dict[str, tuple[Any, Callable[[Any], bytes]]] = {
            "CreateQueuedResource": (tpu_v2.CreateQueuedResourceRequest, self._create),
            "GetQueuedResource": (tpu_v2.GetQueuedResourceRequest, self._get),
            "ListQueuedResources": (tpu_v2.ListQueuedResourcesRequest, self._list),
            "DeleteQueuedResource": (tpu_v2.DeleteQueuedResourceRequest, self._delete),
        }
        operations: dict[str, tuple[Any, Callable[[Any], bytes]]] = {
            "GetOperation": (operations_pb2.GetOperationRequest, self._get_operation),
            "ListOperations": (operations_pb2.ListOperationsRequest, self._list_operations),
            "DeleteOperation": (operations_pb2.DeleteOperationRequest, self._delete_operation),
            "CancelOperation": (operations_pb2.CancelOperationRequest, self._cancel_operation),
        }
        for service, methods in ((SERVICE, tpu), (OPERATIONS, operations)):
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
        self._port = server.add_insecure_port(f"127.0.0.1:{self._port}")
        server.start()
        return server

    def _handler(self, method: str, fn: Callable[[Any], bytes]) -> Callable[..., bytes]:
        def handle(request: Any, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self.requests.append(
                    (method, type(request)(request) if _plus(request) else request)
                )
            try:
                return fn(request)
            except _Abort as err:
                context.abort(err.code, str(err))
                raise  # unreachable: abort raises

        return handle

    def _create(self, request: tpu_v2.CreateQueuedResourceRequest) -> bytes:
        _check_create(request)
        name = f"{request.parent}/queuedResources/{request.queued_resource_id}"
        with self._lock:
            known = self._request_ids.get(request.request_id) if request.request_id else None
            if known is not None:
                return bytes(self._operations[known].SerializeToString())
            if name in self._runs:
                raise _Abort(grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists")
            resource = tpu_v2.QueuedResource(request.queued_resource)
            resource.name = name
            resource.create_time = datetime.datetime.now(datetime.UTC)
            resource.state = tpu_v2.QueuedResourceState(state=State.CREATING)
            run = _Run(resource, next(self._seq))
            self._runs[name] = run
            operation = self._new_operation(name, "create")
            if request.request_id:
                self._request_ids[request.request_id] = operation.name
            data = bytes(operation.SerializeToString())
        self._spawn(self._drive, run, operation.name)
        return data

    def _get(self, request: tpu_v2.GetQueuedResourceRequest) -> bytes:
        with self._lock:
            run = self._runs.get(request.name)
            if run is None:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
            return _encode(run.resource)

    def _list(self, request: tpu_v2.ListQueuedResourcesRequest) -> bytes:
        if _PARENT.fullmatch(request.parent) is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad parent {request.parent!r}")
        start, size = int(request.page_token or 0), min(request.page_size or 100, 100)
        with self._lock:
            runs = sorted(
                (
                    r
                    for r in self._runs.values()
                    if r.resource.name.startswith(request.parent + "/")
                ),
                key=lambda r: r.seq,
            )
            page = [r.resource for r in runs[start : start + size]]
            token = str(start + size) if start + size < len(runs) else ""
            return _encode(
                tpu_v2.ListQueuedResourcesResponse(queued_resources=page, next_page_token=token)
            )

    def _delete(self, request: tpu_v2.DeleteQueuedResourceRequest) -> bytes:
        with self._lock:
            run = self._runs.get(request.name)
            if run is None:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
            live = run.resource.state.state in (State.ACTIVE, State.PROVISIONING)
            if live and not request.force:
                raise _Abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{request.name} has live nodes: delete them first, or set force",
                )
            operation = self._new_operation(request.name, "delete")
            run.resource.state = tpu_v2.QueuedResourceState(state=State.DELETING)
            data = bytes(operation.SerializeToString())
        self._spawn(self._delete_run, run, operation.name)
        return data

    def _get_operation(self, request: operations_pb2.GetOperationRequest) -> bytes:
        with self._lock:
            operation = self._operations.get(request.name)
            if operation is None:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"operation {request.name} not found")
            return bytes(operation.SerializeToString())

    def _list_operations(self, request: operations_pb2.ListOperationsRequest) -> bytes:
        with self._lock:
            found = [o for o in self._operations.values() if o.name.startswith(request.name + "/")]
            return bytes(
                operations_pb2.ListOperationsResponse(operations=found).SerializeToString()
            )

    def _delete_operation(self, request: operations_pb2.DeleteOperationRequest) -> bytes:
        with self._lock:
            self._operations.pop(request.name, None)
        return bytes(empty_pb2.Empty().SerializeToString())

    def _cancel_operation(self, request: operations_pb2.CancelOperationRequest) -> bytes:
        raise _Abort(grpc.StatusCode.UNIMPLEMENTED, "queued resource operations can't be cancelled")


def _check_create(request: tpu_v2.CreateQueuedResourceRequest) -> None:
    """Refuse what the real service refuses: bad ids or labels, a zone without the type."""
    bad = grpc.StatusCode.INVALID_ARGUMENT
    parent = _PARENT.fullmatch(request.parent)
    if parent is None:
        raise _Abort(bad, f"bad parent {request.parent!r}")
    if not _ID.fullmatch(request.queued_resource_id):
        raise _Abort(bad, f"bad queued_resource_id {request.queued_resource_id!r}")
    specs = request.queued_resource.tpu.node_spec
    if len(specs) != 1 or not specs[0].node_id or specs[0].parent != request.parent:
        raise _Abort(bad, "one node spec with a node_id, in the request's parent, is needed")
    node = specs[0].node
    for key, value in node.labels.items():
        if not _LABEL.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
            raise _Abort(bad, f"bad label {key}={value!r}")
    if not node.runtime_version:
        raise _Abort(bad, "node.runtime_version is required")
    if bool(node.accelerator_type) == bool(node.accelerator_config.topology):
        raise _Abort(bad, "set one of node.accelerator_type and node.accelerator_config")
    try:
        kind = node.accelerator_type or (
            f"{tpu_v2.AcceleratorConfig.Type(node.accelerator_config.type_).name.lower()}:"
            f"{node.accelerator_config.topology}"
        ).replace("v5lite_pod", "v5litepod")
        tpu = parse(kind)
    except ConfigError as err:
        raise _Abort(bad, str(err)) from None
    zone = parent.group(1)
    if zone not in tpu.generation.zones_of(tpu.size):
        raise _Abort(bad, f"accelerator type {kind} is not available in zone {zone}")


def _encode(message: Any) -> bytes:
    return bytes(type(message).serialize(message))


def _plus(message: Any) -> bool:
    """A proto-plus message (copied on record), not a plain protobuf one."""
    return hasattr(type(message), "pb")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m confpipe.testing.tpu", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: free)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())  # shut the hosts down too
    with FakeTpu(port=args.port) as fake:
        print(f"fake Cloud TPU serving: backend.tpu_endpoint={fake.endpoint}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
