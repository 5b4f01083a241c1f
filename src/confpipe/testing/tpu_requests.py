"""The fake Cloud TPU API's rules for requests: what the real service refuses, and its bytes.

Private to ``confpipe.testing.tpu``. Each check raises ``Abort`` with the gRPC status the
real service answers; nothing here touches the fake's queued resources. The rules all
Google APIs share (labels, pages) are in ``grpc_fake``.
"""

from __future__ import annotations

import re
import uuid

import grpc
from google.cloud import tpu_v2
from google.longrunning import operations_pb2
from google.protobuf import any_pb2

from confpipe.backends.gcp.tpu_catalog import parse
from confpipe.errors import ConfigError
from confpipe.testing.grpc_fake import Abort, check_labels

__all__ = ["check_create", "check_parent", "new_operation"]

_PARENT = re.compile(r"projects/[^/]+/locations/([a-z]+-[a-z]+[0-9]+-[a-z])")
_ID = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def check_parent(parent: str) -> str:
    """The zone of a ``projects/P/locations/ZONE`` parent; INVALID_ARGUMENT for another."""
    found = _PARENT.fullmatch(parent)
    if found is None:
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad parent {parent!r}")
    return found.group(1)


def check_create(request: tpu_v2.CreateQueuedResourceRequest) -> None:
    """Refuse what the real service refuses: bad ids or labels, a zone without the type."""
    bad = grpc.StatusCode.INVALID_ARGUMENT
    zone = check_parent(request.parent)
    if not _ID.fullmatch(request.queued_resource_id):
        raise Abort(bad, f"bad queued_resource_id {request.queued_resource_id!r}")
    specs = request.queued_resource.tpu.node_spec
    if len(specs) != 1 or not specs[0].node_id or specs[0].parent != request.parent:
        raise Abort(bad, "one node spec with a node_id, in the request's parent, is needed")
    node = specs[0].node
    check_labels(node.labels)
    if not node.runtime_version:
        raise Abort(bad, "node.runtime_version is required")
    if bool(node.accelerator_type) == bool(node.accelerator_config.topology):
        raise Abort(bad, "set one of node.accelerator_type and node.accelerator_config")
    try:
        kind = node.accelerator_type or (
            f"{tpu_v2.AcceleratorConfig.Type(node.accelerator_config.type_).name.lower()}:"
            f"{node.accelerator_config.topology}"
        ).replace("v5lite_pod", "v5litepod")
        tpu = parse(kind)
    except ConfigError as err:
        raise Abort(bad, str(err)) from None
    if zone not in tpu.generation.zones_of(tpu.size):
        raise Abort(bad, f"accelerator type {kind} is not available in zone {zone}")


def new_operation(target: str, verb: str) -> operations_pb2.Operation:
    """A pending operation (``verb``: create, delete) on the queued resource ``target``."""
    zone = "/".join(target.split("/")[:4])
    metadata = any_pb2.Any()
    metadata.Pack(
        tpu_v2.OperationMetadata.pb(
            tpu_v2.OperationMetadata(target=target, verb=verb, api_version="v2")
        )
    )
    name = f"{zone}/operations/operation-{uuid.uuid4().hex[:12]}"
    return operations_pb2.Operation(name=name, metadata=metadata, done=False)
