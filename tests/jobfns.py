"""Step functions that backend tests run as jobs; importable by the worker by module name."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from confpipe.backends.resources import Resources
from confpipe.engine.remote import remote


def noop(output_path: str | None = None) -> None:
    return None


def add(a: int, b: int, output_path: str | None = None) -> dict[str, object]:
    print(f"adding {a} and {b}")
    return {"sum": a + b, "pid": os.getpid(), "output_path": output_path}


def boom(message: str) -> None:
    print("about to fail: line printed by the job")
    raise ValueError(message)


def returns_set() -> set[int]:
    return {1, 2}


def env_digest(name: str) -> str:
    """A digest of the variable's value, so the test never passes the value in."""
    return hashlib.sha256(os.environ[name].encode()).hexdigest()


_STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"


def sleeper(
    pid_file: str,
    marker: str | None = None,
    child: bool = False,
    stubborn: bool = False,
    output_path: str | None = None,
) -> None:
    """Record our pid (and a grandchild's, one ignoring SIGTERM if ``stubborn``), then sleep
    until killed."""
    if marker is not None:
        Path(marker).touch()
    pids = [os.getpid()]
    if child:
        code = _STUBBORN if stubborn else "import time; time.sleep(120)"
        pids.append(subprocess.Popen([sys.executable, "-c", code]).pid)
    Path(pid_file + ".tmp").write_text(" ".join(map(str, pids)))
    os.replace(pid_file + ".tmp", pid_file)
    time.sleep(120)


def record_span(folder: str, name: str, seconds: float) -> str:
    """Write start and end times to ``folder/name``."""
    start = time.time()
    time.sleep(seconds)
    Path(folder, name).write_text(f"{start} {time.time()}")
    return name


def meet(folder: str, name: str, count: int) -> str:
    """Announce ourselves, then wait (up to 60 s) until ``count`` jobs have: proves overlap."""
    Path(folder, name).touch()
    deadline = time.monotonic() + 60
    while len(list(Path(folder).iterdir())) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(Path(folder).iterdir()))} of {count} jobs met")
        time.sleep(0.01)
    return name


def hold(pid_file: str, release: str | None = None, output_path: str | None = None) -> int:
    """Record our pid, then wait until ``release`` exists (None: until stopped, at most
    120 s); our pid, so a test can tell which process finished."""
    Path(pid_file + ".tmp").write_text(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)
    deadline = time.monotonic() + 120
    while release is None or not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} never appeared")
        time.sleep(0.01)
    return os.getpid()


def exit_hard(code: int) -> None:
    """Leave without a record, as a crash (OOM kill, segfault) would."""
    print(f"exiting with {code}")
    os._exit(code)


def kill_self() -> None:
    print("about to be killed")
    os.kill(os.getpid(), signal.SIGKILL)


@remote(resources=Resources(cpu=2, memory=2**30))
def marked(x: int, output_path: str | None = None) -> int:
    return x * 2


def noisy(lines: int, fail: bool = False, output_path: str | None = None) -> int:
    """Print ``lines`` numbered lines to the job's log, then fail if asked."""
    for n in range(lines):
        print(f"line {n}")
    if fail:
        raise RuntimeError("noisy failed on purpose")
    return lines
