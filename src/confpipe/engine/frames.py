"""The user's own frames in a traceback: where a failure is to be fixed, read from its text.

A step's failure is shown with the last frames of the user's code (``File steps.py:12 in
train`` and its source line), not confpipe's, Hydra's or the standard library's. The
traceback is parsed from its text (``traceback.format_exception``'s), so an exception
raised in this process and a job's traceback (recorded by the worker on another machine,
``StepFailed.remote_traceback``) are read the same way.
"""

from __future__ import annotations

import itertools
import os
import re
import traceback
from dataclasses import dataclass

__all__ = ["Frame", "exception_line", "format_frames", "trace_of", "user_frames"]

_FRAME = re.compile(r'^  File "(?P<path>.+)", line (?P<line>\d+), in (?P<function>.+)$')
_LIBRARIES = frozenset(
    {"hydra", "hydra_plugins", "omegaconf", "cloudpickle", "concurrent", "importlib",
     "site-packages", "dist-packages"}
)  # fmt: skip
# confpipe's own files, wherever it is (a source checkout is often a folder named confpipe:
# only confpipe/<one of these> is confpipe's code, not the user's experiments beside it)
_OWN = frozenset(os.listdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
_MODULES = frozenset({"threading.py", "runpy.py"})
_STDLIB = re.compile(r"/lib/python\d+(\.\d+)?/")  # the standard library (and what's installed)
_CARETS = re.compile(r"^\s*[~^]+\s*$")


@dataclass(frozen=True)
class Frame:
    """One frame of a traceback: where, in which function, and its source line ("" if the
    traceback had none)."""

    path: str
    line: int
    function: str
    source: str = ""

    @property
    def mine(self) -> bool:
        """Whether the frame is the user's: not in confpipe, Hydra, OmegaConf, cloudpickle,
        an installed package or the standard library."""
        if self.path.startswith("<"):  # <frozen importlib._bootstrap>, <string>
            return False
        path = self.path.replace("\\", "/")
        parts = path.split("/")
        if parts[-1] in _MODULES or _LIBRARIES.intersection(parts[:-1]):
            return False
        if any(a == "confpipe" and b in _OWN for a, b in itertools.pairwise(parts)):
            return False
        return not _STDLIB.search(path)


def trace_of(error: BaseException) -> str:
    """The traceback to read ``error`` by: a job's own (``remote_traceback``), else its own."""
    remote = getattr(error, "remote_traceback", None)
    if isinstance(remote, str) and remote.strip():
        return remote
    return "".join(traceback.format_exception(error))


def frames(trace: str) -> list[Frame]:
    """The frames of the exception a traceback ends with (the last of a chain), outermost
    first."""
    found: list[Frame] = []
    lines = trace.splitlines()
    for i, text in enumerate(lines):
        if text.startswith("Traceback (most recent call last)"):
            found = []  # a later exception of the chain: its frames are the ones that count
            continue
        match = _FRAME.match(text)
        if match is None:
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        source = ""
        if following.startswith("    ") and not _FRAME.match(following):
            source = "" if _CARETS.match(following) else following.strip()
        found.append(Frame(match["path"], int(match["line"]), match["function"], source))
    return found


def user_frames(trace: str, limit: int = 3) -> list[Frame]:
    """The last ``limit`` frames of the user's code in ``trace``, outermost first."""
    mine = [f for f in frames(trace) if f.mine]
    return mine[-limit:] if limit > 0 else []


def exception_line(trace: str) -> str:
    """The line that names the exception (``ValueError: boom``): the last line of the
    traceback that is not indented (the first of a multi-line message); "" if none."""
    lines = trace.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(("  ", "Traceback ")) or not lines[i].strip():
            return lines[i + 1] if i + 1 < len(lines) else ""
    return lines[0] if lines else ""


def shown_path(path: str) -> str:
    """``path`` relative to the working folder when it is below it, else as it is."""
    if os.path.isabs(path):
        here = os.getcwd()
        if path.startswith(here + os.sep):
            return os.path.relpath(path, here)
    return path


def format_frames(found: list[Frame], indent: str = "  ") -> list[str]:
    """``File steps.py:12 in train`` and, below it, the source line, per frame."""
    lines = []
    for frame in found:
        lines.append(f"{indent}File {shown_path(frame.path)}:{frame.line} in {frame.function}")
        if frame.source:
            lines.append(f"{indent}  {frame.source}")
    return lines
