"""RunOptions: how one run goes, given whole to ``run_steps`` (the config's run options).

Built once: by ``confpipe.config.compiler.run_options`` from a composed config, or by
``run()`` from its keyword arguments. The defaults are ``run()``'s. Every value is checked
here, once, in the config's words (``max_concurrent: must be at least 1, got 0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confpipe.backends import Backend
from confpipe.engine.lock import LockOptions
from confpipe.errors import ConfigError

__all__ = ["LOG_LEVELS", "RunOptions"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class RunOptions:
    """Where outputs go, what runs, how many at once, the leases and where jobs run."""

    prefix: str = "outputs"  # a local folder or an fsspec URL
    dry_run: bool = False  # report the plan; write nothing
    run_only: tuple[str, ...] | None = None  # step names or shell globs: those and their deps
    force_run_failed: bool = True  # False: a step that failed earlier stops the run
    max_concurrent: int = 32  # steps in flight
    detach: bool = False  # on Ctrl-C, leave submitted jobs running
    lock_options: LockOptions = field(default_factory=LockOptions)
    backend: Backend | None = None  # None: run() makes a LocalBackend if a step needs one
    log_level: str = "INFO"  # what a step's logging records go to its log.txt from
    rerun_on_code_change: bool = False  # a step whose code changed re-runs (and its dependents)

    def __post_init__(self) -> None:
        if not self.prefix.strip():
            raise ConfigError("prefix: must not be empty; use a local folder or an fsspec URL")
        for i, pattern in enumerate(self.run_only or ()):
            if not isinstance(pattern, str) or not pattern.strip():
                raise ConfigError(
                    f"run_only[{i}]: {pattern!r} is not a step name or shell glob; "
                    "e.g. run_only=[train_tokenizer] or run_only=[train_*]"
                )
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"log_level: {self.log_level!r} is not a level; use one of {', '.join(LOG_LEVELS)}"
            )
        if self.max_concurrent < 1:
            raise ConfigError(f"max_concurrent: must be at least 1, got {self.max_concurrent}")
