"""``confpipe gc PREFIX``: what could go under a prefix, with sizes; deleted only with --yes, and
never a live step (a fresh lease, or RUNNING)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from confpipe.cli.commands.gc import Kind, collect, delete, size
from confpipe.engine.status import Status, StepState, jobs_dir, lease_path, status_path
from confpipe.errors import ConfpipeError
from confpipe.storage import store_for
from tests.test_cli import BROKEN, ROOT, cli
from tests.waits import eventually

_hashes = (f"{i:012x}" for i in itertools.count(0xABC000000000))


class Layout:
    """Step folders and manifests written under a prefix through its store (local or gs://)."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.store = prefix, store_for(prefix)
        self.stamps = itertools.count()

    def step(
        self, name: str, state: StepState | None, *, jobs: bool = False, lease: bool = False,
        written: float | None = None, interrupted: bool | None = None,
    ) -> str:  # fmt: skip
        """A step folder; its status written a day ago (before the manifests) unless given."""
        folder = f"{self.prefix}/{name}-{next(_hashes)}"
        self.store.write(f"{folder}/data.bin", b"x" * 1000)
        if state is not None:
            when = time.time() - 86400 if written is None else written
            status = Status(state, "w", when, interrupted=interrupted)
            self.store.write(status_path(folder), status.to_json())
        if jobs:
            self.store.write(f"{jobs_dir(folder)}/20261206-000000.000-0-abcd/call.pkl", b"y" * 500)
        if lease:
            self.store.write(lease_path(folder), json.dumps({"owner": "elsewhere"}).encode())
        return folder

    def manifest(self, *outputs: str, stamp: str | None = None) -> str:
        """A manifest listing ``outputs``; each one newer than the last, unless ``stamp``."""
        when = stamp or time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() + next(self.stamps)))
        path = f"{self.prefix}/manifests/{when}-exp-abcdef.json"
        steps = [{"name": o.rsplit("/", 1)[-1], "output": o} for o in outputs]
        self.store.write(path, json.dumps({"steps": steps}).encode())
        return path


def exists(path: str) -> bool:
    return bool(store_for(path).fs.exists(path))


def test_gc_finds_unreferenced_failed_and_job_folders_and_leaves_live_steps(tmp_path: Path) -> None:
    lay = Layout(str(tmp_path))
    old = lay.step("old", StepState.SUCCESS)
    lay.manifest(old)
    kept = lay.step("kept", StepState.SUCCESS)
    spooled = lay.step("spooled", StepState.SUCCESS, jobs=True)
    failed = lay.step("failed", StepState.FAILED)
    dep = lay.step("dep", StepState.DEP_FAILED)
    running = lay.step("running", StepState.RUNNING, jobs=True)
    leased = lay.step("leased", StepState.FAILED, lease=True)
    stale = lay.step("stale", StepState.FAILED, lease=True)
    os.utime(lease_path(stale), (time.time() - 3600,) * 2)
    unknown = lay.step("scratch", None)
    lay.manifest(kept, spooled, failed, running, leased, stale, unknown.replace("scratch", "x"))
    (tmp_path / "notes").mkdir()  # not a step's folder
    (tmp_path / "sweeps").mkdir()

    found = collect(str(tmp_path), keep=1)
    assert {(c.kind, c.path) for c in found.candidates} == {
        (Kind.UNREFERENCED, old),
        (Kind.JOBS, jobs_dir(spooled)),
        (Kind.FAILED, failed),
        (Kind.DEP_FAILED, dep),
        (Kind.FAILED, stale),
        (Kind.UNREFERENCED, unknown),
    }
    assert found.live == {running: "RUNNING", leased: "live lease"}
    assert (found.kept, found.manifests) == (1, 2)
    sizes = {c.path: c.size for c in found.candidates}
    assert sizes[jobs_dir(spooled)] == 500 and sizes[dep] > 1000

    deleted, skipped = delete(found.candidates, lease_timeout=90)
    assert sorted(c.path for c in deleted) == sorted(sizes) and not skipped
    assert not any(map(exists, sizes))
    for survivor in (kept, spooled, running, jobs_dir(running), leased, str(tmp_path / "notes")):
        assert exists(survivor)
    assert (
        exists(f"{spooled}/.confpipe/status.json") and len(os.listdir(tmp_path / "manifests")) == 2
    )


def test_default_keeps_ten_manifests_and_keep_days_keeps_the_recent(tmp_path: Path) -> None:
    lay = Layout(str(tmp_path))
    ancient = lay.step("ancient", StepState.SUCCESS, written=1577836000.0)  # 2019-12-31
    lay.manifest(ancient, stamp="20200101-000000")
    steps = [lay.step(f"s{i}", StepState.SUCCESS) for i in range(10)]
    for step in steps:
        lay.manifest(step)
    assert [c.path for c in collect(str(tmp_path)).candidates] == [ancient]
    assert collect(str(tmp_path), keep=11).candidates == []
    recent = collect(str(tmp_path), keep_days=1)
    assert [c.path for c in recent.candidates] == [ancient] and recent.kept == 10
    both = collect(str(tmp_path), keep=0, keep_days=365 * 100)
    assert both.candidates == [] and both.kept == 11


def test_without_manifests_no_output_counts_as_unreferenced(tmp_path: Path) -> None:
    lay = Layout(str(tmp_path))
    lay.step("done", StepState.SUCCESS)
    failed = lay.step("failed", StepState.FAILED)
    assert [(c.kind, c.path) for c in collect(str(tmp_path)).candidates] == [(Kind.FAILED, failed)]


def test_a_step_that_became_live_after_the_listing_is_not_deleted(tmp_path: Path) -> None:
    lay = Layout(str(tmp_path))
    failed = lay.step("failed", StepState.FAILED)
    found = collect(str(tmp_path))
    store_for(failed).write(lease_path(failed), b'{"owner": "a new launch"}')
    deleted, skipped = delete(found.candidates, lease_timeout=90)
    assert deleted == [] and [(c.path, why) for c, why in skipped] == [(failed, "live lease")]
    assert exists(f"{failed}/data.bin")


def test_an_unreadable_manifest_stops_gc(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "20261206-000000-x-abcdef.json").write_text("{not json")
    with pytest.raises(ConfpipeError, match=r"manifest .* is unreadable .* move it out"):
        collect(str(tmp_path))


def test_sizes_read_well() -> None:
    assert [size(n) for n in (0, 512, 1536, 5 * 2**30)] == ["0 B", "512 B", "1.5 KiB", "5.0 GiB"]


# --- real runs --------------------------------------------------------------------------------

JOB = """\
# @package _global_
steps:
  job:
    fn: tests.stepfns.add
    config: {a: 1, b: 5}
    resources: {cpu: 1}
"""


def listed(out: str) -> dict[str, str]:
    """gc's listing: path -> what it says (kind, or ``kept`` and why)."""
    rows = [line.split() for line in out.splitlines() if "/" in line]
    return {
        r[-1]: " ".join(r[2:-1]) if r[0] != "kept" else "kept " + " ".join(r[1:-1]) for r in rows
    }


@pytest.mark.slow
def test_gc_yes_deletes_exactly_what_it_listed_and_nothing_live(tmp_path: Path) -> None:
    confs = tmp_path / "confs" / "experiment"
    confs.mkdir(parents=True)
    (confs / "broken.yaml").write_text(BROKEN)
    (confs / "job.yaml").write_text(JOB)
    (confs / "slow.yaml").write_text(
        "# @package _global_\nsteps:\n  slow:\n    fn: tests.stepfns.slow\n"
        f"    config: {{workdir: {tmp_path}}}\n"
    )
    (tmp_path / "seconds").write_text("60")
    assert cli("--config-dir", "confs", "+experiment=broken", cwd=tmp_path).returncode == 1
    assert cli("--config-dir", "confs", "+experiment=job", cwd=tmp_path).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "confpipe", "--config-dir", "confs", "+experiment=slow"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        eventually(lambda: (tmp_path / "started").exists(), "the slow step to start")
        outputs = tmp_path / "outputs"
        (slow,) = outputs.glob("slow-*")
        (job,) = outputs.glob("job-*")
        dry = cli("gc", "outputs", "--keep", "1", cwd=tmp_path)
        assert dry.returncode == 0, dry.stderr
        shown = listed(dry.stdout)
        expected = {
            str(next(outputs.glob("ok-*"))): "unreferenced",
            str(next(outputs.glob("bad-*"))): "failed",
            str(next(outputs.glob("after-*"))): "dep failed",
            str(job / ".confpipe" / "jobs"): "job folders",
            str(slow): "kept live lease",
        }
        assert shown == expected, dry.stdout
        assert "nothing deleted: run again with --yes" in dry.stdout
        assert all(Path(p).exists() for p in expected)

        done = cli("gc", str(outputs), "--keep", "1", "--yes", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert listed(done.stdout) == expected
        assert "deleted 4 folders" in done.stdout
        assert [p for p, kind in expected.items() if Path(p).exists()] == [str(slow)]
        assert (job / ".confpipe" / "status.json").exists()
        assert (outputs / "manifests").is_dir() and driver.poll() is None
    finally:
        driver.terminate()
        driver.communicate(timeout=60)


@pytest.mark.slow
def test_gc_on_gcs(gs_prefix: str, tmp_path: Path) -> None:
    lay = Layout(gs_prefix)
    old = lay.step("old", StepState.SUCCESS, jobs=True)
    kept = lay.step("kept", StepState.SUCCESS, jobs=True)
    leased = lay.step("leased", StepState.FAILED, lease=True)
    failed = lay.step("failed", StepState.DEP_FAILED)
    lay.manifest(kept)
    found = collect(gs_prefix)
    assert {(c.kind, c.path) for c in found.candidates} == {
        (Kind.UNREFERENCED, old), (Kind.JOBS, jobs_dir(kept)), (Kind.DEP_FAILED, failed),
    }  # fmt: skip
    assert found.live == {leased: "live lease"}
    assert {c.path: c.size for c in found.candidates}[jobs_dir(kept)] == 500

    out = cli("gc", gs_prefix, "--yes", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "deleted 3 folders" in out.stdout
    assert not exists(f"{old}/data.bin") and not exists(f"{failed}/data.bin")
    assert not exists(f"{jobs_dir(kept)}/20261206-000000.000-0-abcd/call.pkl")
    assert exists(status_path(kept)) and exists(f"{leased}/data.bin")
    assert collect(gs_prefix).candidates == []


def test_an_output_newer_than_the_kept_manifests_is_in_use_not_unreferenced(
    tmp_path: Path,
) -> None:
    """A launch still running writes its manifest when it ends: what it finished so far is
    newer than every manifest, and referenced by none of them yet."""
    lay = Layout(str(tmp_path))
    lay.manifest(lay.step("done", StepState.SUCCESS))
    in_progress = lay.step("upstream", StepState.SUCCESS, written=time.time() + 3600)
    assert [c.path for c in collect(str(tmp_path)).candidates] == []
    assert exists(in_progress)


def test_an_interrupted_step_is_not_offered_as_failed(tmp_path: Path) -> None:
    """Interrupted is not a failure: a detached cloud job may still run in its folder."""
    lay = Layout(str(tmp_path))
    lay.manifest(lay.step("done", StepState.SUCCESS))
    stopped = lay.step("stopped", StepState.FAILED, interrupted=True)
    lay.manifest(stopped)
    assert collect(str(tmp_path)).candidates == []


def test_a_failed_step_rerun_between_the_listing_and_the_delete_is_kept(tmp_path: Path) -> None:
    lay = Layout(str(tmp_path))
    failed = lay.step("failed", StepState.FAILED)
    found = collect(str(tmp_path))
    assert [c.path for c in found.candidates] == [failed]
    done = Status(StepState.SUCCESS, "a new launch", time.time())
    store_for(failed).write(status_path(failed), done.to_json())  # re-run and succeeded
    deleted, skipped = delete(found.candidates, 90.0)
    assert deleted == [] and [why for _, why in skipped] == [
        "its status changed since it was listed"
    ]
    assert exists(failed)
