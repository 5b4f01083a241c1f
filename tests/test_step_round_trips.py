"""What a new step costs its store, call by call, on a store with round trips (gs://, and
memory:// which takes the same path): the step's own thread makes three calls one after
another (create the lease, write the result, swap the status to SUCCESS); its RUNNING record
is created beside the lease, its info record written beside its work, its lease released
after it; and its status is read once, by the plan, for the whole run."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import confpipe
from confpipe import StepSpec
from confpipe.cancel import CancelScope
from confpipe.engine import beside
from confpipe.engine.cache import Records, cache
from confpipe.engine.lock import LockOptions, lock
from confpipe.engine.owner import read_holder
from confpipe.engine.status import StepState, read_status
from confpipe.storage import Store, store_for
from tests import stepfns
from tests.waits import eventually


class Calls:
    """Every primitive call on ``store`` as (thread kind, method, file name), while in use."""

    METHODS = ("read", "read_many", "create", "replace", "delete", "write")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Calls:
        for name in self.METHODS:
            real = getattr(self.store, name)
            setattr(self.store, name, self._counted(name, real))
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.METHODS:
            delattr(self.store, name)

    def _counted(self, name: str, real: Any) -> Any:
        def counted(path: Any, *args: Any) -> Any:
            paths = [path] if isinstance(path, str) else list(path)
            where = (
                "beside"
                if threading.current_thread().name.startswith("confpipe-beside")
                else "step"
            )
            with self._lock:
                for p in paths:
                    self.seen.append((where, name, p.rsplit("/", 1)[-1]))
            return real(paths if name == "read_many" else path, *args)

        return counted

    def of(self, where: str) -> Counter[tuple[str, str]]:
        return Counter((name, file) for w, name, file in self.seen if w == where)


def chain(n: int) -> list[StepSpec]:
    steps: list[StepSpec] = []
    for i in range(n):
        config: dict[str, Any] = {"a": i, "b": 1}
        if steps:
            config["up"] = steps[-1]
        steps.append(StepSpec(f"s{i}", stepfns.noop, config))
    return steps


@pytest.fixture(params=["memory", pytest.param("gs", marks=pytest.mark.slow)])
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "memory":
        yield f"memory://round-trips-{uuid.uuid4().hex}"
    else:
        yield str(request.getfixturevalue("gs_prefix"))


def test_a_new_step_makes_three_calls_in_a_row_and_the_rest_beside(prefix: str) -> None:
    steps = 3
    with Calls(store_for(prefix)) as calls:
        summary = confpipe.run(chain(steps)[-1], prefix=prefix)
    assert len(summary.ran) == steps
    assert calls.of("step") == Counter({
        ("read_many", "status.json"): steps,  # the plan's read, for the whole run
        ("create", "lease.json"): steps,
        ("write", "result.json"): steps,
        ("replace", "status.json"): steps,  # RUNNING -> SUCCESS, a compare-and-swap
    })  # fmt: skip
    assert calls.of("beside") == Counter({
        ("create", "status.json"): steps,  # RUNNING, beside the lease's creation
        ("write", "info.json"): steps,  # beside the step's work
        ("replace", "lease.json"): steps,  # released after the commit, before the run returns
    })  # fmt: skip
    for spec in chain(steps):
        out = summary.outputs[spec.name]
        status = read_status(store_for(out), out)
        assert status is not None and status.state is StepState.SUCCESS
        assert read_holder(store_for(out), out) is None  # released (never deleted: below)


def test_an_early_running_of_a_launch_without_the_lease_is_never_the_last_word(
    prefix: str,
) -> None:
    """A launch whose early RUNNING landed while another launch held the lease: the holder's
    own RUNNING fails its compare-and-swap, reads the record again and writes over it; the
    other launch, once it has the lease, reads the status again and finds the step done."""
    spec = StepSpec("s", stepfns.add, {"a": 1, "b": 2})
    out, store = f"{prefix}/s", store_for(prefix)
    holder, late = Records(store, spec, "holder"), Records(store, spec, "late")
    assert holder.status(out) is None and late.status(out) is None
    early = late.early(out)  # its lease create failed meanwhile: the holder has the lease
    assert early is not None and early.result() is not None
    late.settle(out, early, at_once=False)
    assert not holder.done(out) and not holder.begin(out)  # the CAS saw the early RUNNING
    assert not holder.done(out) and holder.begin(out)  # read again: RUNNING, written over
    holder.succeed(out, 3, fence=lambda: None)
    assert late.done(out)  # read again under the lease: done by the holder
    status = read_status(store, out)
    assert status is not None and status.state is StepState.SUCCESS
    assert status.worker == "holder"


def test_an_early_running_is_taken_back_when_the_lease_is_never_got(prefix: str) -> None:
    spec = StepSpec("s", stepfns.add, {"a": 1, "b": 2})
    out, store = f"{prefix}/s", store_for(prefix)
    records = Records(store, spec, "cancelled")
    assert records.status(out) is None
    early = records.early(out)
    assert early is not None and early.result() is not None
    assert read_status(store, out) is not None
    records.settle(out, early, at_once=None)  # cancelled while waiting for the lease
    assert read_status(store, out) is None


def test_a_step_with_a_record_writes_running_under_its_lease_only(prefix: str) -> None:
    spec = StepSpec("s", stepfns.add, {"a": 1, "b": 2})
    out, store = f"{prefix}/s", store_for(prefix)
    first = Records(store, spec, "first")
    first.status(out)
    assert first.begin(out)
    first.fail(out, RuntimeError("boom"), fence=lambda: None)
    retry = Records(store, spec, "retry")
    assert retry.status(out) is not None
    assert retry.early(out) is None  # a record exists: its RUNNING is a compare-and-swap


# -- two launches racing for a new step: it runs once ---------------------------------------

RAN: list[str] = []


def record_caller(output_path: str, a: int) -> int:
    RAN.append(threading.current_thread().name)
    return a


def launch(store: Store, spec: StepSpec, owner: str) -> Any:
    records = Records(store, spec, owner)
    records.prime(None, None)  # its plan saw no record
    locked = lock(
        record_caller, store=store, step=spec.name, owner=owner, options=LockOptions(),
        scope=CancelScope(), hooks=records,
    )  # fmt: skip
    return cache(locked, records)


@pytest.mark.parametrize("slow", ["lease create", "holder read"])
def test_a_new_step_runs_once_when_another_launch_ran_it_while_ones_lease_request_was_slow(
    slow: str,
) -> None:
    """Launch A's early RUNNING lands; its lease request is slow (a retried create, or the
    read of the holder after its create failed) while launch B takes the lease, writes over
    A's RUNNING, runs the step, commits and releases. A's lease then comes "at once", but the
    lease object B left (released, never deleted) shows that someone held it: A reads the
    status again and finds the step done."""
    RAN.clear()
    prefix = f"memory://race-{uuid.uuid4().hex}"
    store, spec = store_for(prefix), StepSpec("s", record_caller, {"a": 1})
    out = f"{prefix}/s"
    b_has_lease, b_done = threading.Event(), threading.Event()
    create, read = store.create, store.read

    def slow_create(path: str, data: bytes) -> str | None:
        me = threading.current_thread().name
        if path.endswith("lease.json") and me == "A":
            (b_done if slow == "lease create" else b_has_lease).wait(10)
        version = create(path, data)
        if path.endswith("lease.json") and me == "B":
            b_has_lease.set()
        return version

    def slow_read(path: str) -> Any:
        if path.endswith("lease.json") and threading.current_thread().name == "A":
            b_done.wait(10)
        return read(path)

    store.create, store.read = slow_create, slow_read  # type: ignore[method-assign]
    try:
        a, b = launch(store, spec, "A"), launch(store, spec, "B")
        first = threading.Thread(target=lambda: a(output_path=out, a=1), name="A")
        first.start()
        eventually(lambda: read_status(store, out) is not None, "A's early RUNNING")
        second = threading.Thread(target=lambda: b(output_path=out, a=1), name="B")
        second.start()
        second.join(10)
        beside.flush(5)  # B's lease is released
        b_done.set()
        first.join(10)
    finally:
        del store.create, store.read
    assert RAN == ["B"]
    status = read_status(store, out)
    assert status is not None and status.state is StepState.SUCCESS and status.worker == "B"


def test_an_early_running_of_a_launch_that_never_began_does_not_clear_a_new_folder(
    prefix: str,
) -> None:
    """A folder given by hand holds the user's files; another launch's early RUNNING there is
    no attempt (that launch never got the lease): the holder begins without clearing it."""
    spec = StepSpec("s", stepfns.add, {"a": 1, "b": 2})
    out, store = f"{prefix}/s", store_for(prefix)
    store.write(f"{out}/users_data.bin", b"keep me")
    holder, late = Records(store, spec, "holder"), Records(store, spec, "late")
    assert holder.status(out) is None and late.status(out) is None
    early = late.early(out)
    assert early is not None and early.result() is not None
    late.settle(out, early, at_once=False)
    assert not holder.done(out) and not holder.begin(out)
    assert not holder.done(out) and holder.begin(out)
    assert store.read(f"{out}/users_data.bin") is not None


def test_a_step_whose_status_was_removed_by_hand_runs_again_without_clearing_its_folder(
    prefix: str,
) -> None:
    """No record of the step: its folder is not an unfinished attempt's (as before), even
    though its earlier lease (released) and info record are still there, which makes its
    own early RUNNING go the usual way."""
    spec = StepSpec("s", stepfns.add, {"a": 1, "b": 2})
    first = confpipe.run(spec, prefix=prefix)
    out, store = first.outputs["s"], store_for(prefix)
    store.write(f"{out}/kept.bin", b"a file of the earlier run")
    store.fs.rm(f"{out}/.confpipe/status.json")
    again = confpipe.run(spec, prefix=prefix)
    assert again.ran == [spec.identity]
    assert store.read(f"{out}/kept.bin") is not None
    status = read_status(store, out)
    assert status is not None and status.state is StepState.SUCCESS and not status.early
