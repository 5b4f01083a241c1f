"""Step functions only the Batch and TPU tests run as jobs on the fakes (the common ones are
``tests.jobfns``); importable by module name."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path


def env_digests(names: list[str]) -> dict[str, str]:
    """Digests of the variables' values, so no test passes or prints a value itself."""
    return {n: hashlib.sha256(os.environ[n].encode()).hexdigest() for n in names}


def count_runs(folder: str, seconds: float = 0.0) -> int:
    """Append a line per run to ``folder/runs`` (sleeping first), return how many ran."""
    time.sleep(seconds)
    runs = Path(folder, "runs")
    with runs.open("a") as f:
        f.write("run\n")
    return len(runs.read_text().splitlines())


def wait_for(path: str, timeout: float = 60.0) -> str:
    """Wait until ``path`` exists (the test lets the job finish by creating it)."""
    print(f"waiting for {Path(path).name}")
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return "released"


def count_then_fail(folder: str) -> None:
    runs = Path(folder, "runs")
    with runs.open("a") as f:
        f.write("run\n")
    raise RuntimeError("a bug: retrying won't help")
