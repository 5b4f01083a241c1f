"""A step's log.txt keeps its first LOG_HEAD and last LOG_TAIL bytes, with a line saying how
much was cut: for thread steps (local and remote stores) and a job's copied log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from confpipe import Resources, StepSpec, run
from confpipe.engine import logcap
from confpipe.engine.status import log_path
from confpipe.storage import store_for
from tests import recordfns

HEAD, TAIL = 200, 1000
LINES = 2000  # "line 000000\n": 12 bytes each, 24,000 in all


@pytest.fixture(autouse=True)
def small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logcap, "LOG_HEAD", HEAD)
    monkeypatch.setattr(logcap, "LOG_TAIL", TAIL)


def check_capped(data: bytes, total: int = LINES * 12) -> None:
    """Head, one line saying how much was cut (all of the rest), tail ending the log."""
    assert data.startswith(b"line 000000\nline 000001\n")
    assert data.endswith(f"line {LINES - 1:06d}\n".encode())
    (cut,) = re.findall(rb"\[confpipe: ([\d,]+) bytes of this log were cut here", data)
    marker = len(logcap.cut_line(int(cut.replace(b",", b""))))
    assert len(data) <= HEAD + marker + TAIL
    assert int(cut.replace(b",", b"")) == total - (len(data) - marker)
    tail = data.split(b"]\n", 1)[1]
    assert tail.startswith(b"line ")  # from a line's start


def test_a_chatty_thread_steps_log_keeps_its_head_and_tail(tmp_path: Path) -> None:
    spec = StepSpec("chatty", recordfns.chatty, {"lines": LINES})
    run(spec, prefix=str(tmp_path))
    check_capped(Path(log_path(spec.output_under(str(tmp_path)))).read_bytes())


def test_a_chatty_thread_steps_log_on_gcs_keeps_its_head_and_tail(gs_prefix: str) -> None:
    spec = StepSpec("chatty", recordfns.chatty, {"lines": LINES})
    run(spec, prefix=gs_prefix)
    out = spec.output_under(gs_prefix)
    blob = store_for(out).read(log_path(out))
    assert blob is not None
    check_capped(blob.data)


def test_compacting_again_and_again_counts_every_cut_byte(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    keeper = logcap.LogCap()
    for i in range(LINES):
        with open(path, "ab") as f:  # anew each time: a compaction renames a new file in
            f.write(f"line {i:06d}\n".encode())
        if keeper.due(path.stat().st_size):
            keeper.compact_file(str(path))
    assert keeper.cut > 0
    keeper.compact_file(str(path))
    check_capped(path.read_bytes())
    assert logcap.cap(b"short\n") == b"short\n"


@pytest.mark.slow
def test_the_copy_of_a_chatty_jobs_log_keeps_its_head_and_tail(tmp_path: Path) -> None:
    spec = StepSpec("chatty", recordfns.chatty, {"lines": LINES}, resources=Resources())
    run(spec, prefix=str(tmp_path))
    out = Path(spec.output_under(str(tmp_path)))
    check_capped(Path(log_path(str(out))).read_bytes())
    (job_log,) = out.glob(".confpipe/jobs/*/log.txt")
    assert len(job_log.read_bytes()) == LINES * 12  # the job's own log stays whole
