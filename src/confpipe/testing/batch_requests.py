"""The fake Batch API's rules for requests: what the real service rejects, filters, orders.

Private to ``confpipe.testing.batch``. Each check raises ``Abort`` with the gRPC status the
real service answers; nothing here touches the fake's jobs. The rules all Google APIs
share (labels, pages) are in ``grpc_fake``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import grpc
from google.cloud import batch_v1
from google.longrunning import operations_pb2

from confpipe.testing.grpc_fake import Abort, check_labels

__all__ = ["check_create", "done_operation", "job_filter", "list_order"]

_PARENT = re.compile(r"projects/[^/]+/locations/[^/]+")
_JOB_ID = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_TERM = re.compile(r'\s*(labels\.[a-z0-9_-]+|status\.state|name)\s*=\s*"([^"]*)"\s*')
_ORDERS = ("create_time", "create_time desc", "name", "name desc")


def check_create(request: batch_v1.CreateJobRequest) -> None:
    """Reject a CreateJob the real service would: bad parent, job id or label; no runnable."""
    if not _PARENT.fullmatch(request.parent):
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad parent {request.parent!r}")
    if not _JOB_ID.fullmatch(request.job_id):
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad job_id {request.job_id!r}")
    check_labels(request.job.labels)
    groups = request.job.task_groups
    if len(groups) != 1 or not groups[0].task_spec.runnables:
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "one task group with runnables needed")


def job_filter(text: str) -> Callable[[batch_v1.Job], bool]:
    """The AIP-160 subset the fake understands: ``field="value"`` terms joined by AND."""
    terms = []
    for term in filter(None, (t.strip() for t in text.split(" AND "))):
        found = _TERM.fullmatch(term)
        if found is None:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported filter term {term!r}")
        terms.append((found.group(1), found.group(2)))

    def value(job: batch_v1.Job, key: str) -> str:
        if key.startswith("labels."):
            return str(job.labels.get(key[7:], ""))
        return str(job.status.state.name if key == "status.state" else job.name)

    return lambda job: all(value(job, key) == want for key, want in terms)


def list_order(order_by: str) -> str:
    """ListJobs' ``order_by``, ``create_time`` when empty; the fake knows two fields."""
    order = order_by or "create_time"
    if order not in _ORDERS:
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported order_by {order!r}")
    return order


def done_operation(name: str) -> bytes:
    """A long-running operation on the job ``name`` that is already done, serialized."""
    op = operations_pb2.Operation(name=f"{name}/operations/{uuid.uuid4().hex[:8]}", done=True)
    return bytes(op.SerializeToString())
