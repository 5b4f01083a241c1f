"""``run_only``: the steps its exact names and shell globs (``train_*``) pick.

A pattern is matched against the whole step name with ``fnmatch`` rules (``*``, ``?``,
``[abc]``), case-sensitively: ``tokenize`` is that step only, not ``train_tokenizer`` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from confpipe.engine.spec import StepSpec

__all__ = ["select"]


def select(
    specs: Sequence[StepSpec], given: Sequence[StepSpec], run_only: Sequence[str] | None
) -> tuple[list[StepSpec], list[str]]:
    """The targets: steps whose names ``run_only``'s patterns match (the ``given`` ones if
    None), and the patterns that matched nothing."""
    if not run_only:
        return list(given), []
    names = {s.name for s in specs}
    matched = {pattern: {n for n in names if fnmatchcase(n, pattern)} for pattern in run_only}
    picked = set().union(*matched.values())
    targets = [s for s in specs if s.name in picked]
    return targets, [pattern for pattern, found in matched.items() if not found]
