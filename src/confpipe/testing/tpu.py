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

    from confpipe.backends.gcp.settings import GcpConf
    from confpipe.backends.gcp.tpu import TpuBackend
    from confpipe.testing.tpu import FakeTpu

    with FakeTpu() as fake:
        backend = TpuBackend(GcpConf(project="p", image="img", tpu_endpoint=fake.endpoint))
        ...                               # run TPU steps; fake.requests has what was sent
        fake.preempt_next()               # the next slice is suspended once its hosts start
        fake.preempt(name)                # suspend this ACTIVE queued resource now
        fake.fail_next("no capacity")     # the next queued resource fails once accepted
        fake.fail_host(name, 1)           # SIGKILL host 1's worker (as the OOM killer would)
        fake.serial_log(name, 1)          # what host 1's startup script printed
        fake.missing_image("img:bad")     # `docker pull img:bad` fails on every host
        fake.crash_next(host=1, code=1)   # the next slice's host 1: its container exits at once
        fake.dead_next(host=2)            # the next slice's host 2 never boots
        fake.stall_pull_next(host=0)      # the next slice's host 0: `docker pull` never ends

A loopback endpoint (``127.0.0.1:PORT``) makes the client use an insecure channel and no
credentials. To dry-run a pipeline's TPU path offline, start a server from your repository
root, ``python -m confpipe.testing.tpu [--port 8791]``, then run ``python -m confpipe
+experiment=... backend=gcp backend.tpu_endpoint=127.0.0.1:8791`` (hosts run on this
machine, so use a local prefix or one they can reach).

The queued resources' lives are here, the gRPC server under them in ``grpc_fake``; the hosts
at work are in ``tpu_hosts``, and what the API accepts (ids, labels, zones) in
``tpu_requests``.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.cloud import tpu_v2
from google.protobuf import empty_pb2

from confpipe.backends.gcp.tpu_request import hosts_of
from confpipe.testing.grpc_fake import (
    OPERATIONS,
    Abort,
    GrpcFake,
    Methods,
    Operations,
    encode,
    image_env,
    page,
    parser,
    serve,
)
from confpipe.testing.tpu_hosts import Host, shims
from confpipe.testing.tpu_requests import check_create, check_parent, new_operation

__all__ = ["OPERATIONS", "SERVICE", "FakeTpu", "State", "main"]

SERVICE = "google.cloud.tpu.v2.Tpu"
State = tpu_v2.QueuedResourceState.State
_Initiator = tpu_v2.QueuedResourceState.StateInitiator


@dataclass(eq=False)
class _Run:
    """One queued resource: its message (changed under the fake's lock) and its hosts."""

    resource: tpu_v2.QueuedResource
    seq: int
    hosts: list[Host] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


class FakeTpu(GrpcFake):
    """A Cloud TPU API server on a free loopback port (or ``port``); see the module docstring.

    ``step_seconds`` is how long each state before ACTIVE lasts; ``grace`` how long a host
    has to exit after SIGTERM when its slice is suspended or deleted; ``hosts`` how many VMs
    a slice of an accelerator type has where this fake should differ from confpipe's
    catalogue (``{"v4-16": 1}``), as if the catalogue were wrong.
    """

    _name = "fake-tpu"

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        step_seconds: float = 0.02,
        grace: float = 2.0,
        port: int = 0,
        hosts: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(port)
        self.env = dict(env) if env is not None else image_env()
        self.cwd = cwd
        self.step_seconds = step_seconds
        self.grace = grace
        self.hosts = dict(hosts or {})
        self._runs: dict[str, _Run] = {}
        self._operations = Operations("queued resource operations can't be cancelled")
        self._request_ids: dict[str, str] = {}  # request id -> operation name
        self._seq = itertools.count()
        self._preempt = 0
        self._fail: list[str] = []  # why the next queued resources fail, in order
        self._missing: set[str] = set()  # images `docker pull` can't find
        self._crash: dict[int, int] = {}  # the next slice's hosts whose container exits: code
        self._dead: set[int] = set()  # the next slice's hosts that never boot
        self._stall: set[int] = set()  # the next slice's hosts whose docker pull never ends
        self._folder = Path(tempfile.mkdtemp(prefix="fake-tpu-"))
        self._shims = shims(self._folder / "bin")
        self._threads: list[threading.Thread] = []

    def _shutdown(self) -> None:
        """Shut every host down, forget the logs."""
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.stop.set()
            for host in run.hosts:
                host.stop(0)
        for thread in self._threads:
            thread.join(10)
        shutil.rmtree(self._folder, ignore_errors=True)

    def queued_resources(self) -> list[tpu_v2.QueuedResource]:
        """Copies of the queued resources the fake has, oldest first."""
        with self._lock:
            runs = sorted(self._runs.values(), key=lambda r: r.seq)
            return [tpu_v2.QueuedResource(r.resource) for r in runs]

    def exit_codes(self, name: str) -> list[int | None]:
        """Each host's startup-script exit code (None: still running, or not started)."""
        with self._lock:
            hosts = list(self._runs[name].hosts) if name in self._runs else []
        return [host.exit_code() for host in hosts]

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

    def missing_image(self, image: str) -> None:
        """``docker pull image`` fails on the hosts booted from now on, as Docker says when
        the registry has no such image (or the VM may not read it)."""
        with self._lock:
            self._missing.add(image)

    def crash_next(self, host: int = 0, code: int = 1) -> None:
        """In the next slice to boot, host ``host``'s container exits at once with ``code``,
        as an image without confpipe does."""
        with self._lock:
            self._crash[host] = code

    def dead_next(self, host: int) -> None:
        """In the next slice to boot, host ``host`` never boots: its startup script never
        runs, so it writes nothing anywhere."""
        with self._lock:
            self._dead.add(host)

    def stall_pull_next(self, host: int = 0) -> None:
        """In the next slice to boot, host ``host``'s ``docker pull`` never finishes: the VM
        booted, its worker never starts."""
        with self._lock:
            self._stall.add(host)

    def fail_next(self, reason: str) -> None:
        """The next slice fails once accepted, as when the service has no capacity for it."""
        with self._lock:
            self._fail.append(reason)

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

    def _run(self, name: str) -> _Run:
        with self._lock:
            run = self._runs.get(name)
        if run is None:
            raise KeyError(f"no queued resource {name}")
        return run

    def _fail_if_asked(self, run: _Run) -> bool:
        """Fail ``run`` (state FAILED, with the reason) if ``fail_next`` asked for it."""
        with self._lock:
            if not self._fail:
                return False
            reason = self._fail.pop(0)
            error = {"code": grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], "message": reason}
            run.resource.state = tpu_v2.QueuedResourceState(
                state=State.FAILED, failed_data={"error": error}
            )
            return True

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
                failed = self._fail_if_asked(run)  # before the operation ends, as a refusal
                self._operations.finish(operation, tpu_v2.QueuedResource.pb(run.resource))
                if failed:
                    return
        node = run.resource.tpu.node_spec[0].node
        attributes = {
            **node.metadata,
            "accelerator-type": node.accelerator_type or node.accelerator_config.topology,
        }
        count = self.hosts.get(node.accelerator_type, hosts_of(run.resource))
        attributes["worker-network-endpoints"] = ",".join(
            f"unknown:unknown:10.0.0.{i + 2}" for i in range(count)
        )
        name = run.resource.name
        self._log_path(name, 0).parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if run.stop.is_set():
                return
            crash, dead, stall = self._crash, self._dead, self._stall
            self._crash, self._dead, self._stall = {}, set(), set()
            env = {**self.env, "FAKE_DOCKER_MISSING": ",".join(sorted(self._missing))}
            for i in range(count):
                own = {**env, "FAKE_DOCKER_RUN_EXIT": str(crash[i])} if i in crash else env
                own = {**own, "FAKE_DOCKER_PULL_HANGS": "1"} if i in stall else own
                log = self._log_path(name, i)
                host = Host(i, attributes, own, self.cwd, log, self._shims, boot=i not in dead)
                run.hosts.append(host)
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
        self._operations.finish(operation, empty_pb2.Empty())

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name="fake-tpu", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _services(self) -> dict[str, Methods]:
        return {
            SERVICE: {
                "CreateQueuedResource": (tpu_v2.CreateQueuedResourceRequest, self._create),
                "GetQueuedResource": (tpu_v2.GetQueuedResourceRequest, self._get),
                "ListQueuedResources": (tpu_v2.ListQueuedResourcesRequest, self._list),
                "DeleteQueuedResource": (tpu_v2.DeleteQueuedResourceRequest, self._delete),
            },
            OPERATIONS: self._operations.methods(),
        }

    def _create(self, request: tpu_v2.CreateQueuedResourceRequest) -> bytes:
        check_create(request)
        name = f"{request.parent}/queuedResources/{request.queued_resource_id}"
        with self._lock:
            known = self._request_ids.get(request.request_id) if request.request_id else None
            if known is not None:
                return self._operations.serialized(known)
            if name in self._runs:
                raise Abort(grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists")
            resource = tpu_v2.QueuedResource(request.queued_resource)
            resource.name = name
            resource.create_time = datetime.datetime.now(datetime.UTC)
            resource.state = tpu_v2.QueuedResourceState(state=State.CREATING)
            run = _Run(resource, next(self._seq))
            self._runs[name] = run
            operation = new_operation(name, "create")
            if request.request_id:
                self._request_ids[request.request_id] = operation.name
            data = self._operations.add(operation)
        self._spawn(self._drive, run, operation.name)
        return data

    def _get(self, request: tpu_v2.GetQueuedResourceRequest) -> bytes:
        with self._lock:
            run = self._runs.get(request.name)
            if run is None:
                raise Abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
            return encode(run.resource)

    def _list(self, request: tpu_v2.ListQueuedResourcesRequest) -> bytes:
        check_parent(request.parent)
        with self._lock:
            runs = [
                r for r in self._runs.values() if r.resource.name.startswith(f"{request.parent}/")
            ]
            runs.sort(key=lambda r: r.seq)
            runs, token = page(runs, request.page_token, request.page_size)
            found = [r.resource for r in runs]
            return encode(
                tpu_v2.ListQueuedResourcesResponse(queued_resources=found, next_page_token=token)
            )

    def _delete(self, request: tpu_v2.DeleteQueuedResourceRequest) -> bytes:
        with self._lock:
            run = self._runs.get(request.name)
            if run is None:
                raise Abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
            live = run.resource.state.state in (State.ACTIVE, State.PROVISIONING)
            if live and not request.force:
                raise Abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{request.name} has live nodes: delete them first, or set force",
                )
            operation = new_operation(request.name, "delete")
            run.resource.state = tpu_v2.QueuedResourceState(state=State.DELETING)
            data = self._operations.add(operation)
        self._spawn(self._delete_run, run, operation.name)
        return data


def main(argv: list[str] | None = None) -> int:
    args = parser("python -m confpipe.testing.tpu", __doc__).parse_args(argv)
    fake = FakeTpu(port=args.port)  # SIGTERM shuts its hosts down too
    return serve(fake, "fake Cloud TPU serving: backend.tpu_endpoint={}")


if __name__ == "__main__":
    sys.exit(main())
