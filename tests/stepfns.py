"""Step functions the tests run, importable by job subprocesses as ``tests.stepfns``."""

from __future__ import annotations

import os
import time
from pathlib import Path


def noop(output_path: str, **_: object) -> None:
    return None


def add(output_path: str, a: int, b: int) -> int:
    return a + b


def record(output_path: str, log: str, name: str, sleep: float = 0.0, **_: object) -> str:
    """Append ``name pid start-time`` to the shared ``log`` file (a line per call), sleep,
    and write an output."""
    with open(log, "a") as f:  # O_APPEND: lines from concurrent processes never interleave
        f.write(f"{name} {os.getpid()} {time.time():.3f}\n")
    time.sleep(sleep)
    Path(output_path, "out.txt").write_text(name)
    return name


def fail(output_path: str, **_: object) -> None:
    raise ValueError("this step is broken on purpose")


def fail_once(output_path: str, flag: str) -> str:
    """Fail while the file ``flag`` exists."""
    if os.path.exists(flag):
        raise RuntimeError("flag file present")
    return "fixed"


def slow(output_path: str, workdir: str) -> int:
    """Touch WORKDIR/started, sleep for the seconds in WORKDIR/seconds, return this pid.

    The duration is read at run time, so tests can change it without changing the identity.
    """
    Path(workdir, "started").write_text(str(os.getpid()))
    time.sleep(float(Path(workdir, "seconds").read_text()))
    return os.getpid()


def not_json(output_path: str) -> object:
    return {1, 2}


def scored(output_path: str, x: float, up: str | None = None) -> dict[str, float]:
    """A sweep point's metrics: ``loss`` is smallest at x = 2."""
    return {"loss": (x - 2.0) ** 2, "x": x}


def block(output_path: str, path: str, fail: bool = False) -> None:
    """Make ``path`` a file, so no folder can be made there (a storage failure to come)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("in the way\n")
    if fail:
        raise ValueError("blocked, then failed")
