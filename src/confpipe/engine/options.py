"""RunOptions: how one run goes, given whole to ``run_steps`` (the config's run options).

Built once: by ``confpipe.config.compiler.run_options`` from a composed config, or by
``run()`` from its keyword arguments. The defaults are ``run()``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confpipe.backends import Backend
from confpipe.engine.lock import LockOptions

__all__ = ["RunOptions"]


@dataclass(frozen=True)
class RunOptions:
    """Where outputs go, what runs, how many at once, the leases and where jobs run."""

    prefix: str = "outputs"  # a local folder or an fsspec URL
    dry_run: bool = False  # report the plan; write nothing
    run_only: tuple[str, ...] | None = None  # step name patterns: those and their deps
    force_run_failed: bool = True  # False: a step that failed earlier stops the run
    max_concurrent: int = 32  # steps in flight
    detach: bool = False  # on Ctrl-C, leave submitted jobs running
    lock_options: LockOptions = field(default_factory=LockOptions)
    backend: Backend | None = None  # None: run() makes a LocalBackend if a step needs one
