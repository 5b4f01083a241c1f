"""The README's "Writing your own steps" example, run as a new user would: its two files
written into an empty project folder, then the run and the look-back commands it shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.slow


def block(header: str) -> str:
    """The fenced code block of the README whose first two lines hold ``header``."""
    for match in re.finditer(r"```(?:python|yaml)\n(.*?)```", README.read_text(), re.S):
        if header in "\n".join(match.group(1).splitlines()[:2]):
            return match.group(1)
    raise AssertionError(f"the README has no code block starting with {header!r}")


def confpipe(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run(
        [sys.executable, "-m", "confpipe", *args], cwd=project, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def test_the_readme_guide_runs_as_written(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "mypipe").mkdir(parents=True)
    (project / "mypipe" / "__init__.py").write_text("")
    (project / "mypipe" / "steps.py").write_text(block("# mypipe/steps.py"))
    (project / "conf" / "experiment").mkdir(parents=True)
    yaml = block("# conf/experiment/words.yaml")  # as shown
    (project / "conf" / "experiment" / "words.yaml").write_text(yaml)
    book = tmp_path / "book.txt"
    book.write_text("call me ishmael some years ago never mind how long precisely " * 50)
    source = f"steps.count.config.source={book}"

    first = confpipe(project, "+experiment=words", source)
    assert first.returncode == 0, first.stderr
    assert "share" in first.stdout  # the run ends with the last step's results
    assert "count | " in first.stderr or "count |" in first.stderr  # a step's log line, named

    status = confpipe(project, "status", "+experiment=words", source)
    assert status.returncode == 0, status.stderr
    assert re.search(r"count\s.*SUCCESS", status.stdout)
    assert re.search(r"top\s.*SUCCESS", status.stdout)

    logs = confpipe(project, "logs", "+experiment=words", source, "top")
    assert logs.returncode == 0, logs.stderr
    assert "top 10 of" in logs.stdout or "top 20 of" in logs.stdout

    shown = confpipe(project, "show", "+experiment=words", source, "count")
    assert shown.returncode == 0, shown.stderr
    assert "distinct" in shown.stdout
    counted = confpipe(project, "logs", "+experiment=words", source, "count")
    assert "read 550 words" in counted.stdout

    listed = confpipe(project, "gc", "outputs")
    assert listed.returncode == 0, listed.stderr
    assert (project / "outputs").is_dir()  # gc without --yes deletes nothing
