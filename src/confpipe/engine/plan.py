"""The read-only plan: which steps are needed, each one's status, reason and where it runs.

Planning reads one status record per step (and one lease per step that is not done),
prunes every subtree whose root already succeeded, and writes nothing at all. A succeeded
step whose recorded code fingerprints differ from its code now gets a ``code_note`` (and a
warning when the plan runs); with ``rerun_on_code_change`` it runs again instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confpipe.backends import RECORDS
from confpipe.backends.resources import Resources
from confpipe.engine.cache import succeeded
from confpipe.engine.codechanges import CodeChanges
from confpipe.engine.lock import dead_local_holder, read_holder
from confpipe.engine.outcome import Outcome
from confpipe.engine.spec import StepSpec
from confpipe.engine.status import (
    Status,
    StepState,
    read_status_blobs,
    result_path,
    result_problem,
    unrecorded_path,
)
from confpipe.errors import ConfigError
from confpipe.storage import Blob, Store, split_protocol, store_for

log = logging.getLogger("confpipe")

THREAD = "thread"  # where a step without resources runs; a job's place is its backend's word


@dataclass(frozen=True)
class StepPlan:
    """One step's plan; ``state`` is CACHED, WILL_RUN, RUNNING (elsewhere), FAILED or BLOCKED."""

    spec: StepSpec
    label: str  # the name, or the identity where two planned steps share a name
    output: str
    state: Outcome
    reason: str
    where: str  # THREAD, or what the backend's check said (``local job``, ``batch``, ``tpu``)
    resources: Resources | None
    # "code changed since this output was made; bump `version` to re-run" (or of an upstream
    # step): a succeeded step whose function's code differs from the code that made it
    code_note: str | None = None
    # the step's status record as the plan read it, when ``status_read`` (None: no record, or
    # another hash's): what looks back at the records needn't read it again
    status: Status | None = None
    status_read: bool = False


def collect(steps: Iterable[StepSpec]) -> list[StepSpec]:
    """Every step and its transitive dependencies, deduplicated by identity, deps first.

    Walks the step objects without recursion and hashes them deepest first, so that each
    identity only needs its dependencies' (already computed) ones: chains of any length.
    """
    order: list[StepSpec] = []
    done: set[int] = set()
    stack: list[tuple[StepSpec, bool]] = [(s, False) for s in reversed(list(steps))]
    while stack:
        spec, expanded = stack.pop()
        if id(spec) in done:
            continue
        if expanded:
            done.add(id(spec))
            order.append(spec)
            continue
        stack.append((spec, True))
        stack.extend((dep, False) for dep in reversed(spec.direct()) if id(dep) not in done)
    unique: dict[str, StepSpec] = {}
    for spec in order:
        first = unique.setdefault(spec.identity, spec)
        if first.output_path != spec.output_path:  # one step can't be in two places
            raise ConfigError(
                f"step {spec.name!r}: the same step (hash {spec.hash}) is given two output "
                f"paths, {first.output_path!r} and {spec.output_path!r}; output_path is not "
                "part of a step's identity, so vary a config key (or version) instead"
            )
    return list(unique.values())


def needed(
    specs: Sequence[StepSpec], targets: Sequence[StepSpec], statuses: dict[str, Status | None],
    rerun_on_code_change: bool = False,
) -> list[StepSpec]:  # fmt: skip
    """Targets and the deps they still need, in ``specs`` order; a succeeded step's subtree is
    pruned (with ``rerun_on_code_change``, only if its code, and its upstream's, is unchanged)."""
    keep: set[str] = set()
    stack = list(targets)
    while stack:
        spec = stack.pop()
        if spec.identity in keep:
            continue
        keep.add(spec.identity)
        if not succeeded(spec, statuses[spec.identity], rerun_on_code_change):
            stack.extend(spec.dependencies)
    return [s for s in specs if s.identity in keep]


def needed_checked(
    specs: Sequence[StepSpec], targets: Sequence[StepSpec], statuses: dict[str, Status | None],
    outputs: dict[str, str], rerun_on_code_change: bool = False,
) -> list[StepSpec]:  # fmt: skip
    """``needed``, once the result record of each succeeded step that a step to run depends on
    is read and found whole: a damaged one makes that step's status unknown in ``statuses``
    (it runs again, and what it needs with it). One read per such step, and none when nothing
    is to run (a cached run stays at one read per step); a cached target's result is checked
    where it is read (``load_result``)."""
    checked: set[str] = set()
    while True:
        need = needed(specs, targets, statuses, rerun_on_code_change)
        planned = {s.identity for s in need}
        frontier = {
            dep.identity: dep
            for spec in need
            if not succeeded(spec, statuses[spec.identity], rerun_on_code_change)
            for dep in spec.dependencies
            if dep.identity in planned and dep.identity not in checked
            and succeeded(dep, statuses[dep.identity], rerun_on_code_change)
        }  # fmt: skip
        if not frontier:
            return need
        checked.update(frontier)
        damaged = damaged_results([outputs[key] for key in frontier])
        if not damaged:
            return need
        for key in frontier:
            if outputs[key] in damaged:
                statuses[key] = Status.unknown(damaged[outputs[key]])


def damaged_results(outputs: Sequence[str]) -> dict[str, str]:
    """The outputs whose result record is missing or does not parse: ``PATH (why)`` of each
    (read concurrently where the store can)."""
    damaged: dict[str, str] = {}
    by_store: dict[int, list[str]] = {}
    for out in outputs:
        by_store.setdefault(id(store_for(out)), []).append(out)
    for outs in by_store.values():
        paths = [result_path(out) for out in outs]
        for out, path, blob in zip(outs, paths, store_for(outs[0]).read_many(paths), strict=True):
            why = "missing" if blob is None else result_problem(blob.data)
            if why is not None:
                damaged[out] = f"{path} ({why})"
    return damaged


def read_all(
    specs: Sequence[StepSpec],
    outputs: dict[str, str],
    versions: dict[str, str | None] | None = None,
) -> dict[str, Status | None]:
    """One status read per step, batched per store. With ``versions``, the version of each
    record read is put there too (None: no record): a step's ``Records`` start from it, so
    a step about to run needn't read its status again (its first write is a compare-and-swap
    on this version, which fails if the record changed since)."""
    by_store: dict[int, tuple[list[StepSpec], list[str]]] = {}
    for spec in specs:
        out = outputs[spec.identity]
        group = by_store.setdefault(id(store_for(out)), ([], []))
        group[0].append(spec)
        group[1].append(out)
    result: dict[str, Status | None] = {}
    for group_specs, outs in by_store.values():
        read = read_status_blobs(store_for(outs[0]), outs)
        for spec, (status, version) in zip(group_specs, read, strict=True):
            result[spec.identity] = None if status is None else status.of(spec.hash)
            if versions is not None:
                versions[spec.identity] = version
    return result


def describe(
    specs: Sequence[StepSpec],
    outputs: dict[str, str],
    statuses: dict[str, Status | None],
    resources: dict[str, Resources | None],
    where: dict[str, str],
    prefix: str,
    force_run_failed: bool = True,
    lease_timeout: float | None = None,
    rerun_on_code_change: bool = False,
) -> list[StepPlan]:
    """The plan of each step: cached, or why it will run. Reads the lease of each RUNNING
    step, and, for a step never seen, the info record of an earlier output of the same step
    name (one listing of the prefix) to explain the cache miss. With ``force_run_failed``
    false, a step that failed earlier is FAILED (it stops the run), its dependents BLOCKED.
    A succeeded step made by other code has a ``code_note``; with ``rerun_on_code_change``
    it will run (the status of an upstream step not planned is read to name the change)."""
    labels = labels_of(specs)
    unseen = {s.name for s in specs if statuses[s.identity] is None}
    earlier = _Earlier(prefix, _earlier_outputs(prefix, unseen) if unseen else {})
    changes = CodeChanges(statuses, outputs, prefix)
    plans = []
    for spec in specs:
        out, status = outputs[spec.identity], statuses[spec.identity]
        state, reason = Outcome.WILL_RUN, "no previous output"
        note = None
        if status is not None and status.unreadable:
            reason = f"unreadable record {status.unreadable}: will re-run"
        elif status is not None and status.state is StepState.SUCCESS:
            change = changes.of(spec, status)
            if change is not None and rerun_on_code_change:
                reason = f"{change[0]} (rerun_on_code_change=true)"
                note = f"{change[0]} since this output was made; it runs again"
            elif change is not None:
                note = f"{change[0]} since this output was made; {change[1]}"
                state, reason = Outcome.CACHED, f"succeeded earlier; {note}"
            else:
                state, reason = Outcome.CACHED, "succeeded earlier"
        elif status is not None and status.is_failure() and not force_run_failed:
            state = Outcome.FAILED
            reason = f"failed earlier ({status.error}); force_run_failed=false stops the run"
        elif status is not None and status.interrupted:
            reason = f"retry: a run by {status.worker} was interrupted (Ctrl-C or SIGTERM)"
        elif status is not None and status.state is StepState.FAILED:
            reason = f"retry: failed earlier ({status.error})"
            reason += "; its files are kept" if status.returned else ""
        elif status is not None and status.state is StepState.DEP_FAILED:
            reason = f"retry: dependency {status.failed_dep} had failed"
        elif status is None:
            reason = _miss(spec, earlier) or reason
        if status is not None and status.state is StepState.RUNNING:
            holder = read_holder(store_for(out), out)
            if holder is not None and lease_timeout is not None and holder.age >= lease_timeout:
                reason = (
                    f"retry: held by {holder.owner}, but its heartbeat is {holder.age:.0f}s old "
                    f"(stale after lock.lease_timeout={lease_timeout:g}s): will take it over"
                )
            elif holder is not None and dead_local_holder(holder):
                reason = (
                    f"retry: its launch (pid {holder.record.get('pid')} on this machine) is "
                    "gone: will take it over"
                )
            elif holder is not None:
                state = Outcome.RUNNING
                reason = f"held by {holder.owner}, heartbeat {holder.age:.0f}s ago; will wait"
            else:
                reason = _interrupted(store_for(out), out, status)
        plan = StepPlan(
            spec, labels[spec.identity], out, state, reason, where[spec.identity],
            resources[spec.identity], note, status, True,
        )  # fmt: skip
        plans.append(plan)
    return plans if force_run_failed else _blocked(plans)


# an empty unrecorded.txt: not even the reason fitted (it takes an inode, not a block)
EMPTY_MARKER = "its records' disk was full"


def _interrupted(store: Store, out: str, status: Status) -> str:
    """Why a RUNNING step that no launch holds will run: its launch died, or could not
    record the failure (``unrecorded.txt`` says why; read only for such a step)."""
    try:
        blob = store.read(unrecorded_path(out))
    except Exception:  # the marker is a courtesy: without it, the step is interrupted
        blob = None
    if blob is None:
        return f"retry: a run by {status.worker} was interrupted"
    cause = blob.data.decode(errors="replace").strip() or EMPTY_MARKER
    return f"interrupted: could not record the failure ({cause})"


def warn_code_changes(plans: Sequence[StepPlan]) -> None:
    """One warning per cached step whose code changed since it ran: a run's, not a dry run's
    (its plan table shows the note)."""
    for plan in plans:
        if plan.code_note is not None and plan.state is Outcome.CACHED:
            log.warning("step %s: %s", plan.label, plan.code_note)


def _blocked(plans: list[StepPlan]) -> list[StepPlan]:
    """Each plan that depends, at any depth, on a FAILED one made BLOCKED, naming it."""
    by_id = {p.spec.identity: p for p in plans}
    cause: dict[str, str | None] = {}

    def blocker(plan: StepPlan) -> str | None:  # the FAILED step under ``plan``, if any
        key = plan.spec.identity
        if key not in cause:
            cause[key] = plan.label if plan.state is Outcome.FAILED else None
            for dep in plan.spec.dependencies:
                if cause[key] is None and dep.identity in by_id:
                    cause[key] = blocker(by_id[dep.identity])
        return cause[key]

    for plan in sorted(plans, key=lambda p: len(p.spec.dependencies)):
        blocker(plan)  # shallow ones first keeps the recursion short
    return [
        p
        if p.state in (Outcome.FAILED, Outcome.CACHED) or cause[p.spec.identity] is None
        else dataclasses.replace(
            p, state=Outcome.BLOCKED, reason=f"blocked by {cause[p.spec.identity]}"
        )
        for p in plans
    ]


def labels_of(specs: Sequence[StepSpec]) -> dict[str, str]:
    """Step names for messages; the identity where two steps share a name."""
    counts: dict[str, int] = {}
    for spec in specs:
        counts[spec.name] = counts.get(spec.name, 0) + 1
    return {s.identity: s.name if counts[s.name] == 1 else s.identity for s in specs}


def _earlier_outputs(prefix: str, names: set[str]) -> dict[str, list[str]]:
    """Existing output folders under ``prefix`` by step name (one listing of the prefix)."""
    try:
        entries = store_for(prefix).fs.ls(prefix, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found: dict[str, list[str]] = {}
    for entry in entries:
        name, _, _ = str(entry).rstrip("/").rsplit("/", 1)[-1].rpartition("-")
        if name in names:
            found.setdefault(name, []).append(str(entry).rstrip("/"))
    return found


MISS_CANDIDATES = 64  # earlier outputs of a step a cache miss is compared with (the newest)


class _Earlier:
    """The info records of earlier outputs, by step name: each read once per launch (all of
    a name's at once, concurrently where the store can), the newest first."""

    def __init__(self, prefix: str, folders: dict[str, list[str]]) -> None:
        self.store, self.folders = store_for(prefix), folders
        self.protocol, _ = split_protocol(prefix)
        self.infos: dict[str, list[dict[str, Any]]] = {}

    def of(self, name: str) -> list[dict[str, Any]]:
        if name not in self.infos:
            urls = [
                f if self.protocol is None or "://" in f else f"{self.protocol}://{f}"
                for f in self.folders.get(name, [])
            ]
            blobs = self.store.read_many(f"{u}/{RECORDS}/info.json" for u in urls)
            infos = [i for i in map(_parse_info, blobs) if i and "hash_inputs" in i]
            infos.sort(key=lambda i: i.get("time", 0), reverse=True)
            self.infos[name] = infos[:MISS_CANDIDATES]
        return self.infos[name]


def _miss(spec: StepSpec, earlier: _Earlier) -> str | None:
    """``changed: vocab_size: 1024 -> 2048`` against the closest earlier output of the step
    (fewest changes; the newest of equals), among its newest MISS_CANDIDATES."""
    best: list[str] | None = None
    for info in earlier.of(spec.name):
        changes = diff(info["hash_inputs"], spec.hash_inputs)
        if changes and (best is None or len(changes) < len(best)):
            best = changes
    return "changed: " + ", ".join(best) if best else None


def _parse_info(blob: Blob | None) -> dict[str, Any] | None:
    try:
        return None if blob is None else dict(json.loads(blob.data))
    except ValueError:
        return None


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed between two hash-input records: ``key: old -> new`` for config keys, fn
    and version, and ``upstream NAME: oldhash -> newhash`` for a dependency that changed."""
    before, after = _flatten(old.get("config", {})), _flatten(new.get("config", {}))
    for key in ("fn", "version"):
        before[f"({key})"], after[f"({key})"] = old.get(key), new.get(key)
    missing = "(unset)"
    changes = [
        f"{key}: {_short(before.get(key, missing))} -> {_short(after.get(key, missing))}"
        for key in sorted(before.keys() | after.keys())
        if _json(before.get(key, missing)) != _json(after.get(key, missing))  # 1 != 1.0
    ]
    old_deps, new_deps = _by_name(old.get("deps", [])), _by_name(new.get("deps", []))
    for name in sorted(old_deps.keys() | new_deps.keys()):
        was, now = old_deps.get(name, "(none)"), new_deps.get(name, "(none)")
        if was != now:
            changes.append(f"upstream {name}: {was} -> {now}")
    return changes


def _json(value: Any) -> str:
    """``value`` as the hash sees it: ``1`` and ``1.0`` (or ``true``) differ there."""
    return json.dumps(value, sort_keys=True)


def _by_name(identities: list[str]) -> dict[str, str]:
    """``{"tok": "abc123"}`` for ``["tok-abc123"]``."""
    return dict(identity.rsplit("-", 1) for identity in identities if "-" in identity)


def _flatten(value: Any, key: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and "$step" in value:  # a reference: by name (upstream below)
        return {key: "${step:" + value["$step"].rsplit("-", 1)[0] + "}" + value.get("suffix", "")}
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{key}.{k}" if key else k))
        return out
    return {key: value}


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
