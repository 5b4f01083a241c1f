"""Which code changed since a succeeded step's records were written: its own, or an upstream
step's (by the fingerprints ``engine.fingerprint`` makes and the status records keep).

A warning for the plan, ``status`` and a run, not a cache miss, unless
``rerun_on_code_change`` makes a different lineage "not done" (``cache.succeeded``).
"""

from __future__ import annotations

from confpipe.engine.spec import StepSpec
from confpipe.engine.status import Status, StepState, read_status
from confpipe.storage import local_path, store_for

__all__ = ["CodeChanges", "code_changed"]


def code_changed(spec: StepSpec, status: Status) -> bool:
    """The record was written by other code than the step's (or its upstream steps') now;
    False for a record without fingerprints (written before confpipe kept them)."""
    return status.lineage is not None and status.lineage != spec.lineage


class CodeChanges:
    """Whether a succeeded step's records were made by other code, and whose: its own, or an
    upstream step's (named if its record shows it). An upstream step's status is the plan's,
    or read once when the plan pruned that step."""

    def __init__(
        self, statuses: dict[str, Status | None], outputs: dict[str, str], prefix: str
    ) -> None:
        self.statuses, self.outputs, self.prefix = dict(statuses), outputs, prefix
        self.culprits: dict[str, str | None] = {}  # identity -> the upstream step changed

    def of(self, spec: StepSpec, status: Status) -> tuple[str, str] | None:
        """What changed (``code changed``, ``code of upstream step NAME changed``) and what to
        do about it; None if nothing did (or the record is older than fingerprints)."""
        if status.code is not None and status.code != spec.code:
            return "code changed", "bump `version` to re-run"
        if not code_changed(spec, status):
            return None
        name = self._culprit(spec)
        if name is None:
            return "code of an upstream step changed", (
                "bump that step's `version` to re-run it and the steps after it"
            )
        return f"code of upstream step {name} changed", (
            f"bump the `version` of {name} to re-run it and the steps after it"
        )

    def _status(self, spec: StepSpec) -> Status | None:
        if spec.identity not in self.statuses:  # pruned from the plan: read it here, once
            out = self.outputs.get(spec.identity) or local_path(spec.output_under(self.prefix))
            status = read_status(store_for(out), out)
            self.statuses[spec.identity] = None if status is None else status.of(spec.hash)
        return self.statuses[spec.identity]

    def _culprit(self, root: StepSpec) -> str | None:
        """The name of an upstream step whose code differs from the code its record names,
        found through the upstream steps whose lineage changed (without recursion)."""
        stack = [root]
        while stack:
            spec = stack[-1]
            if spec.identity in self.culprits:
                stack.pop()
                continue
            name, changed = None, []
            for dep in spec.dependencies:
                status = self._status(dep)
                if status is None or status.code is None or status.state is not StepState.SUCCESS:
                    continue
                if status.code != dep.code:
                    name = dep.name
                    break
                if code_changed(dep, status):
                    changed.append(dep)
            if name is None:
                later = [d for d in changed if d.identity not in self.culprits]
                if later:
                    stack.extend(later)
                    continue
                found = (self.culprits[d.identity] for d in changed)
                name = next((n for n in found if n is not None), None)
            self.culprits[spec.identity] = name
            stack.pop()
        return self.culprits[root.identity]
