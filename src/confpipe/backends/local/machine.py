"""What a local job gets from this machine: its environment, and the machine's CPUs and memory
(the default budget).

A job inherits the driver's environment and ``sys.path``; its thread pools are capped at
the CPUs it reserved and, with GPUs, it sees only the devices it holds.
"""

from __future__ import annotations

import os
import signal
import sys

from confpipe.backends import DRIVER_VAR
from confpipe.backends.resources import Resources


def job_env(resources: Resources, devices: tuple[str, ...] = ()) -> dict[str, str]:
    """This process's environment, its ``sys.path`` (so user modules import) and ``env``.

    Thread pools (OpenMP, BLAS, Rayon as in HF tokenizers) are capped at the job's CPUs
    unless the user set them, so a job stays within the budget it reserved. A GPU job sees
    the ``devices`` it holds, and only those, as its ``CUDA_VISIBLE_DEVICES``.
    """
    paths = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    pythonpath = os.pathsep.join(dict.fromkeys(p for p in paths if os.path.exists(p)))
    threads = str(max(1, int(resources.cpu)))
    caps = {name: threads for name in _THREAD_VARS if name not in os.environ}
    return {
        **os.environ,
        **caps,
        "PYTHONPATH": pythonpath,
        "PYTHONUNBUFFERED": "1",
        DRIVER_VAR: str(os.getpid()),
        **resources.env,
        **({"CUDA_VISIBLE_DEVICES": ",".join(devices)} if devices else {}),
    }


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def machine_cpus() -> float:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return float(len(os.sched_getaffinity(0)))
    return float(os.cpu_count() or 1)


def machine_memory() -> int:
    """Physical memory in bytes."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
