"""The experiment manifest: what one launch planned and how each step ended, under the prefix.

Written to ``{prefix}/manifests/{time}-{experiment}-{launch}.json`` after every run that got
past planning (never for a dry run or a config error), except a single run whose every step
was cached: it made nothing new (a sweep's is written all the same: its results go beside
it). ``confpipe.cli.launch`` decides, and says so on stderr.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confpipe.engine.outcome import Outcome
from confpipe.engine.plan import StepPlan
from confpipe.engine.status import launch_id, launch_info
from confpipe.redact import redact_overrides
from confpipe.storage import store_for

_launches = itertools.count(1)


def write_manifest(
    prefix: str,
    experiment: str | None,
    plans: Sequence[StepPlan],
    ends: Mapping[str, Outcome],
    options: Mapping[str, Any],
    overrides: Sequence[str],
) -> str:
    """Write the manifest and return its path. ``ends`` maps step identity -> how it ended."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name = experiment or "run"
    n = next(_launches)  # a sweeper's 2nd, 3rd... batch in this process gets its own file
    part = f"-{n}" if n > 1 else ""
    path = f"{prefix.rstrip('/')}/manifests/{stamp}-{name.replace('/', '_')}-{launch_id()[-6:]}"
    path += f"{part}.json"
    record = {
        "experiment": experiment,
        "overrides": redact_overrides(overrides),  # env values hidden
        "options": dict(options),
        "steps": [
            {
                "name": p.spec.name,
                "hash": p.spec.hash,
                "fn": p.spec.fn_path,
                "config": p.spec.hash_inputs["config"],
                "deps": [d.identity for d in p.spec.dependencies],
                "where": p.where,
                "output": p.output,
                "planned": p.state.value,
                "end": ends.get(p.spec.identity, p.state).value,
            }
            for p in plans
        ],
        **launch_info(),
    }
    store_for(path).write(path, json.dumps(record, indent=1, default=str).encode())
    return path
