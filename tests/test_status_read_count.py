"""A cached re-run, the plan, and what ``status`` shows, read each step's status exactly once.

Counted at the Store primitives (``read`` and ``read_many``, per path) of a real store, a
local folder and fake-gcs-server: the statuses are read together (``read_many``, concurrently
on gs://), one read per step, and a cached re-run reads no other record. Issue 14's latency
figures rest on this: one batch of reads, not one round trip per step.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import confpipe
from confpipe import StepSpec
from confpipe.cli.commands import words
from confpipe.cli.history import gather
from confpipe.engine.options import RunOptions
from confpipe.engine.pipeline import survey
from confpipe.engine.status import status_path
from confpipe.storage import store_for
from tests.stepfns import add, noop

N = 12  # steps: N - 1 independent ones and a join of them all


def steps() -> list[StepSpec]:
    parts = [StepSpec(f"part{i:02d}", add, {"a": i, "b": 1}) for i in range(N - 1)]
    join = StepSpec("join", noop, {"after": parts})
    return [*parts, join]


class Reads:
    """Paths read through the store's ``read`` and ``read_many``, and how."""

    def __init__(self) -> None:
        self.paths: Counter[str] = Counter()
        self.single = 0  # reads one at a time (read, not within read_many)
        self.batches = 0  # read_many calls


@contextmanager
def counting_reads(store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Reads]:
    reads = Reads()
    read, read_many = store.read, store.read_many
    inside = threading.local()  # a store's read_many may call its read: counted once

    def counted_read(path: str) -> Any:
        if not getattr(inside, "many", False):
            reads.paths[path] += 1
            reads.single += 1
        return read(path)

    def counted_read_many(paths: Iterable[str]) -> Any:
        paths = list(paths)
        reads.paths.update(paths)
        reads.batches += 1
        inside.many = True
        try:
            return read_many(paths)
        finally:
            inside.many = False

    with monkeypatch.context() as patch:
        patch.setattr(store, "read", counted_read)
        patch.setattr(store, "read_many", counted_read_many)
        yield reads


def assert_one_status_read_per_step(reads: Reads, prefix: str, specs: list[StepSpec]) -> None:
    statuses = {status_path(spec.output_under(prefix)) for spec in specs}
    assert len(statuses) == N
    assert {p: reads.paths[p] for p in statuses} == dict.fromkeys(statuses, 1)
    assert [p for p in reads.paths if p not in statuses] == [], "other records were read"
    assert reads.single == 0, "statuses were read one by one, not together"


def check_status_reads(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first = confpipe.run(steps(), prefix=prefix)
    assert len(first.ran) == N
    store = store_for(prefix)

    specs = steps()  # fresh specs, as a new launch has them
    with counting_reads(store, monkeypatch) as reads:
        again = confpipe.run(specs, prefix=prefix)
    assert not again.ran and len(again.cached) == N
    assert_one_status_read_per_step(reads, prefix, specs)

    specs = steps()
    with counting_reads(store, monkeypatch) as reads:
        plans = survey(specs, RunOptions(prefix=prefix))
    assert len(plans) == N
    assert_one_status_read_per_step(reads, prefix, specs)

    specs = steps()  # what the status command reads: the plan's statuses, nothing more
    with counting_reads(store, monkeypatch) as reads:
        histories = gather(survey(specs, RunOptions(prefix=prefix)), results=False, infos=False)
    assert [words.where(h) for h in histories] == ["thread"] * N  # the status records say
    assert_one_status_read_per_step(reads, prefix, specs)


def test_a_cached_rerun_reads_each_local_status_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_status_reads(str(tmp_path / "out"), monkeypatch)


@pytest.mark.slow
def test_a_cached_rerun_reads_each_gs_status_once_together(
    gs_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_status_reads(gs_prefix, monkeypatch)
