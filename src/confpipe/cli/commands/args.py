"""A command's own words peeled off the command line before Hydra parses the rest.

``python -m confpipe logs +experiment=train train --follow`` is the ``logs`` command with
the step ``train`` and ``--follow``; ``+experiment=train`` (and ``-m``, ``--config-dir``,
any override) is left for Hydra, which composes the config the command answers for.
A bare word is never a Hydra override (those have ``=``, or start with ``+``, ``~``, ``-``),
so the first one names the command and the others its steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confpipe.errors import ConfigError, did_you_mean

__all__ = ["COMMANDS", "Request", "split"]

COMMANDS = ("status", "show", "logs", "report", "gc")

# Hydra's flags that take the next word as their value (``--config-dir confs``)
_HYDRA_VALUED = {
    "--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn",
    "--package", "-p", "--cfg", "-c", "--experimental-rerun",
}  # fmt: skip
_INFO = {"--info", "-i"}  # its value is optional: one of these words
_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}

_SWITCHES = {"--follow": "follow", "-f": "follow", "--yes": "yes", "-y": "yes", "--json": "json"}
_NUMBERS = {"--keep": "keep", "--keep-days": "keep_days", "--lease-timeout": "lease_timeout"}
_FLAG_OF = {  # which command takes which flag
    "follow": ("logs",), "yes": ("gc",), "json": ("status", "show"),
    "keep": ("gc",), "keep_days": ("gc",), "lease_timeout": ("gc",),
}  # fmt: skip

USAGE = """\
Commands (they take a run's overrides and write nothing, except gc --yes and report):
  confpipe status +experiment=NAME [KEY=VALUE ...] [STEP ...] [--json]
      one row per step: state, when it ran, how long, where, output
  confpipe show +experiment=NAME STEP [...] [--json]
      a step's config, deps, resources, result, status record, error and why it (re)runs
  confpipe logs +experiment=NAME STEP [--follow]
      the step's log; --follow prints new lines until the step ends (exit 1 if it failed)
  confpipe report +experiment=NAME [report_html=PATH]
      one self-contained HTML page of the run (default ./confpipe-report-NAME.html)
  confpipe gc PREFIX [--keep N] [--keep-days D] [--lease-timeout S] [--yes]
      what could be deleted under PREFIX, with sizes; deletes it only with --yes
Each of status, show, logs and report also takes -m and a sweep's overrides."""


@dataclass(frozen=True)
class Request:
    """A command and its words: STEP names (gc: the prefix) and its flags."""

    command: str
    steps: tuple[str, ...] = ()
    follow: bool = False
    yes: bool = False
    json: bool = False
    keep: int | None = None
    keep_days: float | None = None
    lease_timeout: float | None = None
    help: bool = False


def split(args: Sequence[str]) -> tuple[Request | None, list[str]]:
    """The command request (None: a run) and the arguments left for Hydra.

    Raises ConfigError for a bare word that is no command, a flag of another command, or
    a command given the wrong number of steps."""
    command: str | None = None
    words: list[str] = []
    flags: dict[str, object] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        valued = arg in _INFO and i + 1 < len(args) and args[i + 1] in _INFO_VALUES
        if arg in _HYDRA_VALUED or valued:
            rest += args[i : i + 2]
            i += 2
            continue
        if arg in _SWITCHES:
            flags[_SWITCHES[arg]] = True
        elif name in _NUMBERS:
            if not eq:
                if i + 1 >= len(args):
                    raise ConfigError(f"{name}: give a number, e.g. {name} 10")
                i += 1
                value = args[i]
            flags[_NUMBERS[name]] = _number(name, value)
        elif arg in ("--help", "-h") and command is not None:
            flags["help"] = True
        elif _bare(arg) and command is None and not words:
            if arg not in COMMANDS:
                hint = did_you_mean(arg, COMMANDS)
                raise ConfigError(
                    f"{arg!r} is no command and no override (KEY=VALUE){hint}; "
                    f"commands: {', '.join(COMMANDS)}; a run takes overrides only"
                )
            command = arg
        elif _bare(arg):
            words.append(arg)
        else:
            rest.append(arg)
        i += 1
    if command is None:
        if flags:
            given = ", ".join(f"--{k.replace('_', '-')}" for k in flags)
            raise ConfigError(
                f"{given}: a flag of a command (status, show, logs, gc), not of a run"
            )
        return None, rest
    request = Request(command, tuple(words), **flags)  # type: ignore[arg-type]
    _check(request, rest)
    return request, rest


def _bare(arg: str) -> bool:
    """A word that is no Hydra override nor flag: a command, a STEP name or gc's prefix."""
    return "=" not in arg and not arg.startswith(("+", "~", "-"))


def _number(flag: str, text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if number < 0 or (flag == "--keep" and not number.is_integer()):
        kind = "a whole number" if flag == "--keep" else "a number of"
        unit = "" if flag == "--keep" else (" days" if flag == "--keep-days" else " seconds")
        raise ConfigError(f"{flag}: {text!r} is not {kind}{unit} (0 or more)")
    return int(number) if flag == "--keep" else number


def _check(request: Request, rest: Sequence[str]) -> None:
    """The command's flags are its own and it has the steps it needs."""
    command, steps = request.command, request.steps
    for flag, takers in _FLAG_OF.items():
        if getattr(request, flag) not in (None, False) and command not in takers:
            spelled = "--" + flag.replace("_", "-")
            raise ConfigError(f"{spelled}: `{command}` doesn't take it; {' and '.join(takers)} do")
    if request.help:
        return
    if command == "gc":
        if len(steps) != 1 or rest:
            extra = f" (got {' '.join([*steps, *rest]) or 'nothing'})"
            raise ConfigError(
                f"gc: give one PREFIX, the folder of the outputs (a path or URL){extra}: "
                "confpipe gc outputs [--keep N] [--keep-days D] [--yes]"
            )
    elif command == "logs" and len(steps) != 1:
        got = f"got {', '.join(steps)}" if steps else "no STEP given"
        raise ConfigError(
            f"logs: name one step, e.g. confpipe logs +experiment=NAME STEP ({got}); "
            "confpipe status +experiment=NAME lists them"
        )
    elif command == "show" and not steps:
        raise ConfigError(
            "show: name a step, e.g. confpipe show +experiment=NAME STEP; "
            "confpipe status +experiment=NAME lists them"
        )
    elif command == "report" and steps:
        raise ConfigError(
            f"report: it shows every step, it takes no STEP (got {', '.join(steps)}); "
            "write it elsewhere with report_html=PATH"
        )
