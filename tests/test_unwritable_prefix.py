"""A prefix no folder can be made in is a config error: one line, exit 2, nothing written,
before anything runs; the dry run says it too (without writing a probe)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from confpipe import ConfigError, StepSpec, run
from tests import stepfns
from tests.test_cli import ROOT, cli

UNWRITABLE = "/proc/confpipe_runs"  # /proc takes no folder, not even root's


def step(log: Path) -> StepSpec:
    return StepSpec("a", stepfns.record, {"log": str(log), "name": "a"})


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_prefix_in_proc_is_refused_before_anything_runs(tmp_path: Path, dry_run: bool) -> None:
    log = tmp_path / "calls.log"
    with pytest.raises(ConfigError, match=r"^prefix '/proc/confpipe_runs': can't create folders "
                       r"in /proc \(.*proc filesystem\); choose another prefix$"):  # fmt: skip
        run(step(log), prefix=UNWRITABLE, dry_run=dry_run)
    assert not log.exists() and not os.path.exists(UNWRITABLE)


def test_a_cached_run_needs_no_writable_prefix(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    run(step(log), prefix=str(tmp_path / "runs"))
    (tmp_path / "runs").chmod(0o555)  # root may still write here: the point is no check is made
    try:
        assert run(step(log), prefix=str(tmp_path / "runs")).cached
    finally:
        (tmp_path / "runs").chmod(0o755)


def test_the_dry_run_leaves_no_probe_behind(tmp_path: Path) -> None:
    run(step(tmp_path / "calls.log"), prefix=str(tmp_path / "runs"), dry_run=True)
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.slow
@pytest.mark.parametrize("dry_run", ["false", "true"])
def test_the_cli_says_it_in_one_line_with_exit_2(tmp_path: Path, dry_run: str) -> None:
    out = cli("+experiment=tokenize", f"prefix={UNWRITABLE}", f"dry_run={dry_run}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith("confpipe: error: prefix '/proc/confpipe_runs': can't create folders")
    assert out.stdout == "" and os.listdir(tmp_path) == []


def _read_only_mount_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o ro none /mnt"], capture_output=True
    )
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _read_only_mount_works(), reason="needs unshare and mount (root)")
@pytest.mark.parametrize("dry_run", ["false", "true"])
def test_a_prefix_on_a_read_only_mount_is_refused(tmp_path: Path, dry_run: str) -> None:
    """A read-only tmpfs in a private mount namespace: root's permission bits say yes."""
    command = (
        f"mount -t tmpfs -o ro none {tmp_path} && exec {sys.executable} -m confpipe "
        f"+experiment=tokenize prefix={tmp_path}/runs dry_run={dry_run}"
    )
    out = subprocess.run(
        ["unshare", "--mount", "sh", "-c", command], cwd=tmp_path, capture_output=True,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"confpipe: error: prefix '{tmp_path}/runs': {tmp_path} is not writable")
