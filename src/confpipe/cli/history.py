"""What the records say of planned steps: status, info, result, log tail and error, per step.

``gather(plans)`` reads each step's records (concurrently where the store can, one batch per
kind of record) for the commands that look back — ``status``, ``show``, ``logs``,
``report`` — and for a run's closing results. It writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confpipe.backends import decode_result
from confpipe.engine.plan import StepPlan
from confpipe.engine.status import (
    Status,
    StepState,
    bad_json,
    error_path,
    info_path,
    log_path,
    parse_status,
    result_path,
    status_path,
)
from confpipe.storage import Blob, store_for

__all__ = ["StepHistory", "config_of", "gather"]


@dataclass(frozen=True)
class StepHistory:
    """One planned step and what its records hold (None where a record is absent or of
    another step's hash). ``log`` is the step's log.txt (its last ``log_bytes``)."""

    plan: StepPlan
    status: Status | None
    info: dict[str, Any] | None
    result: Any = None
    has_result: bool = False
    error: str | None = None  # error.txt, or the status record's traceback
    log: str | None = None

    @property
    def ran_for(self) -> float | None:
        """Seconds from RUNNING to the end of its last attempt (None: not ended)."""
        status = self.status
        if status is None or status.started is None or status.state is StepState.RUNNING:
            return None
        return max(0.0, status.time - status.started)


def gather(
    plans: Sequence[StepPlan], *, results: bool = True, logs: bool = False,
    log_bytes: int = 16 * 1024, infos: bool = True,
) -> list[StepHistory]:  # fmt: skip
    """Each plan's records: status (the plan's read, if it made one) and info (without
    ``infos``, only of records too old to say where they ran); results of succeeded steps
    when ``results``; the error of failed steps; the tail of every log when ``logs``."""
    outputs = [p.output for p in plans]
    if all(p.status_read for p in plans):
        statuses = [p.status for p in plans]
    else:
        blobs = _read(outputs, status_path)
        statuses = [_status(b, p) for b, p in zip(blobs, plans, strict=True)]
    wanted = [
        i for i, s in enumerate(statuses) if s is not None and (infos or s.where is None)
    ]  # fmt: skip
    found = dict(zip(wanted, _read([outputs[i] for i in wanted], info_path), strict=True))
    info = [_json(found.get(i)) for i in range(len(plans))]
    done = [i for i, s in enumerate(statuses) if s is not None and s.state is StepState.SUCCESS]
    values: dict[int, Any] = {}
    errors: dict[int, str | None] = {}
    if results and done:
        blobs = _read([outputs[i] for i in done], result_path)
        for i, blob in zip(done, blobs, strict=True):
            try:
                if blob is not None:
                    values[i] = decode_result(blob.data)
            except ValueError as err:  # damaged: said, not shown as a value
                errors[i] = f"unreadable result record {result_path(outputs[i])} ({bad_json(err)})"
    for i, status in enumerate(statuses):
        if status is not None and status.unreadable:
            errors[i] = f"unreadable record {status.unreadable}"
    failed = [
        i for i, s in enumerate(statuses)
        if s is not None and s.state is StepState.FAILED and not s.unreadable
    ]  # fmt: skip
    if failed:
        blobs = _read([outputs[i] for i in failed], error_path)
        for i, blob in zip(failed, blobs, strict=True):
            status = statuses[i]
            errors[i] = blob.data.decode(errors="replace") if blob else _traceback(status)
    tails: dict[int, str] = {}
    if logs:
        for i, output in enumerate(outputs):
            tail = _tail(log_path(output), log_bytes)
            if tail is not None:
                tails[i] = tail
    return [
        StepHistory(
            plan,
            statuses[i],
            info[i] if statuses[i] is not None else None,
            values.get(i),
            i in values,
            errors.get(i),
            tails.get(i),
        )
        for i, plan in enumerate(plans)
    ]


def _read(outputs: Sequence[str], path_of: Any) -> list[Blob | None]:
    """One record of each output, batched per store."""
    found: list[Blob | None] = [None] * len(outputs)
    by_store: dict[int, list[int]] = {}
    for i, output in enumerate(outputs):
        by_store.setdefault(id(store_for(output)), []).append(i)
    for indices in by_store.values():
        store = store_for(outputs[indices[0]])
        for i, blob in zip(
            indices, store.read_many(path_of(outputs[i]) for i in indices), strict=True
        ):
            found[i] = blob
    return found


def _status(blob: Blob | None, plan: StepPlan) -> Status | None:
    """The step's status (``Status.unknown`` if unreadable: its error says why)."""
    return None if blob is None else parse_status(blob, status_path(plan.output)).of(plan.spec.hash)


def _traceback(status: Status | None) -> str | None:
    return None if status is None else status.traceback


def _json(blob: Blob | None) -> dict[str, Any] | None:
    try:
        return None if blob is None else dict(json.loads(blob.data))
    except (ValueError, TypeError):
        return None


def _tail(path: str, size: int) -> str | None:
    """The last ``size`` bytes of the file at ``path`` (from a line start), None if absent."""
    import os

    try:
        with store_for(path).fs.open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(0, end - size))
            data: bytes = f.read()
    except (FileNotFoundError, OSError):
        return None
    text = data.decode(errors="replace")
    if end > size and "\n" in text:
        text = text.split("\n", 1)[1]
    return text


def config_of(value: Any) -> Any:
    """A step's canonical config made readable: references as ``${step:NAME}``."""
    if isinstance(value, dict) and "$step" in value:
        return "${step:" + _name(value["$step"]) + "}" + str(value.get("suffix") or "")
    if isinstance(value, dict) and "$template" in value:
        return "".join(str(config_of(part)) for part in value["$template"])
    if isinstance(value, dict):
        return {k: config_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [config_of(v) for v in value]
    return value


def _name(identity: str) -> str:
    return identity.rsplit("-", 1)[0]
