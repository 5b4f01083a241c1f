"""Step functions that the local backend's limit tests run as jobs (memory, children, GPUs);
importable by the worker by module name."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

MiB = 2**20


def hog(megabytes: int, seconds: float) -> int:
    """Hold ``megabytes`` of touched memory for ``seconds``; how many bytes it held."""
    data = bytearray(megabytes * MiB)
    for page in range(0, len(data), 4096):  # every page resident, whatever the allocator did
        data[page] = 1
    time.sleep(seconds)
    return len(data)


def hog_in_child(megabytes: int) -> int:
    """Have a child process hold ``megabytes`` (see ``hog``) for 30 s; its exit code."""
    code = f"from tests.localjobs import hog; hog({megabytes}, 30)"
    return subprocess.run([sys.executable, "-c", code], check=False).returncode


def spawn(pid_file: str, own_session: bool, linger: float) -> str:
    """Start a child that sleeps 120 s (in a session of its own if ``own_session``), write
    both pids to ``pid_file``, wait ``linger`` seconds and return without waiting for it."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=own_session
    )
    _write(pid_file, f"{os.getpid()} {child.pid}")
    time.sleep(linger)
    return "done"


def gpu_sleeper(devices_file: str) -> None:
    """Write the CUDA_VISIBLE_DEVICES this job sees, then sleep until killed."""
    _write(devices_file, os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    time.sleep(120)


def visible_devices(output_path: str | None = None) -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")


def _write(path: str, text: str) -> None:
    Path(path + ".tmp").write_text(text)
    os.replace(path + ".tmp", path)
