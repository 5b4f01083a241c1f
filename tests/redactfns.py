"""A job step for tests/test_env_values_redacted.py: what it was given, as a digest only."""

from __future__ import annotations

import hashlib
import os


def env_digest(name: str, output_path: str | None = None) -> str:
    """The sha256 of variable ``name``'s value: the job saw it, and the value is never written."""
    return hashlib.sha256(os.environ[name].encode()).hexdigest()
