#!/usr/bin/env python
"""Engine benchmarks: confpipe's overhead against a plain-Python baseline measured in the same run.

    python benchmarks/bench_engine.py [--quick] [--dir DIR] [--profile DIR] [--scenario NAME]

Targets (issue 14 point 2, and earlier issues'), each printed as PASS/FAIL; the exit code is
1 if one is missed (not with ``--quick``). "The floor" is a ``ThreadPoolExecutor`` whose
calls do the same file operations as a confpipe step (``mirror_step``, below): a plain thread
pool writing the same status files.

1. ``chain``: a chain of 200 no-op thread steps on a local prefix: <= 1.5 ms per step
   marginal (the whole ``run()`` less a one-step ``run()``, its start-up, over 199 steps)
   and <= 2x the floor's chain (each call submitted when the previous one is done); medians
   of 3, interleaved. No polling delay between a step finishing and its dependent starting
   is checked on the runner alone (``confpipe.engine.runner.run_tasks`` on a chain of
   trivial tasks): <= 1 ms per hand-off (polling every p ms would add p/2 per step).
2. ``wide``: 1,000 independent no-op steps, cold: <= 2x the floor's pool (medians of 3).
3. ``independent``: 10,000 independent no-op steps, first run (time, per-step cost, driver
   peak memory <= 150 MB) and fully cached re-run (<= 2 s, <= 1 storage read per step).
   Baselines: the floor's pool, and a plain loop reading the 10,000 status files.
4. ``resources``: one no-op step with ``Resources(cpu=1)`` on the local backend, the whole
   ``run()`` from submit to result, <= 0.5 s (median). Baseline: ``python -c pass``.

What the baselines mirror (counted from ``cache.py``, ``lock.py``, ``status.py`` and
``LocalStore``; the independent scenario also counts confpipe's store calls to check it):
per step (before issue 14), 3 reads of ``status.json`` (plan, cache check, re-check under the
lease); 1 exclusive create of ``lease.json`` (temp file + ``link`` + ``unlink`` + ``stat``,
making the folder); 4 atomic writes (temp file + ``rename``: ``info.json``, status RUNNING,
``result.json``, status SUCCESS); 1 compare-and-swap of the lease (``flock`` on the folder,
``stat``, temp file + ``rename``, ``stat``) and 1 guarded delete of the lease (``flock``,
``stat``, ``unlink``). The records are small JSON documents of about the same size. The
baseline is fixed; confpipe's actual store calls per step are printed, so drift shows (an
extra planning read of ``lease.json`` per step to run, for one, is counted as overhead).

Each scenario runs in a fresh child process of this script, so peak memory belongs to that
scenario; the thread scenarios first do one warm-up ``run()`` of one step (printed), so the
launch's one-time costs (lazy imports, the first ``git`` call) don't skew per-step figures.
``--scenario NAME`` runs one scenario in this process (handy under a profiler);
``--profile DIR`` writes a cProfile file (all threads, merged) for every confpipe ``run()``
measured.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import cProfile
import fcntl
import itertools
import json
import logging
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import confpipe
from confpipe import Resources, StepSpec
from confpipe.engine.status import status_path
from confpipe.storage import store_for

SCENARIOS = ("chain", "wide", "independent", "resources")
MAX_CONCURRENT = 32  # confpipe.run's default, and the baseline pool's size


# ---------------------------------------------------------------------------------------------
# Step functions (module top level: confpipe hashes their import path; the resources step
# is cloudpickled, by value when this file runs as __main__).


_STAMPS: list[tuple[int, float, float]] = []


def noop(output_path: str, **_: object) -> None:
    return None


def chain_step(output_path: str, i: int, prev: str | None = None) -> None:
    now = time.perf_counter()  # when the function ran: the gaps between steps are measured
    _STAMPS.append((i, now, now))


def job_noop(output_path: str, rep: int) -> None:
    return None


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Figure:
    scenario: str
    name: str
    confpipe: float
    baseline: float | None
    unit: str


@dataclass
class Target:
    scenario: str
    name: str
    measured: float
    limit: float
    unit: str
    strict: bool = False  # measured < limit, rather than <=

    @property
    def ok(self) -> bool:
        return self.measured < self.limit if self.strict else self.measured <= self.limit


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def say(scenario: str, text: str) -> None:
    print(f"[{scenario}] {text}", flush=True)


# ---------------------------------------------------------------------------------------------
# The baseline's file operations: LocalStore's syscalls for one step, without confpipe.

_tmp = itertools.count()


def _tmp_file(path: str, data: bytes) -> str:
    tmp = f"{path}.tmp-{os.getpid()}-{next(_tmp)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return tmp


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            os.fstat(f.fileno())
            return f.read()
    except FileNotFoundError:
        return None


def _write(path: str, data: bytes) -> None:
    os.replace(_tmp_file(path, data), path)


def _create(path: str, data: bytes) -> None:
    tmp = _tmp_file(path, data)
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
    os.stat(path)


@contextlib.contextmanager
def _flocked(folder: str) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _record(**fields: object) -> bytes:
    return json.dumps(fields, indent=1).encode()


def mirror_step(output: str, i: int) -> None:
    """One fresh thread step's file operations, as confpipe's LocalStore does them."""
    records = f"{output}/.confpipe"
    status, lease = f"{records}/status.json", f"{records}/lease.json"
    for _ in range(3):  # plan, cache check, re-check under the lease
        _read(status)
    owner = "bench@host:1:abcdef"
    _create(lease, _record(owner=owner, token="0" * 32, time=time.time()))
    info = {
        "name": f"n{i}",
        "hash": "0" * 12,
        "fn": "__main__.noop",
        "config": {"i": i},
        "deps": {},
        "resources": None,
        "hash_inputs": {"name": f"n{i}", "fn": "__main__.noop", "config": {"i": i}},
        "output_path": output,
        "git_commit": "0" * 40,
        "user": "bench",
        "host": "host",
        "argv": sys.argv,
        "launch": owner,
        "time": time.time(),
    }
    _write(f"{records}/info.json", _record(**info))
    started = time.time()
    _write(status, _record(state="RUNNING", worker=owner, time=started, started=started))
    with _flocked(records):  # the fence: compare-and-swap of the lease
        os.stat(lease)
        _write(lease, _record(owner=owner, token="1" * 32, time=time.time()))
        os.stat(lease)
    _write(f"{records}/result.json", json.dumps({"value": None}).encode())
    _write(status, _record(state="SUCCESS", worker=owner, time=time.time(), started=started))
    with _flocked(records):  # release: guarded delete of the lease
        os.stat(lease)
        os.unlink(lease)


# ---------------------------------------------------------------------------------------------
# Instrumentation


class StoreCounter:
    """Counts calls to a Store instance's primitives (``read_many`` counted per path), and the
    top-level calls to its fsspec filesystem's listing/metadata methods."""

    OPS = ("read", "create", "replace", "delete", "write")
    FS_OPS = ("ls", "info", "exists", "isdir", "isfile", "find", "glob", "walk", "open", "cat_file")

    def __init__(self, store: Any) -> None:
        self.store = store
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._inside = threading.local()  # a counted call's nested calls are not counted

    def _count(self, original: Callable[..., Any], what: Callable[..., dict[str, int]]) -> Any:
        """``original`` adding ``what(*args)`` to the counts, unless called by a counted call."""

        def counted(*args: Any, **kwargs: Any) -> Any:
            if getattr(self._inside, "depth", 0):
                return original(*args, **kwargs)
            with self._lock:
                self.counts.update(what(*args, **kwargs))
            self._inside.depth = 1
            try:
                return original(*args, **kwargs)
            finally:
                self._inside.depth = 0

        return counted

    def __enter__(self) -> StoreCounter:
        for op in self.OPS:
            original = getattr(self.store, op)
            setattr(self.store, op, self._count(original, lambda *a, op=op, **k: {op: 1}))
        many = self.store.read_many
        counted_many = self._count(many, lambda paths: {"read": len(paths), "read_many calls": 1})
        self.store.read_many = lambda paths: counted_many(list(paths))
        for op in self.FS_OPS:
            if hasattr(self.store.fs, op):
                original = getattr(self.store.fs, op)
                setattr(
                    self.store.fs, op, self._count(original, lambda *a, op=op, **k: {f"fs.{op}": 1})
                )
        return self

    def __exit__(self, *exc: object) -> None:
        for target, ops in ((self.store, (*self.OPS, "read_many")), (self.store.fs, self.FS_OPS)):
            for op in ops:
                if op in vars(target):
                    delattr(target, op)  # back to the class's methods

    def per_step(self, steps: int) -> str:
        """Store calls per step, then the whole run's read_many and fsspec calls."""
        per = [f"{op} {self.counts[op] / steps:.2f}" for op in self.OPS if self.counts[op]]
        total = [f"{op} {n}" for op, n in sorted(self.counts.items()) if op not in self.OPS]
        return ", ".join(per) + (f"; in all: {', '.join(total)}" if total else "")


class Timer:
    """Times (and with ``--profile``, profiles) one measured block.

    The profile covers this thread and every thread started during the block (the runner's
    workers), merged into one ``{label}.prof`` file; times in it are wall-clock per thread.
    """

    profile_dir: str | None = None

    def __init__(self, label: str, profile: bool = False) -> None:
        self.label, self.profile = label, profile and self.profile_dir is not None
        self.seconds = 0.0
        self._profiles: list[cProfile.Profile] = []

    def _profile_new_thread(self, *_: object) -> None:
        sys.setprofile(None)
        prof = cProfile.Profile()
        self._profiles.append(prof)
        prof.enable()

    def __enter__(self) -> Timer:
        if self.profile:
            threading.setprofile(self._profile_new_thread)
            self._profile_new_thread()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        if self.profile:
            threading.setprofile(None)  # type: ignore[arg-type]
            self._profiles[0].disable()
            stats = pstats.Stats(*self._profiles)
            assert self.profile_dir is not None
            path = os.path.join(self.profile_dir, f"{self.label}.prof")
            stats.dump_stats(path)
            print(f"  (profile of {len(self._profiles)} threads written to {path})", flush=True)


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def fresh_dir(base: str, name: str) -> str:
    return tempfile.mkdtemp(prefix=f"{name}-", dir=base)


def warm_up(scenario: str, base: str) -> float:
    """One run() of one step, so the measured runs don't carry the launch's one-time costs
    (lazy imports such as fsspec, the git call of the first info record); printed."""
    start = time.perf_counter()
    confpipe.run(StepSpec("warm_up", noop), prefix=fresh_dir(base, "warm-up"))
    seconds = time.perf_counter() - start
    say(scenario, f"warm-up: the first run() of one step in this process took {seconds:.3f} s")
    return seconds


# ---------------------------------------------------------------------------------------------
# Scenario 1: a chain


def chain_specs(n: int) -> list[StepSpec]:
    specs: list[StepSpec] = []
    for i in range(n):
        config: dict[str, Any] = {"i": i}
        if specs:
            config["prev"] = specs[-1]
        specs.append(StepSpec(f"c{i}", chain_step, config))
    return specs


def _floor_chain(n: int, folder: str) -> float:
    """Seconds for the status-file floor's chain: each call submitted when the last is done."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(MAX_CONCURRENT) as pool:
        for i in range(n):
            pool.submit(mirror_step, f"{folder}/c{i}", i).result()
    return time.perf_counter() - start


def _floor_wide(n: int, folder: str) -> float:
    """Seconds for the status-file floor's ``n`` independent calls in a pool."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(MAX_CONCURRENT) as pool:
        for future in [pool.submit(mirror_step, f"{folder}/n{i}", i) for i in range(n)]:
            future.result()
    return time.perf_counter() - start


def scenario_chain(n: int, base: str, reps: int) -> Results:
    """A chain of ``n`` no-op steps: whole ``run()``, its start-up (a one-step run) removed,
    against the floor's chain; ``reps`` times each, interleaved, medians."""
    out = Results()
    s = "chain"
    warm = warm_up(s, base)
    specs = chain_specs(n)
    ones, chains, floors = [], [], []
    for rep in range(reps):
        floors.append(_floor_chain(n, fresh_dir(base, "chain-floor")))
        with Timer("chain-one-step") as one:
            confpipe.run(chain_specs(1), prefix=fresh_dir(base, "chain-one"))
        ones.append(one.seconds)
        _STAMPS.clear()
        with Timer("chain-confpipe", profile=rep == 0) as t:
            summary = confpipe.run(specs[-1], prefix=fresh_dir(base, "chain"))
        assert len(summary.ran) == n, f"expected {n} steps run, got {len(summary.ran)}"
        chains.append(t.seconds)
        say(
            s,
            f"rep {rep + 1}: floor chain {1e3 * floors[-1] / n:.3f} ms/step; confpipe chain of "
            f"{n} {chains[-1]:.3f} s, one step {1e3 * ones[-1]:.1f} ms",
        )
    floor_ms = 1e3 * statistics.median(floors) / n
    total, one_step = statistics.median(chains), statistics.median(ones)
    per_step = 1e3 * total / n
    marginal = 1e3 * (total - one_step) / (n - 1)
    say(
        s,
        f"confpipe chain of {n}: {total:.3f} s ({per_step:.3f} ms/step), a one-step run "
        f"{1e3 * one_step:.1f} ms: marginal {marginal:.3f} ms/step (medians of {reps})",
    )
    say(
        s,
        f"floor (ThreadPoolExecutor chain writing the same status files): {floor_ms:.3f} ms/step;"
        f" marginal/floor {marginal / floor_ms:.2f}x",
    )
    fastest = 1e3 * (min(chains) - min(ones)) / (n - 1)
    say(
        s,
        f"fastest of {reps} (a loaded machine only adds time): marginal {fastest:.3f} ms/step, "
        f"floor {1e3 * min(floors) / n:.3f} ms/step, {fastest / (1e3 * min(floors) / n):.2f}x",
    )

    stamps = sorted(_STAMPS)
    gaps = [1e3 * (b[1] - a[2]) for a, b in itertools.pairwise(stamps)]
    if gaps:
        q = statistics.quantiles(gaps, n=100) if len(gaps) > 1 else gaps * 99
        say(
            s,
            "gap from a step's function returning to its dependent's function starting "
            f"(records + hand-off): median {statistics.median(gaps):.3f} ms, "
            f"p99 {q[98]:.3f} ms, max {max(gaps):.3f} ms",
        )
        out.figures.append(
            Figure(s, "median gap fn end -> next fn start", statistics.median(gaps), None, "ms")
        )

    # "No polling delay": the runner's own hand-off, without the records' file operations.
    hand_off, pool_hand_off = runner_hand_off(n)
    say(
        s,
        f"runner hand-off alone (confpipe.engine.runner.run_tasks, chain of {n} trivial tasks): "
        f"{1e3 * hand_off:.3f} ms/step; ThreadPoolExecutor chain of trivial calls: "
        f"{1e3 * pool_hand_off:.3f} ms/step",
    )
    out.figures += [
        Figure(s, "runner hand-off per step", 1e3 * hand_off, 1e3 * pool_hand_off, "ms"),
        Figure(s, "first run() of one step in a process", warm, None, "s"),
        Figure(s, "a one-step run() (start-up)", 1e3 * one_step, None, "ms"),
        Figure(s, f"chain of {n}: total", total, floor_ms * n / 1e3, "s"),
        Figure(s, f"chain of {n}: marginal per step", marginal, floor_ms, "ms"),
    ]
    out.targets += [
        Target(s, "runner hand-off per step (no polling)", 1e3 * hand_off, 1.0, "ms"),
        Target(s, f"chain of {n}: marginal per step", marginal, 1.5, "ms"),
        Target(s, f"chain of {n}: marginal / floor", marginal / floor_ms, 2.0, "x"),
    ]
    return out


def scenario_wide(n: int, base: str, reps: int) -> Results:
    """``n`` independent no-op steps, cold, against the floor's pool of the same file ops."""
    out = Results()
    s = "wide"
    warm_up(s, base)
    runs, floors = [], []
    for rep in range(reps):
        floors.append(_floor_wide(n, fresh_dir(base, "wide-floor")))
        specs = independent_specs(n)
        with Timer("wide-cold", profile=rep == 0) as t:
            summary = confpipe.run(specs, prefix=fresh_dir(base, "wide"))
        assert len(summary.ran) == n, f"expected {n} steps run, got {len(summary.ran)}"
        runs.append(t.seconds)
        say(s, f"rep {rep + 1}: floor {floors[-1]:.3f} s, confpipe cold {runs[-1]:.3f} s")
    run_s, floor_s = statistics.median(runs), statistics.median(floors)
    say(
        s,
        f"{n} wide, cold: confpipe {run_s:.3f} s, floor (ThreadPoolExecutor({MAX_CONCURRENT}) "
        f"writing the same status files) {floor_s:.3f} s: {run_s / floor_s:.2f}x "
        f"(medians of {reps}); fastest of each: {min(runs):.3f} s, {min(floors):.3f} s, "
        f"{min(runs) / min(floors):.2f}x",
    )
    out.figures.append(Figure(s, f"{n} wide, cold", run_s, floor_s, "s"))
    out.targets.append(Target(s, f"{n} wide, cold / floor", run_s / floor_s, 2.0, "x"))
    return out


def _nothing() -> None:
    return None


def runner_hand_off(n: int) -> tuple[float, float]:
    """Seconds per step of a chain of trivial tasks: confpipe's runner, a ThreadPoolExecutor."""
    from confpipe.engine.runner import Task, run_tasks  # internal API: the scheduler alone

    tasks = [Task(f"t{i}", (f"t{i - 1}",) if i else (), _nothing) for i in range(n)]
    start = time.perf_counter()
    run_tasks(tasks, max_concurrent=MAX_CONCURRENT)
    ours = (time.perf_counter() - start) / n
    with concurrent.futures.ThreadPoolExecutor(MAX_CONCURRENT) as pool:
        start = time.perf_counter()
        for _ in range(n):
            pool.submit(_nothing).result()
        theirs = (time.perf_counter() - start) / n
    return ours, theirs


# ---------------------------------------------------------------------------------------------
# Scenario 2: many independent steps, then the cached re-run


def independent_specs(n: int) -> list[StepSpec]:
    return [StepSpec(f"n{i}", noop, {"i": i}) for i in range(n)]


def scenario_independent(n: int, base: str, memory_limit: float, cached_limit: float) -> Results:
    out = Results()
    s = "independent"
    warm_up(s, base)
    rss_start = rss_mb()

    build = time.perf_counter()
    specs = independent_specs(n)
    build = time.perf_counter() - build
    prefix = fresh_dir(base, "independent")
    store = store_for(prefix)
    with StoreCounter(store) as first_ops, Timer("independent-first-run", profile=True) as t:
        summary = confpipe.run(specs, prefix=prefix, max_concurrent=MAX_CONCURRENT)
    assert len(summary.ran) == n, f"expected {n} steps run, got {len(summary.ran)}"
    peak = rss_mb()
    del summary
    say(
        s,
        f"confpipe first run: {n} no-op steps in {t.seconds:.3f} s, "
        f"{1e3 * t.seconds / n:.3f} ms/step (building the StepSpecs: {build:.3f} s)",
    )
    say(s, f"confpipe store calls per step (first run): {first_ops.per_step(n)}")
    say(
        s,
        f"driver peak RSS after the first run: {peak:.1f} MB "
        f"(before building the steps: {rss_start:.1f} MB)",
    )

    floor = _floor_wide(n, fresh_dir(base, "independent-baseline"))
    say(
        s,
        f"baseline: {n} tasks in a ThreadPoolExecutor({MAX_CONCURRENT}) (same file ops): "
        f"{floor:.3f} s, {1e3 * floor / n:.3f} ms/step; "
        f"ratio confpipe/baseline {t.seconds / floor:.2f}x",
    )

    # The cached re-run, as a new launch would do it: fresh StepSpecs (hashes not computed yet).
    build = time.perf_counter()
    specs = independent_specs(n)
    build = time.perf_counter() - build
    with StoreCounter(store) as ops, Timer("independent-cached-run", profile=True) as cached:
        summary = confpipe.run(specs, prefix=prefix, max_concurrent=MAX_CONCURRENT)
    assert not summary.ran and len(summary.cached) == n, "the re-run was not fully cached"
    reads = ops.counts["read"] / n
    others = sum(ops.counts[op] for op in ("create", "replace", "delete", "write"))
    fs_calls = sum(v for k, v in ops.counts.items() if k.startswith("fs."))
    say(
        s,
        f"confpipe cached re-run: {cached.seconds:.3f} s "
        f"({1e6 * cached.seconds / n:.1f} us/step; building the StepSpecs: {build:.3f} s)",
    )
    say(
        s,
        f"cached re-run store calls per step: {ops.per_step(n)} "
        f"(writes/creates/replaces/deletes: {others}; fsspec calls in all: {fs_calls})",
    )

    status_files = [status_path(spec.output_under(prefix)) for spec in specs]
    with Timer("independent-cached-baseline") as read_t:
        for path in status_files:
            assert _read(path) is not None
    say(
        s,
        f"baseline: plain loop reading the {n} status files (open+fstat+read): "
        f"{read_t.seconds:.3f} s; ratio confpipe/baseline "
        f"{cached.seconds / read_t.seconds:.1f}x",
    )
    peak = rss_mb()
    say(s, f"driver peak RSS at the end of the scenario: {peak:.1f} MB")

    out.figures += [
        Figure(s, f"{n} steps, first run: total", t.seconds, floor, "s"),
        Figure(s, "first run: per step", 1e3 * t.seconds / n, 1e3 * floor / n, "ms"),
        Figure(s, f"{n} steps, cached re-run", cached.seconds, read_t.seconds, "s"),
        Figure(s, "driver peak RSS", peak, None, "MB"),
    ]
    out.targets += [
        Target(s, f"cached re-run of {n} steps", cached.seconds, cached_limit, "s"),
        Target(s, "storage reads per step, cached re-run", reads, 1.0, "reads"),
        Target(s, f"driver peak RSS, {n}-step run", peak, memory_limit, "MB"),
    ]
    return out


def scenario_tracemalloc(n: int, base: str) -> Results:
    """The first run again under tracemalloc (slow; not timed against anything)."""
    out = Results()
    s = "independent"
    specs = independent_specs(n)
    prefix = fresh_dir(base, "independent-tracemalloc")
    tracemalloc.start()
    with Timer("independent-tracemalloc") as t:
        confpipe.run(specs, prefix=prefix, max_concurrent=MAX_CONCURRENT)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    say(
        s,
        f"tracemalloc peak of Python allocations during a {n}-step first run "
        f"(StepSpecs built before): {peak / 2**20:.1f} MB (run took {t.seconds:.1f} s traced)",
    )
    out.figures.append(Figure(s, "tracemalloc peak during first run", peak / 2**20, None, "MB"))
    return out


# ---------------------------------------------------------------------------------------------
# Scenario 3: one step with resources on the local backend


def _median_seconds(fn: Callable[[], object], reps: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def scenario_resources(reps: int, base: str) -> Results:
    out = Results()
    s = "resources"
    reps_done = itertools.count()

    def one_run() -> None:
        rep = next(reps_done)
        spec = StepSpec("job", job_noop, {"rep": rep}, resources=Resources(cpu=1))
        summary = confpipe.run(spec, prefix=fresh_dir(base, f"resources-{rep}"))
        assert summary.ran, "the resources step did not run"

    with Timer("resources-cold", profile=True) as cold:
        one_run()
    say(
        s,
        f"first run in this process (imports the local backend, first git call): "
        f"{cold.seconds:.3f} s",
    )
    with Timer("resources-warm", profile=True):
        median, times = _median_seconds(one_run, reps)
    say(
        s,
        f"confpipe run() of one Resources(cpu=1) no-op step: median {median:.3f} s over "
        f"{reps} (each {', '.join(f'{x:.3f}' for x in times)})",
    )

    def python_pass() -> None:
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    def import_worker() -> None:
        subprocess.run([sys.executable, "-c", "import confpipe.worker"], check=True)

    base_median, _ = _median_seconds(python_pass, reps)
    import_median, _ = _median_seconds(import_worker, reps)
    say(
        s,
        f"baseline: subprocess.run([python, '-c', 'pass']): median {base_median:.3f} s; "
        f"ratio confpipe/baseline {median / base_median:.1f}x",
    )
    say(
        s,
        f"subprocess.run([python, '-c', 'import confpipe.worker']): median "
        f"{import_median:.3f} s (the job's start-up cost before it runs the call)",
    )

    out.figures += [
        Figure(s, "one Resources(cpu=1) step, run() median", median, base_median, "s"),
        Figure(s, "one Resources(cpu=1) step, first in process", cold.seconds, None, "s"),
        Figure(s, "python -c 'import confpipe.worker'", import_median, base_median, "s"),
    ]
    out.targets.append(Target(s, "one Resources(cpu=1) step, submit to result", median, 0.5, "s"))
    return out


# ---------------------------------------------------------------------------------------------
# Driver


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"chain": 200, "wide": 300, "independent": 2_000, "reps": 3, "runs": 1}
    return {"chain": 200, "wide": 1_000, "independent": 10_000, "reps": 5, "runs": 3}


def run_scenario(name: str, args: argparse.Namespace, base: str) -> Results:
    size = sizes(args.quick)
    if name == "chain":
        return scenario_chain(size["chain"], base, size["runs"])
    if name == "wide":
        return scenario_wide(size["wide"], base, size["runs"])
    if name == "independent":
        n = size["independent"]
        # The 2 s is for 10,000 steps; smaller runs get a proportional limit.
        return scenario_independent(n, base, memory_limit=150.0, cached_limit=2.0 * n / 10_000)
    if name == "tracemalloc":
        return scenario_tracemalloc(size["independent"], base)
    if name == "resources":
        return scenario_resources(size["reps"], base)
    raise SystemExit(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")


def in_child(name: str, args: argparse.Namespace) -> Results:
    """Run one scenario in a fresh interpreter; its figure lines go straight to our stdout."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_file = f.name
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--scenario",
        name,
        "--result-file",
        result_file,
        "--dir",
        args.dir,
    ]
    if args.quick:
        cmd.append("--quick")
    if args.profile:
        cmd += ["--profile", args.profile]
    try:
        proc = subprocess.run(cmd, check=False)
        with open(result_file) as f:
            text = f.read()
        if proc.returncode not in (0, 1) or not text:
            raise SystemExit(f"scenario {name} crashed (exit code {proc.returncode})")
        data = json.loads(text)
    finally:
        os.unlink(result_file)
    return Results(
        [Figure(**x) for x in data["figures"]],
        [Target(**x) for x in data["targets"]],
        data["notes"],
    )


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} {unit}" if value < 100 else f"{value:.1f} {unit}"


def print_summary(results: Results) -> None:
    print("\nSummary")
    rows = [("scenario", "figure", "confpipe", "baseline", "ratio")]
    for fig in results.figures:
        ratio = f"{fig.confpipe / fig.baseline:.2f}x" if fig.baseline else "-"
        rows.append(
            (
                fig.scenario,
                fig.name,
                _fmt(fig.confpipe, fig.unit),
                _fmt(fig.baseline, fig.unit),
                ratio,
            )
        )
    _table(rows)
    print()
    rows = [("scenario", "target", "measured", "limit", "result")]
    for tgt in results.targets:
        rows.append(
            (
                tgt.scenario,
                tgt.name,
                _fmt(tgt.measured, tgt.unit),
                f"{'<' if tgt.strict else '<='} {_fmt(tgt.limit, tgt.unit)}",
                "PASS" if tgt.ok else "FAIL",
            )
        )
    _table(rows)
    for note in results.notes:
        print(f"note: {note}")


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes, for CI smoke runs (exits 0 on missed targets; a crash still fails)",
    )
    parser.add_argument("--dir", help="where to make the temporary prefixes (default: $TMPDIR)")
    parser.add_argument(
        "--scenario",
        choices=[*SCENARIOS, "tracemalloc"],
        help="run only this scenario, in this process",
    )
    parser.add_argument("--profile", metavar="DIR", help="write a cProfile file per confpipe run")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also trace Python allocations of a first run (slow: ~4x)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary prefixes")
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("confpipe").setLevel(logging.WARNING)
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        Timer.profile_dir = os.path.abspath(args.profile)

    if args.scenario is not None:  # one scenario, here
        base = tempfile.mkdtemp(prefix="confpipe-bench-", dir=args.dir)
        try:
            results = run_scenario(args.scenario, args, base)
        finally:
            if not args.keep:
                shutil.rmtree(base, ignore_errors=True)
        if args.result_file:
            with open(args.result_file, "w") as f:
                json.dump(asdict(results), f)
        else:
            print_summary(results)
        return 0 if all(t.ok for t in results.targets) else 1

    args.dir = os.path.abspath(args.dir or tempfile.gettempdir())
    size = sizes(args.quick)
    print(
        f"confpipe engine benchmark ({'quick' if args.quick else 'full'}): "
        f"chain {size['chain']}, wide {size['wide']}, independent {size['independent']}, "
        f"resources x{size['reps']}; Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, prefixes under {args.dir}",
        flush=True,
    )
    names = list(SCENARIOS)
    if args.tracemalloc:
        names.insert(names.index("independent") + 1, "tracemalloc")
    results = Results()
    for name in names:
        got = in_child(name, args)
        results.figures += got.figures
        results.targets += got.targets
        results.notes += got.notes
    print_summary(results)
    failed = [t for t in results.targets if not t.ok]
    print(
        f"\n{'FAIL' if failed else 'PASS'}: {len(results.targets) - len(failed)} of "
        f"{len(results.targets)} targets met"
    )
    if failed and args.quick:
        print("(--quick is a smoke run on small sizes: missed targets do not fail it)")
        return 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
