#!/usr/bin/env python
"""Cloud Batch polling cost: API requests per job per minute, against FakeBatch.

    python benchmarks/bench_batch.py [--quick] [--jobs N] [--interval S] [--seconds W]

Two measures, through the real google-cloud-batch client; the poll interval is accelerated
(default 0.5 s instead of 10 s) and requests per interval don't depend on its length, so
rates are shown scaled to the production interval of 10 s:

1. Whole life: a lone job, then three at once, each lasting 6 intervals (60 s in
   production), driven by ``run_job`` itself from submission to its result. Every request
   the fake receives from the first submission to the last result counts, divided by the
   jobs' summed lifetimes. Shown twice: the status requests (what polling costs: target
   <= 6 per job-minute) and every request including each job's one CreateJob (which no
   polling scheme saves; for a lone 60 s job it adds about 1/minute). Beside them, the
   storage reads of each job's exit record (``exits/0.json``, by which the driver notices
   the end between API requests: no target, they cost no API request) and how long after
   its end each job was noticed (before them, up to one poll interval).
2. Steady state: N jobs (default 200) held RUNNING (their task is ``sleep``), one thread per
   job polling its handle as ``run_job`` does (every ``backend.max_poll_interval``); the
   requests arriving during W seconds, once all run. Target <= 6 per job-minute, with no
   polling thread of the backend's own; beside it the baseline of one GetJob per job per
   interval (a backend polling each handle on its own).

Prints PASS or FAIL against the targets; exits 1 on FAIL (``--quick`` never fails: it is a
smoke run).
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
from confpipe.backends.gcp.hosts import Exit  # noqa: E402
from confpipe.backends.gcp.settings import GcpConf  # noqa: E402
from confpipe.backends.resources import Resources  # noqa: E402
from confpipe.cancel import CancelScope  # noqa: E402
from confpipe.engine.remote import run_job  # noqa: E402
from confpipe.testing.batch import FakeBatch  # noqa: E402

PRODUCTION_INTERVAL = 10.0
TARGET = 6.0
STATUS = ("ListJobs", "GetJob")  # the requests polling sends
JOB_INTERVALS = 6  # a whole-life job lasts this many poll intervals (60 s in production)
WRITE_RESULT = (  # the "image" of the whole-life jobs: sleep, then write the job's result
    "import pathlib, sys, time; time.sleep(float(sys.argv[2])); job = pathlib.Path(sys.argv[1]); "
    "(job / 'result.json').write_text('{\"value\": 1}'); (job / 'exits').mkdir(); "
    "(job / 'exits' / '0.json').write_text('{\"host\": 0, \"code\": 0}')"
)  # and its exit record, last, as vm writes it: the driver notices the end by it


def lifetime(concurrent: int, interval: float) -> dict[str, float]:
    """``concurrent`` jobs of JOB_INTERVALS intervals each, run by run_job from submission
    to result: requests per job-minute of their lives, status requests and all."""
    folder = tempfile.mkdtemp(prefix="confpipe-bench-batch-")
    seconds = JOB_INTERVALS * interval

    def command(runnable: object) -> list[str]:  # python -m confpipe.backends.vm JOB_DIR
        job_dir = list(runnable.container.commands)[2]  # type: ignore[attr-defined]
        return [sys.executable, "-c", WRITE_RESULT, job_dir, str(seconds)]

    with FakeBatch(command=command) as fake:
        settings = GcpConf(
            project="p", image="img", batch_endpoint=fake.endpoint, poll_interval=interval
        )
        backend = BatchBackend(settings)
        lives: list[float] = []
        late: list[float] = []
        reads = count_exit_reads()

        def one(i: int) -> None:
            start = time.monotonic()
            jobs = f"{folder}/s{i}-0123456789ab/.confpipe/jobs"
            run_job(backend, f"s{i}", jobs, len, {}, Resources(), scope=CancelScope())
            lives.append(time.monotonic() - start)
            (record,) = Path(jobs).glob("*/exits/0.json")
            late.append(time.time() - record.stat().st_mtime)

        before = len(fake.requests)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(concurrent)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent = collections.Counter(m for m, _ in fake.requests[before:])
        backend.close()
    minutes = sum(lives) / 60 * PRODUCTION_INTERVAL / interval  # at the production interval
    status = sum(sent[m] for m in STATUS)
    scale = PRODUCTION_INTERVAL / interval
    return {
        "exit_reads_per_job_minute": len(reads) / minutes,
        "noticed_after_s": max(late) * scale,
        "jobs": concurrent,
        "requests": sum(sent.values()),
        "status": status,
        "create": sent["CreateJob"],
        "life_s": sum(lives) / concurrent * PRODUCTION_INTERVAL / interval,
        "status_per_job_minute": status / minutes,
        "all_per_job_minute": sum(sent.values()) / minutes,
    }


def count_exit_reads() -> list[str]:
    """A list that gets the folder of each exit-record read the Batch backend makes."""
    from confpipe.backends.gcp import batch

    reads: list[str] = []
    read_exit = batch.read_exit

    def counted(job_dir: str, host: int = 0) -> Exit | None:
        reads.append(job_dir)
        return read_exit(job_dir, host)

    batch.read_exit = counted
    return reads


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
    ok = True
    print(f"whole life: jobs of {JOB_INTERVALS * PRODUCTION_INTERVAL:g}s at poll_interval=10s")
    for concurrent in (1, 3):
        life = lifetime(concurrent, args.interval)
        passed = life["status_per_job_minute"] <= TARGET
        ok &= passed
        print(
            f"  {concurrent} job(s), {life['life_s']:.0f}s each: {life['requests']:.0f} requests "
            f"(CreateJob {life['create']:.0f}, status {life['status']:.0f}); per job per "
            f"minute: status {life['status_per_job_minute']:.2f} (target <= {TARGET:g}: "
            f"{'PASS' if passed else 'FAIL'}), all {life['all_per_job_minute']:.2f}; "
            f"storage reads of its exit record {life['exit_reads_per_job_minute']:.1f}; "
            f"its end noticed within {life['noticed_after_s']:.1f}s"
        )
    r = measure(jobs, args.interval, seconds)
    steady = r["per_job_minute_at_10s"] <= TARGET and r["backend_threads"] == 0
    ok &= steady
    print(
        f"steady state: {jobs} jobs in flight, poll_interval={args.interval:g}s, window "
        f"{r['elapsed']:.1f}s"
    )
    print(
        f"  requests: {r['requests']:.0f} "
        f"(ListJobs {r['list_jobs']:.0f}, GetJob {r['get_job']:.0f})"
    )
    print(f"  per job per minute at {args.interval:g}s: {r['per_job_minute']:.3f}")
    print(
        f"  per job per minute at {PRODUCTION_INTERVAL:g}s: {r['per_job_minute_at_10s']:.4f} "
        f"(target <= {TARGET:g}: {'PASS' if steady else 'FAIL'}; one GetJob per job per "
        f"interval: {r['baseline_per_job_minute_at_10s']:g})"
    )
    print(f"  threads started by the backend: {r['backend_threads']:.0f} (target 0)")
    print("PASS" if ok else "FAIL")
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
