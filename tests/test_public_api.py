"""The public API, pinned: a change here is a change users see."""

from __future__ import annotations

import subprocess
import sys

import pytest

import confpipe


def test_exported_members() -> None:
    assert sorted(confpipe.__all__) == [
        "ConfigError", "ConfpipeError", "GPU", "Interrupted", "LeaseLost", "LockOptions",
        "PreviousFailure", "Ref", "Resources", "RunFailed", "StepFailed", "StepSpec",
        "StepState", "Summary", "load_result", "remote", "run",
    ]  # fmt: skip
    for name in confpipe.__all__:
        assert getattr(confpipe, name).__module__.startswith("confpipe.")


@pytest.mark.slow  # a fresh interpreter
def test_importing_confpipe_is_light() -> None:
    heavy = "{'fsspec', 'hydra', 'rich', 'google', 'gcsfs', 'cloudpickle'}"
    code = (
        "import sys, confpipe; print(sorted(m for m in sys.modules"
        f" if m.split('.')[0] in {heavy} or m.startswith('confpipe.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
