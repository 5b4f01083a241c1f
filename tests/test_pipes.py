"""``confpipe ... | head``: a reader that leaves early ends the command quietly (exit 141, as a
shell reports SIGPIPE), never with a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_a_plan_piped_to_a_reader_that_left_ends_quietly(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "confpipe", "+experiment=tokenize", "dry_run=true"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the plan is printed
        err = proc.stderr.read()
        code = proc.wait(timeout=120)
    assert code == 141, err
    assert "Traceback" not in err and err == ""
    assert not (tmp_path / "outputs").exists()  # a dry run: nothing written
