"""The exceptions confpipe raises for user mistakes and failed runs.

ConfpipeError                 every error meant for a user; printed as one line
├── ConfigError               bad config or usage: nothing was run or written (exit 2)
├── StepFailed                one step failed; chains the original exception
│   ├── LeaseLost             the step's lease was taken over; it did not commit
│   └── PreviousFailure       force_run_failed=False and the step failed before
├── RunFailed                 the run ended with failed steps; lists them (exit 1)
└── Interrupted               Ctrl-C or SIGTERM: running steps were cancelled (exit 130 / 143)

``did_you_mean`` and ``closest`` suggest the right name in a message about a wrong one.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConfpipeError(Exception):
    """An error meant for a user: the message says what, where and how to fix it."""

    exit_code = 1


class ConfigError(ConfpipeError):
    """A mistake in the pipeline's definition, found before anything ran."""

    exit_code = 2


class StepFailed(ConfpipeError):
    """A step did not succeed; ``step`` names it and ``__cause__`` holds the original error."""

    def __init__(self, step: str, message: str, remote_traceback: str | None = None) -> None:
        super().__init__(f"step {step!r}: {message}")
        self.step = step
        self.message = message  # without the step's name, for where the step is named
        self.remote_traceback = remote_traceback  # the job's own traceback, for remote steps
        self.log_path: str | None = None  # the job's log, for remote steps


class LeaseLost(StepFailed):
    """Another launch took over the step's lease, so this launch must not commit it."""


class PreviousFailure(StepFailed):
    """The step failed in an earlier launch and ``force_run_failed`` is false."""


class RunFailed(ConfpipeError):
    """Some steps failed; ``failures`` maps each failed step to its error."""

    def __init__(self, failures: dict[str, BaseException], dep_failed: dict[str, str]) -> None:
        lines = [f"{len(failures)} step(s) failed"]
        lines += [f"  {name}: {one_line(err)}" for name, err in failures.items()]
        if dep_failed:
            lines.append(f"  not run because a dependency failed: {', '.join(sorted(dep_failed))}")
        super().__init__("\n".join(lines))
        self.failures = failures
        self.dep_failed = dep_failed


class Interrupted(ConfpipeError):
    """The run was interrupted (Ctrl-C, or SIGTERM through the CLI); running steps were
    cancelled and recorded as interrupted (not as failures: a re-run retries them)."""

    exit_code = 130


def one_line(err: BaseException) -> str:
    """``ValueError: boom``: the error's type and first line, where its step is named already
    (a step's failure is its own message: ``ZeroDivisionError: ...`` for a failed job)."""
    if isinstance(err, StepFailed):
        text = err.message.strip().splitlines()
        return text[0] if text else type(err).__name__
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'cpu'?)`` when a choice is close to ``word``, else ``""``."""
    close = closest(word, choices)
    return f" (did you mean {close!r}?)" if close is not None else ""


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``word``, if one is close enough to be a misspelling of it."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None
