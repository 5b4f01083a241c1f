"""``confpipe show STEP``: everything known of a step, in sections a person reads top down.

Its state and place (output, fn, hash, where, log), what the plan says of it (why it would
run: the cache-miss explanation; a code change), its config (references as
``${step:NAME}``), deps, resources, result, status record and, for a failed step, the end
of its traceback. ``--json`` gives the same as one JSON object per step.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from confpipe.cli.commands import words
from confpipe.cli.commands.args import Request
from confpipe.cli.commands.target import Target
from confpipe.cli.history import StepHistory, config_of, gather
from confpipe.engine.status import log_path
from confpipe.redact import public_resources

__all__ = ["ERROR_LINES", "config_of", "details", "run"]


ERROR_LINES = 40  # of a failed step's traceback (error.txt has all of it)


def run(target: Target, request: Request) -> int:
    histories = gather(target.pick(request.steps), results=True)
    outputs = {p.spec.identity: p.output for p in target.plans}
    shown = [details(h, outputs) for h in histories]
    if request.json:
        print(json.dumps(shown if len(shown) > 1 else shown[0], indent=1, default=str))
        return 0
    print("\n\n".join(_text(h, d) for h, d in zip(histories, shown, strict=True)))
    return 0


def details(history: StepHistory, outputs: Mapping[str, str]) -> dict[str, Any]:
    """What ``show`` says of a step, as plain data. ``outputs``: identity -> output path."""
    plan, status = history.plan, history.status
    spec = plan.spec
    resources = None
    if plan.resources is not None:
        # env values are secret-ish: names only, as info.json keeps them
        resources = public_resources(
            {k: v for k, v in dataclasses.asdict(plan.resources).items() if v}
        )
    record = None
    if status is not None:
        record = {k: v for k, v in vars(status).items() if v is not None and k != "traceback"}
        record["state"] = status.state.value
    return {
        "step": plan.label,
        "name": spec.name,
        "state": words.state(history),
        "output": plan.output,
        "fn": spec.fn_path,
        "hash": spec.hash,
        "version": spec.version,
        "where": words.where(history),
        "plan": f"{plan.state.value}: {plan.reason}",
        "code_note": plan.code_note,
        "log": log_path(plan.output),
        "config": config_of(spec.hash_inputs["config"]),
        "deps": {d.name: outputs.get(d.identity, d.identity) for d in spec.dependencies},
        "resources": resources,
        "result": history.result if history.has_result else None,
        "has_result": history.has_result,
        "status": record,
        "error": history.error,
    }


def _text(history: StepHistory, shown: dict[str, Any]) -> str:
    status = history.status
    head = [f"{shown['step']}  ({history.plan.spec.identity})"]
    fields = {
        "state": shown["state"],
        "ran at": None,
        "output": shown["output"],
        "fn": shown["fn"] + (f"  (version {shown['version']})" if shown["version"] else ""),
        "hash": shown["hash"],
        "where": shown["where"],
        "plan": shown["plan"],
        "code": shown["code_note"],
        "log": shown["log"],
    }
    if status is not None:
        fields["ran at"] = (
            f"{words.local_time(status.started or status.time)}, took {words.took(history)}, "
            f"by {status.worker}"
        )
    width = max(len(k) for k in fields)
    head += [f"  {k.ljust(width)}  {v}" for k, v in fields.items() if v is not None]
    sections = ["\n".join(head)]
    sections.append(_section("config", _yaml(shown["config"]) if shown["config"] else "(none)"))
    if shown["deps"]:
        deps = shown["deps"]
        width = max(map(len, deps))
        sections.append(
            _section("deps", "\n".join(f"{k.ljust(width)}  {v}" for k, v in deps.items()))
        )
    if shown["resources"]:
        sections.append(_section("resources", _yaml(shown["resources"])))
    if shown["has_result"]:
        sections.append(_section("result", json.dumps(shown["result"], indent=1, default=str)))
    record = dict(shown["status"] or {})
    for key in ("time", "started"):  # seconds since the epoch: also as a local time
        if key in record:
            record[key] = f"{words.local_time(record[key], seconds=True)} ({record[key]:.3f})"
    sections.append(_section("status record", _yaml(record) if record else "(none: never run)"))
    if shown["error"]:
        lines = shown["error"].rstrip().splitlines()
        title = "error" if len(lines) <= ERROR_LINES else f"error (last {ERROR_LINES} lines)"
        sections.append(_section(title, "\n".join(lines[-ERROR_LINES:])))
    return "\n".join(sections)


def _section(title: str, body: str) -> str:
    indented = "\n".join(f"  {line}" if line else "" for line in body.rstrip().splitlines())
    return f"{title}:\n{indented}"


def _yaml(data: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(data))
