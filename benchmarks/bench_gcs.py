#!/usr/bin/env python
"""gs:// benchmark at real latency: each figure direct (~1 ms) and through a 30 ms proxy.

    python benchmarks/bench_gcs.py [--quick] [--steps N] [--chain N] [--delay-ms 15]

fake-gcs-server answers in about a millisecond; a real bucket in 20-60 ms. So every figure
is measured twice in one run: direct, and through ``latency_proxy.ProxyProcess`` (a proxy
in a child process) adding ``--delay-ms`` each way (15: 30 ms a round trip), each phase on
its own fresh fake-gcs-server doing the same runs in the same order, each run on a bucket of
its own:
fake-gcs-server's uploads slow down as their bucket fills (~1.5 ms each at 1,000 objects,
~3 ms at 5,000, serialized), so a cold run of many steps is bound by the server, not by
confpipe; the server's time per upload before and after the cold run is printed. The
direct figure is the baseline of the 30 ms one; the chain and the read-only figures are
medians of 3 (this machine's load varies: a quiet one gives steadier figures).

Figures per phase (N = ``--steps``, 1,000; a chain of ``--chain``, 30):

  chain     a chain of no-op steps: ms a step, HTTP requests and store calls a step, and
            the median gap from a step's function returning to its dependent's starting;
            the sequential storage round trips on a step's critical path are derived as
            (ms a step at 30 ms - ms a step direct) / the added round trip
  cold      N independent no-op thread steps, first run (and 200, as the issue measured)
  cached    the same N steps again, all cached: ``confpipe.run`` in this process, and a
            fresh process (Python start and imports too; not judged)
  dry run   ``run(dry_run=True)`` over the N succeeded steps
  plan      ``survey``: the plan of the N steps (what ``status``/``show`` start from)
  status    ``survey`` and ``gather`` (the plan's status records), as ``confpipe status``
            does after composing the config (composing is ``bench_cli``'s business)
  gcsfs.cat gcsfs's own concurrent read of the N status records: a baseline for reading

Targets (issue 14, point 1), printed as PASS/FAIL; the exit code is 1 if one is missed,
except with ``--quick`` (a CI smoke run: 100 steps, a chain of 10, never fails on targets):

  (a) chain at 30 ms: <= 130 ms a step (the issue's aim: <= 4 sequential round trips)
  (b) cached re-run of N steps at 30 ms: <= 1.5 s
  (c) cold N steps at 30 ms: <= 2x the same run direct
  (d) dry run, plan and status over N steps at 30 ms: <= 2 s each

The servers, the proxy and confpipe share this machine's CPUs: figures are for comparing,
not for predicting Cloud Storage's.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import confpipe
from bench_engine import _STAMPS, chain_specs
from confpipe import StepSpec, storage
from confpipe.engine.options import RunOptions
from confpipe.engine.pipeline import survey
from confpipe.engine.status import status_path
from confpipe.storage import store_for
from confpipe.testing.gcs import FakeGcs
from latency_proxy import ProxyProcess, _keepalive_get_ms

BUCKET = "bench"
CONCURRENCY = 32
REPEAT = 3  # the chain and the read-only figures are medians of this many runs
SMALL = 200  # steps of the second, smaller cold run (the figure)
OPS = ("read", "create", "replace", "delete", "write")


def noop(output_path: str, i: int) -> None:
    return None


def wide(n: int) -> list[StepSpec]:
    return [StepSpec(f"s{i:04d}", noop, {"i": i}) for i in range(n)]


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - started, value


class Counting:
    """Counts the HTTP requests of a GcsStore (its gcsfs ``_call``) and its primitive calls
    (``read_many`` counted as one read per path); with ``tracing`` on, also keeps each
    primitive call's start, end, path and the confpipe function that made it."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.counts: Counter[str] = Counter()
        self.tracing = False
        self.trace: list[tuple[float, float, str, str, str]] = []

    def __enter__(self) -> Counting:
        store, counts = self.store, self.counts
        real_call = store.fs._call

        async def call(*args: Any, **kwargs: Any) -> Any:
            counts["http"] += 1
            return await real_call(*args, **kwargs)

        store.fs._call = call
        for op in OPS:
            setattr(store, op, self._counted(op, getattr(store, op)))
        many = store.read_many

        def read_many(paths: Any) -> Any:
            paths = list(paths)
            counts["read"] += len(paths)
            return self._traced("read_many", f"{len(paths)} paths", many, paths)

        store.read_many = read_many
        rm = store.fs.rm
        store.fs.rm = lambda path, *a, **k: self._traced("fs.rm", path, rm, path, *a, **k)
        return self

    def _counted(self, op: str, real: Any) -> Any:
        def counted(path: str, *args: Any, **kwargs: Any) -> Any:
            self.counts[op] += 1
            return self._traced(op, path, real, path, *args, **kwargs)

        return counted

    def _traced(self, op: str, path: str, real: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.tracing:
            return real(*args, **kwargs)
        frame, caller = sys._getframe(2), "?"
        while frame is not None:
            name = frame.f_code.co_filename
            if "confpipe" in name and "storage" not in name:
                caller = f"{os.path.basename(name)}:{frame.f_code.co_name}"
                break
            frame = frame.f_back  # type: ignore[assignment]
        started = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            self.trace.append((started, time.perf_counter(), op, path, caller))

    def __exit__(self, *exc: object) -> None:
        for op in (*OPS, "read_many"):
            vars(self.store).pop(op, None)
        vars(self.store.fs).pop("_call", None)
        vars(self.store.fs).pop("rm", None)

    @contextlib.contextmanager
    def during(self) -> Iterator[Counter[str]]:
        """The counts added while the block runs."""
        before = Counter(self.counts)
        took: Counter[str] = Counter()
        yield took
        took.update(self.counts)
        took.subtract(before)

    @staticmethod
    def per(counts: Counter[str], n: int) -> str:
        calls = ", ".join(f"{op} {counts[op] / n:.2f}" for op in OPS if counts[op])
        return f"{counts['http'] / n:.2f} requests ({calls})"


@dataclass
class Phase:
    """One latency's figures (seconds unless named otherwise)."""

    label: str
    rtt_ms: float = 0.0  # one GET on a kept-alive connection, median
    figures: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def print_step_trace(
    label: str,
    trace: list[tuple[float, float, str, str, str]],
    stamps: list[tuple[int, float, float]],
    k: int,
) -> None:
    """The store calls between chain step ``k - 1``'s function and step ``k``'s, in order:
    what lies on the chain's critical path from one step's work to the next."""
    begin, end = stamps[k - 1][1], stamps[k][1]
    names = {f"c{k - 1}": "prev", f"c{k}": "this"}
    print(f"[{label}] store calls from step {k - 1}'s function to step {k}'s (ms after the first):")
    for started, ended, op, path, caller in sorted(trace):
        if ended < begin or started > end:
            continue
        who = next((v for key, v in names.items() if f"/{key}-" in path), "")
        tail = path.rsplit("/", 1)[-1]
        print(
            f"    {1e3 * (started - begin):7.1f} -> {1e3 * (ended - begin):7.1f}  "
            f"{op:9} {who:4} {tail:12} {caller}"
        )
    print(f"    {1e3 * (end - begin):7.1f}  step {k}'s function starts")


def measure(label: str, delay_ms: float, n: int, n_chain: int, trace: bool = False) -> Phase:
    """Every figure on a fresh fake-gcs-server, through a proxy adding ``delay_ms`` each way
    (none when 0)."""
    phase = Phase(label)
    with contextlib.ExitStack() as stack:
        gcs = stack.enter_context(FakeGcs())
        gcs.create_bucket(BUCKET)
        endpoint = gcs.endpoint
        if delay_ms:
            endpoint = stack.enter_context(ProxyProcess(gcs.endpoint, delay_ms=delay_ms)).endpoint
        os.environ.update(gcs.env)  # before gcsfs is imported (HNS off), and for the child
        storage.configure(storage_endpoint=endpoint)  # STORAGE_EMULATOR_HOST = endpoint
        phase.rtt_ms = statistics.median(_keepalive_get_ms(endpoint, "/storage/v1/b", 20))
        print(f"[{label}] one GET, kept-alive connection: {phase.rtt_ms:.2f} ms", flush=True)
        store: Any = store_for(f"gs://{BUCKET}/x")
        buckets = Buckets(gcs)
        with Counting(store) as counting:
            confpipe.run(wide(1), prefix=buckets.new("warm-up"))  # imports, session, clock
            chain_figures(phase, counting, buckets, n_chain, trace)
            prefix = cold_figures(phase, counting, buckets, n)
            read_figures(phase, counting, prefix, n)
        child = [sys.executable, os.path.abspath(__file__), "--child-rerun", prefix, str(n)]
        phase.figures["fresh process"], done = timed(
            subprocess.run, child, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"the fresh-process re-run failed:\n{done.stderr}")
    storage.configure()
    return phase


class Buckets:
    """A new bucket per measured run: fake-gcs-server's uploads slow as a bucket fills."""

    def __init__(self, gcs: FakeGcs) -> None:
        self.gcs, self.run_id = gcs, uuid.uuid4().hex[:8]

    def new(self, name: str) -> str:
        """The prefix ``gs://BUCKET/x`` on a new bucket."""
        bucket = f"{BUCKET}-{name}-{self.run_id}"
        self.gcs.create_bucket(bucket)
        return f"gs://{bucket}/x"


def chain_figures(
    phase: Phase, counting: Counting, buckets: Buckets, n_chain: int, trace: bool
) -> None:
    """A chain of ``n_chain`` no-op steps, ``REPEAT`` times: ms a step, requests, gaps."""
    fig, specs = phase.figures, chain_specs(n_chain)
    per_step, gap = [], []
    with counting.during() as ops:
        for rep in range(REPEAT):
            _STAMPS.clear()
            prefix = buckets.new(f"chain{rep}")
            counting.tracing, counting.trace = rep == 0, []
            took, summary = timed(
                confpipe.run, specs[-1], prefix=prefix, max_concurrent=CONCURRENCY
            )
            counting.tracing = False
            assert len(summary.ran) == n_chain, "the chain did not run every step"
            per_step.append(1000 * took / n_chain)
            stamps = [t for _, t, _ in sorted(_STAMPS)]
            gap.append(statistics.median(1000 * (b - a) for a, b in pairwise(stamps)))
            if trace and rep == 0:
                print_step_trace(phase.label, counting.trace, sorted(_STAMPS), n_chain // 2)
    fig["chain ms/step"], fig["chain gap ms"] = statistics.median(per_step), min(gap)
    fig["chain requests/step"] = ops["http"] / (n_chain * REPEAT)
    phase.notes["chain"] = Counting.per(ops, n_chain * REPEAT)
    print(
        f"[{phase.label}] chain of {n_chain}: {fig['chain ms/step']:.1f} ms/step (median of "
        f"{', '.join(f'{x:.1f}' for x in per_step)}), {phase.notes['chain']} a step; median "
        f"gap fn -> next fn {fig['chain gap ms']:.1f} ms (the least of {REPEAT})",
        flush=True,
    )


def cold_figures(phase: Phase, counting: Counting, buckets: Buckets, n: int) -> str:
    """First runs of ``SMALL`` and ``n`` no-op steps; returns the prefix of the ``n``."""
    fig = phase.figures
    prefix = buckets.new("small")  # the 200: less bound by the server
    fig["cold small"], summary = timed(
        confpipe.run, wide(SMALL), prefix=prefix, max_concurrent=CONCURRENCY
    )
    assert len(summary.ran) == SMALL, "the cold run did not run every step"
    prefix = buckets.new("wide")
    bucket = prefix.split("/")[2]
    fig["upload ms before"] = upload_ms(buckets.gcs.endpoint, bucket)
    with counting.during() as ops:
        fig["cold"], summary = timed(
            confpipe.run, wide(n), prefix=prefix, max_concurrent=CONCURRENCY
        )
    assert len(summary.ran) == n, "the cold run did not run every step"
    fig["upload ms after"] = upload_ms(buckets.gcs.endpoint, bucket)
    phase.notes["cold"] = Counting.per(ops, n)
    print(
        f"[{phase.label}] cold {n}: {fig['cold']:.3f} s, {phase.notes['cold']} a step (the "
        f"server: {fig['upload ms before']:.1f} ms an upload before, "
        f"{fig['upload ms after']:.1f} after)",
        flush=True,
    )
    return prefix


def read_figures(phase: Phase, counting: Counting, prefix: str, n: int) -> None:
    """The read-only figures over ``n`` succeeded steps, each a median of ``REPEAT``."""
    fig = phase.figures
    with counting.during() as ops:
        fig["cached"] = median_of(REPEAT, lambda: _cached(n, prefix, max_concurrent=CONCURRENCY))
    phase.notes["cached"] = Counting.per(ops, n * REPEAT)
    options = RunOptions(prefix=prefix)
    with contextlib.redirect_stdout(io.StringIO()):  # the plan it prints: not here
        fig["dry run"] = median_of(
            REPEAT, lambda: confpipe.run(wide(n), prefix=prefix, dry_run=True)
        )
    fig["plan"] = median_of(REPEAT, lambda: survey(wide(n), options))
    fig["status"] = median_of(REPEAT, lambda: _status(wide(n), options))
    paths = [status_path(spec.output_under(prefix)) for spec in wide(n)]
    fig["gcsfs.cat"] = median_of(REPEAT, lambda: counting.store.fs.cat(paths))
    print(
        f"[{phase.label}] cached {n}: {fig['cached']:.3f} s, {phase.notes['cached']} a step; "
        f"dry run {fig['dry run']:.3f} s, plan {fig['plan']:.3f} s, status {fig['status']:.3f} "
        f"s, gcsfs.cat of {n} records {fig['gcsfs.cat']:.3f} s (medians of {REPEAT})",
        flush=True,
    )


def median_of(repeat: int, fn: Any) -> float:
    """The median of ``repeat`` timings of ``fn()``, in seconds."""
    return statistics.median(timed(fn)[0] for _ in range(repeat))


def _cached(n: int, prefix: str, **options: Any) -> None:
    summary = confpipe.run(wide(n), prefix=prefix, **options)
    assert not summary.ran and len(summary.cached) == n, "the re-run ran steps"


def upload_ms(endpoint: str, bucket: str, n: int = 20) -> float:
    """Milliseconds per small upload to ``bucket``, one after another, straight to the server
    (no proxy): fake-gcs-server takes longer per upload the more objects the bucket holds."""
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    name = f"scratch-{uuid.uuid4().hex}"
    url = f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}"
    try:
        started = time.perf_counter()
        for _ in range(n):
            conn.request("POST", url, body=b"{}", headers={"Content-Type": "text/plain"})
            conn.getresponse().read()
        return (time.perf_counter() - started) / n * 1000
    finally:
        conn.close()


def _status(specs: list[StepSpec], options: RunOptions) -> Any:
    """What ``confpipe status`` does once the config is composed: plan, then the records."""
    from confpipe.cli.history import gather

    return gather(survey(specs, options), results=False, infos=False)  # as `status` reads


def rerun_child(prefix: str, n: int) -> int:
    """The fresh-process re-run: prints its own run() time, the parent times the process."""
    took, summary = timed(confpipe.run, wide(n), prefix=prefix, max_concurrent=CONCURRENCY)
    assert not summary.ran and len(summary.cached) == n, "the re-run ran steps"
    print(f"{took:.6f}")
    return 0


ROWS = (
    ("chain ms/step", "chain of {c}: ms a step", "ms"),
    ("chain gap ms", "chain: median gap fn end -> next fn start", "ms"),
    ("chain requests/step", "chain: HTTP requests a step", ""),
    ("cold small", f"cold run of {SMALL} steps", "s"),
    ("cold", "cold run of {n} steps", "s"),
    ("cached", "cached re-run of {n}, run()", "s"),
    ("fresh process", "cached re-run of {n}, fresh process", "s"),
    ("dry run", "dry run over {n}", "s"),
    ("plan", "plan (survey) over {n}", "s"),
    ("status", "status (survey + gather) over {n}", "s"),
    ("gcsfs.cat", "baseline: gcsfs.cat of {n} status records", "s"),
)


def report(direct: Phase, slow: Phase, n: int, n_chain: int, delay_ms: float) -> list[bool]:
    added = slow.rtt_ms - direct.rtt_ms
    nominal = 2 * delay_ms
    print(
        f"\ngs:// on fake-gcs-server: {n} no-op steps, a chain of {n_chain}, "
        f"max_concurrent={CONCURRENCY}; one GET {direct.rtt_ms:.2f} ms direct, "
        f"{slow.rtt_ms:.2f} ms through the proxy (+{added:.1f} ms, nominal +{nominal:g})"
    )
    rows = [("figure", "direct", f"+{nominal:g} ms", "ratio")]
    for key, name, unit in ROWS:
        a, b = direct.figures[key], slow.figures[key]
        digits = 1 if unit == "ms" else 3
        cells = [f"{v:.{digits}f} {unit}".strip() for v in (a, b)]
        rows.append((name.format(n=n, c=n_chain), *cells, f"x{b / a:.2f}"))
    _table(rows)
    for key in ("chain", "cold", "cached"):
        print(f"  store calls a step, {key}: direct {direct.notes[key]}; slow {slow.notes[key]}")

    step_direct, step_slow = direct.figures["chain ms/step"], slow.figures["chain ms/step"]
    trips_nominal = (step_slow - step_direct) / nominal
    trips_measured = (step_slow - step_direct) / added
    print(
        f"\nsequential storage round trips a chain step: {trips_nominal:.1f} "
        f"(= ({step_slow:.1f} - {step_direct:.1f} ms) / {nominal:g} ms; {trips_measured:.1f} "
        f"with the proxy's measured +{added:.1f} ms); HTTP requests a step: "
        f"{slow.figures['chain requests/step']:.1f}"
    )
    cold_ratio = slow.figures["cold"] / direct.figures["cold"]
    checks = [
        ("(a) chain at 30 ms, ms a step", step_slow, 130.0, "ms"),
        (f"(b) cached re-run of {n} at 30 ms", slow.figures["cached"], 1.5, "s"),
        (f"(c) cold {n} at 30 ms / direct", cold_ratio, 2.0, "x"),
        (f"(d) dry run over {n} at 30 ms", slow.figures["dry run"], 2.0, "s"),
        (f"(d) plan over {n} at 30 ms", slow.figures["plan"], 2.0, "s"),
        (f"(d) status over {n} at 30 ms", slow.figures["status"], 2.0, "s"),
    ]
    print()
    oks = []
    for name, value, limit, unit in checks:
        ok = value <= limit
        oks.append(ok)
        print(f"{'PASS' if ok else 'FAIL'}: {name}: {value:.3f} {unit} <= {limit:g} {unit}")
    return oks


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  " + "  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="100 steps, a chain of 10; never fails on targets"
    )
    parser.add_argument("--steps", type=int, help="independent steps (1000; 100 quick)")
    parser.add_argument("--chain", type=int, help="steps in the chain (30; 10 quick)")
    parser.add_argument("--delay-ms", type=float, default=15.0, help="added each way (15)")
    parser.add_argument(
        "--trace", action="store_true", help="print one chain step's store calls at 30 ms"
    )
    parser.add_argument("--child-rerun", nargs=2, metavar=("PREFIX", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_rerun:
        return rerun_child(args.child_rerun[0], int(args.child_rerun[1]))
    n = args.steps or (100 if args.quick else 1000)
    n_chain = args.chain or (10 if args.quick else 30)

    direct = measure("direct", 0.0, n, n_chain)
    slow = measure(f"+{2 * args.delay_ms:g} ms", args.delay_ms, n, n_chain, trace=args.trace)
    oks = report(direct, slow, n, n_chain, args.delay_ms)
    judged = (n, n_chain, args.delay_ms) == (1000, 30, 15.0)
    print(f"\n{'PASS' if all(oks) else 'FAIL'}: {sum(oks)} of {len(oks)} targets met")
    if args.quick or not judged:
        print("(the targets are for 1000 steps, a chain of 30, 15 ms each way: not judged)")
        return 0
    return 0 if all(oks) else 1


if __name__ == "__main__":
    sys.exit(main())
