"""Pipelines the integration tests launch as real processes: ``python -m tests.pipelines``.

Usage: python -m tests.pipelines SCENARIO PREFIX WORKDIR [--lease SECONDS] [--job] [--strict]
  dag30   30 steps (fan-out and diamonds) that append their name to WORKDIR/calls.log
  slow    one step: stepfns.slow (touch WORKDIR/started, sleep WORKDIR/seconds)
PREFIX is a local folder or a URL (gs://bucket/path: STORAGE_EMULATOR_HOST says where);
WORKDIR is always local; --strict is force_run_failed=False. Prints the run's summary as
JSON; exits with the error's exit code (1 failed, 130 Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from confpipe import ConfpipeError, LockOptions, Resources, StepSpec, run
from confpipe.storage import split_protocol, store_for
from tests import stepfns


def record_url(output_path: str, log: str, name: str, sleep: float = 0.0) -> str:
    """``stepfns.record`` for outputs on any store: writes through the store's filesystem."""
    with open(log, "a") as f:
        f.write(f"{name} {os.getpid()}\n")
    time.sleep(sleep)
    store_for(output_path).fs.pipe_file(f"{output_path}/out.txt", name.encode())
    return name


def dag30(workdir: str, sleep: float, *, url_outputs: bool = False) -> list[StepSpec]:
    fn = record_url if url_outputs else stepfns.record
    steps: list[StepSpec] = []
    for i in range(30):
        parents = sorted({i // 2, (i - 1) // 3} - {i}) if i else []
        config = {"log": f"{workdir}/calls.log", "name": f"s{i:02d}", "sleep": sleep}
        steps.append(StepSpec(f"s{i:02d}", fn, config, deps=tuple(steps[p] for p in parents)))
    return steps


def slow(workdir: str, job: bool) -> list[StepSpec]:
    resources = Resources(cpu=1) if job else None
    return [StepSpec("slow", stepfns.slow, {"workdir": workdir}, resources=resources)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["dag30", "slow"])
    parser.add_argument("prefix")
    parser.add_argument("workdir")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--sleep", type=float, default=0.02)
    parser.add_argument("--job", action="store_true")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    url = split_protocol(args.prefix)[0] not in (None, "file")
    steps = (
        dag30(args.workdir, args.sleep, url_outputs=url)
        if args.scenario == "dag30"
        else slow(args.workdir, args.job)
    )
    options = LockOptions(heartbeat_interval=args.lease / 5, lease_timeout=args.lease)
    try:
        summary = run(
            steps, prefix=args.prefix, lock_options=options, max_concurrent=8,
            force_run_failed=not args.strict,
        )  # fmt: skip
    except ConfpipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(json.dumps({"ran": len(summary.ran), "cached": len(summary.cached), "pid": os.getpid()}))
    return 0


if __name__ == "__main__":
    # run the importable module's main, so step functions defined here are named
    # tests.pipelines.*, not __main__.* (a step's identity includes its function's path)
    from tests.pipelines import main as importable_main

    sys.exit(importable_main())
