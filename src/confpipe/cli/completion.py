"""Shell completion (bash) for ``python -m confpipe`` and the ``confpipe`` command.

Hydra's own (``-sc install=bash``) completes ``python script.py`` and installed apps only:
for ``python -m confpipe`` its script looks for a file named ``-m``, and its query reads
``-m confpipe`` as overrides. So confpipe answers ``-sc install=bash`` with a script of its
own, which asks ``python -m confpipe -sc query=bash`` (or ``confpipe -sc query=bash``) for
the choices; and before Hydra answers a query, ``query_args`` rewrites the line being
completed as Hydra reads it: the program's name alone, no command word (``status``...), and
``--config-dir``/``-cd`` taken out of the line and given to Hydra itself, so the user's
experiments are offered too. ``uninstall`` and other shells are Hydra's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

__all__ = ["BASH_SCRIPT", "query_args", "wants_install"]

BASH_SCRIPT = r"""_confpipe_completion()
{
    local words=($COMP_LINE) helper
    if [ "${words[1]}" == "-m" ] && [ "${words[2]}" == "confpipe" ]; then
        helper="${words[0]} -m confpipe"
    elif [ "$(basename -- "${words[0]}")" == "confpipe" ]; then
        helper="${words[0]}"
    else
        return  # another program: the default completion (files)
    fi
    local choices
    choices=$(COMP_POINT=$COMP_POINT COMP_LINE=$COMP_LINE $helper -sc query=bash 2>/dev/null)
    COMPREPLY=($(compgen -o nospace -o default -W "$choices" -- "${COMP_WORDS[COMP_CWORD]}"))
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
complete -o nospace -o default -F _confpipe_completion python python3 confpipe"""

_SC = ("-sc", "--shell-completion")
# the start of a line being completed: python -m confpipe, or the confpipe command
_PROGRAM = re.compile(r"^\s*(?:\S*python[\d.]*\s+-m\s+confpipe|\S*confpipe)(?=\s|$)\s*")
_CONFIG_OPTIONS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")


def wants_install(args: Sequence[str]) -> bool:
    """True for ``-sc install=bash``: confpipe's script, not Hydra's."""
    return any(
        arg in _SC and i + 1 < len(args) and args[i + 1] == "install=bash"
        for i, arg in enumerate(args)
    )


def query_args(args: list[str], commands: Sequence[str]) -> list[str]:
    """For ``-sc query=bash``: Hydra's arguments, with the config folders named in the line
    being completed (``COMP_LINE``, rewritten in the environment as Hydra reads it: the
    program's name, then the overrides). Other arguments are returned as they are."""
    if not any(a in _SC for a in args) or "COMP_LINE" not in os.environ:
        return args
    line = os.environ["COMP_LINE"]
    match = _PROGRAM.match(line)
    if match is None:
        return args
    *done, typing = line[match.end() :].split(" ")  # typing: the word being completed
    done = [word for word in done if word]
    if done and done[0] in commands:  # status, show...: not an override
        done = done[1:]
    given: list[str] = []  # the config folder (and name) options, for Hydra itself
    kept: list[str] = []
    words = iter(done)
    for word in words:
        name, eq, value = word.partition("=")
        if name in _CONFIG_OPTIONS and eq:
            given += [name, value]
        elif word in _CONFIG_OPTIONS:
            given += [word, next(words, "")]
        else:
            kept.append(word)
    os.environ["COMP_LINE"] = " ".join(["confpipe", *kept, typing])
    return [*given, *args]
