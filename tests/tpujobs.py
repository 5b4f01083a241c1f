"""Step functions that the TPU tests run on the fake's hosts; importable by module name."""

from __future__ import annotations

import os
import time
from pathlib import Path

HOST_VAR = "CONFPIPE_TPU_HOST"


def which_host(output_path: str | None = None) -> dict[str, int]:
    """Say which host ran us (every host of a slice runs this; host 0's value is the result)."""
    host = int(os.environ[HOST_VAR])
    print(f"host {host} ran")
    return {"host": host, "pid": os.getpid()}


def wait_for_release(path: str, output_path: str | None = None) -> str:
    """``batchjobs.wait_for`` as a pipeline step (it takes the ``output_path`` confpipe gives)."""
    from tests.batchjobs import wait_for

    return wait_for(path)


def fail_on_host(host: int, message: str) -> str:
    """Fail on host ``host`` only, after a line in its log; the others return."""
    me = int(os.environ[HOST_VAR])
    if me == host:
        print(f"host {me}: about to fail")
        raise ValueError(message)
    return f"host {me} ok"


def wait_on_hosts(pid_dir: str, seconds: float = 120.0, output_path: str | None = None) -> str:
    """Record each host's pid in ``pid_dir/host-N``, then sleep (until killed)."""
    me = os.environ[HOST_VAR]
    tmp = Path(pid_dir, f"host-{me}.tmp")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, Path(pid_dir, f"host-{me}"))
    print(f"host {me} waiting")
    time.sleep(seconds)
    return "slept"
