#!/usr/bin/env python
"""Cloud Batch polling cost: API requests per in-flight job per minute, against FakeBatch.

    python benchmarks/bench_batch.py [--quick] [--jobs N] [--interval S] [--seconds W]

N jobs (default 200) are submitted to the fake through the real google-cloud-batch client
and held RUNNING (their task is ``sleep``); one thread per job polls its handle the way
``run_job`` does (every ``backend.max_poll_interval``). After all are running, the fake
counts the requests that arrive during W seconds. The poll interval is accelerated (default
0.5 s instead of 10 s); requests per interval don't depend on its length, so the rate is
also shown scaled to the production interval of 10 s.

Target (issue): <= 6 requests per in-flight job per minute at poll_interval=10s, with no
polling thread of the backend's own. Baseline shown beside it: one GetJob per job per
interval (what a backend polling each handle on its own would send). Exits 1 if missed
(``--quick`` never fails on the target: it is a smoke run).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from confpipe.backends import JobRequest  # noqa: E402
from confpipe.backends.gcp.batch import BatchBackend  # noqa: E402
from confpipe.backends.gcp.settings import GcpConf  # noqa: E402
from confpipe.backends.resources import Resources  # noqa: E402
from confpipe.testing.batch import FakeBatch  # noqa: E402

PRODUCTION_INTERVAL = 10.0
TARGET = 6.0


def ours() -> set[threading.Thread]:
    """This process's threads, less the fake's own (it is the server side)."""
    return {t for t in threading.enumerate() if not t.name.startswith("fake-batch")}


def measure(jobs: int, interval: float, seconds: float) -> dict[str, float]:
    folder = tempfile.mkdtemp(prefix="confpipe-bench-batch-")
    with FakeBatch(command=lambda runnable: ["sleep", "3600"]) as fake:
        settings = GcpConf(
            project="p", image="img", batch_endpoint=fake.endpoint, poll_interval=interval
        )
        backend = BatchBackend(settings)
        threads_before = ours()
        handles = [
            backend.submit(
                JobRequest(f"s{i}", f"{folder}/s{i}-0123456789ab/.confpipe/jobs/j", Resources())
            )
            for i in range(jobs)
        ]
        backend_threads = len(ours() - threads_before)
        stop = threading.Event()

        def poll(handle: object) -> None:  # what run_job's wait loop does, once backed off
            while not stop.is_set():
                backend.poll(handle)
                stop.wait(backend.max_poll_interval)

        pollers = [threading.Thread(target=poll, args=(h,), daemon=True) for h in handles]
        for t in pollers:
            t.start()
        deadline = time.monotonic() + 120
        while any(j.status.state.name != "RUNNING" for j in fake.jobs()):
            if time.monotonic() > deadline:
                raise TimeoutError("jobs never all ran")
            time.sleep(0.05)
        time.sleep(2 * interval)  # every handle has seen RUNNING: the steady state
        before, start = collections.Counter(m for m, _ in fake.requests), time.monotonic()
        time.sleep(seconds)
        after, elapsed = collections.Counter(m for m, _ in fake.requests), time.monotonic() - start
        stop.set()
        for t in pollers:
            t.join()
        for handle in handles:
            backend.cancel(handle)
        backend.close()
    sent = after - before
    total = sum(sent.values())
    per_job_minute = total / jobs / elapsed * 60
    return {
        "requests": total,
        "list_jobs": sent["ListJobs"],
        "get_job": sent["GetJob"],
        "elapsed": elapsed,
        "per_job_minute": per_job_minute,
        "per_job_minute_at_10s": per_job_minute * interval / PRODUCTION_INTERVAL,
        "baseline_per_job_minute_at_10s": 60 / PRODUCTION_INTERVAL,
        "backend_threads": backend_threads,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 jobs for 3 s; never fails")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.5, help="poll_interval, seconds")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring window")
    args = parser.parse_args(argv)
    jobs, seconds = (20, 3.0) if args.quick else (args.jobs, args.seconds)
    r = measure(jobs, args.interval, seconds)
    ok = r["per_job_minute_at_10s"] <= TARGET and r["backend_threads"] == 0
    print(f"{jobs} jobs in flight, poll_interval={args.interval:g}s, window {r['elapsed']:.1f}s")
    print(
        f"  requests: {r['requests']:.0f} "
        f"(ListJobs {r['list_jobs']:.0f}, GetJob {r['get_job']:.0f})"
    )
    print(f"  per job per minute at {args.interval:g}s: {r['per_job_minute']:.3f}")
    print(
        f"  per job per minute at {PRODUCTION_INTERVAL:g}s: {r['per_job_minute_at_10s']:.4f} "
        f"(target <= {TARGET:g}; one GetJob per job per interval: "
        f"{r['baseline_per_job_minute_at_10s']:g})"
    )
    print(f"  threads started by the backend: {r['backend_threads']:.0f} (target 0)")
    print("PASS" if ok else "FAIL")
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
