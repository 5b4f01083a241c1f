"""``@remote(resources=...)`` marks a function to run as a job; ``as_job`` makes it one.

The decorator only marks: the function is returned unchanged (calling it still just calls
it, and it pickles and imports by its own name). The pipeline decides where a step runs:
the step's explicit resources win over the decorator's (``step_resources``), and a step
with resources is wrapped with ``as_job``, which submits each call to a backend and waits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

from confpipe import cancel, status
from confpipe.backends import Backend, run_job
from confpipe.spec import Resources

P = ParamSpec("P")
R = TypeVar("R")

MARK = "__confpipe_remote__"


def remote(*, resources: Resources) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a function to be submitted as a job with ``resources`` when run as a step."""
    if not isinstance(resources, Resources):
        raise TypeError(f"@remote(resources=...) takes a confpipe.Resources, got {resources!r}")

    def mark(fn: Callable[P, R]) -> Callable[P, R]:
        setattr(fn, MARK, resources)
        return fn

    return mark


def resources_of(fn: Callable[..., object]) -> Resources | None:
    """The resources ``@remote`` marked ``fn`` with, or None."""
    marked = getattr(fn, MARK, None)
    return marked if isinstance(marked, Resources) else None


def step_resources(explicit: Resources | None, fn: Callable[..., object]) -> Resources | None:
    """What a step runs with: its own ``resources`` if given, else the decorator's, else None."""
    return explicit if explicit is not None else resources_of(fn)


def as_job(
    fn: Callable[P, R],
    *,
    step: str,
    resources: Resources,
    backend: Backend,
    detach: bool = False,
) -> Callable[P, R]:
    """``fn`` with the same signature, each call run as a job on ``backend``.

    Call it as ``fn(output_path=..., **config)`` (keywords only): the job folder goes under
    ``status.jobs_dir(output_path)`` and the current cancel scope stops the job.
    """

    @functools.wraps(fn)
    def job(*args: P.args, **kwargs: P.kwargs) -> R:
        if args:
            raise TypeError(f"step {step!r}: a job is called with keyword arguments only")
        output_path = kwargs.get("output_path")
        if not isinstance(output_path, str):
            raise TypeError(f"step {step!r}: a job needs output_path=<str>, got {output_path!r}")
        value = run_job(
            backend,
            step,
            status.jobs_dir(output_path),
            fn,
            kwargs,
            resources,
            scope=cancel.current(),
            detach=detach,
        )
        return cast(R, value)

    setattr(job, MARK, resources)
    return job
