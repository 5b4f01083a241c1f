"""``confpipe status|show|logs|report``: their words parsed (fast), and real CLI runs (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from confpipe.cli.commands import words
from confpipe.cli.commands.args import Request, split
from confpipe.cli.commands.logs import Follower
from confpipe.cli.commands.show import config_of
from confpipe.cli.commands.status import plain
from confpipe.errors import ConfigError
from tests.test_cli import BROKEN, ROOT, cli, snapshot
from tests.waits import eventually

EXPERIMENTS = {
    "broken": BROKEN
    + """\
  later:
    fn: tests.stepfns.record
    config: {log: "${oc.env:CALLS_LOG}", name: later, up: "${step:ok}/x"}
""",
    "chatty": """\
# @package _global_
steps:
  talk:
    fn: tests.test_commands.chatty
    config: {lines: 3, pause: 0.0}
  job:
    fn: tests.test_commands.chatty
    config: {lines: 3, pause: 0.0, word: job}
    resources: {cpu: 1}
""",
    "scored": """\
# @package _global_
steps:
  score:
    fn: tests.stepfns.scored
    config: {x: 1.0}
""",
}


def chatty(output_path: str, lines: int, pause: float, word: str = "talk") -> int:
    """A step that prints ``lines`` numbered lines, ``pause`` seconds apart."""
    for i in range(lines):
        print(f"{word} line {i}", flush=True)
        time.sleep(pause)
    return lines


# --- the command's words, before Hydra sees the rest -----------------------------------------


def test_the_first_bare_word_is_the_command_and_the_others_its_steps() -> None:
    request, rest = split(["--config-dir", "confs", "show", "+experiment=x", "a", "-m", "b", "k=1"])
    assert request == Request("show", ("a", "b"))
    assert rest == ["--config-dir", "confs", "+experiment=x", "-m", "k=1"]
    assert split(["+experiment=x", "k=1"]) == (None, ["+experiment=x", "k=1"])
    assert split(["--cfg", "job", "-m"]) == (None, ["--cfg", "job", "-m"])


def test_command_flags_are_peeled_off_with_their_values() -> None:
    request, rest = split(["gc", "outputs", "--keep", "3", "--keep-days=1.5", "--yes"])
    assert request == Request("gc", ("outputs",), yes=True, keep=3, keep_days=1.5)
    assert rest == []
    request, _ = split(["logs", "+experiment=x", "train", "-f"])
    assert request == Request("logs", ("train",), follow=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stauts", "+experiment=x"], "'stauts' is no command and no override (KEY=VALUE) "
         "(did you mean 'status'?); commands: status, show, logs, report, gc"),
        (["logs", "+experiment=x"], "logs: name one step"),
        (["logs", "+experiment=x", "a", "b"], "logs: name one step, e.g. confpipe logs "
         "+experiment=NAME STEP (got a, b)"),
        (["show", "+experiment=x"], "show: name a step"),
        (["status", "--follow"], "--follow: `status` doesn't take it; logs do"),
        (["+experiment=x", "--yes"], "--yes: a flag of a command"),
        (["gc"], "gc: give one PREFIX"),
        (["gc", "a", "b"], "gc: give one PREFIX"),
        (["gc", "out", "--keep", "1.5"], "--keep: '1.5' is not a whole number"),
        (["gc", "out", "--keep-days"], "--keep-days: give a number"),
        (["report", "+experiment=x", "a"], "report: it shows every step, it takes no STEP"),
    ],
)  # fmt: skip
def test_bad_command_usage_is_a_config_error(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        split(args)
    assert str(err.value).startswith(message)


def test_config_shows_references_as_written() -> None:
    canonical = {
        "up": {"$step": "tok-0123456789ab", "suffix": "/shards"},
        "both": {"$template": [{"$step": "a-0123456789ab"}, ",", {"$step": "b-0123456789ab"}]},
        "nested": [{"lr": 0.1}],
    }
    assert config_of(canonical) == {
        "up": "${step:tok}/shards", "both": "${step:a},${step:b}", "nested": [{"lr": 0.1}],
    }  # fmt: skip


def test_durations_and_plain_columns_read_well() -> None:
    assert [words.duration(s) for s in (0.04, 12.4, 185, 7260)] == ["0.0s", "12s", "3m05s", "2h01m"]
    text = plain([("a", "SUCCESS", "x", "1s", "thread", "/o/a"), ("long", "never run", "-", "-",
                  "local job", "/o/long")])  # fmt: skip
    assert text.splitlines() == [
        "step  state      ran at  took  where      output",
        "a     SUCCESS    x       1s    thread     /o/a",
        "long  never run  -       -     local job  /o/long",
    ]


def test_follower_goes_on_where_it_was_when_the_log_moves_to_log_txt(tmp_path: Path) -> None:
    out = tmp_path / "step-0123456789ab"
    job = out / ".confpipe" / "jobs" / "20261206-000000.000-0-abc"
    job.mkdir(parents=True)
    written: list[bytes] = []
    follow = Follower(str(out), written.append)
    follow.step()  # no log yet
    (job / "log.txt").write_text("one\n")
    follow.step()
    with open(job / "log.txt", "a") as f:
        f.write("two\n")
    follow.step()
    (out / ".confpipe" / "log.txt").write_text("one\ntwo\nthree\n")  # the step's own log
    follow.step()
    follow.step()
    assert b"".join(written) == b"one\ntwo\nthree\n"
    (out / ".confpipe" / "log.txt").write_text("new\n")  # rewritten from the start
    follow.step()
    assert b"".join(written).endswith(b"(rewritten) ---\nnew\n")


def test_follower_shows_a_moved_log_whole_under_a_header_when_it_starts_otherwise(
    tmp_path: Path,
) -> None:
    out = tmp_path / "step-0123456789ab"
    job = out / ".confpipe" / "jobs" / "20261206-000000.000-0-abc"
    job.mkdir(parents=True)
    written: list[bytes] = []
    follow = Follower(str(out), written.append)
    (job / "log.txt").write_text("attempt one\n")
    follow.step()
    (out / ".confpipe" / "log.txt").write_text("--- attempt 1 ---\nattempt one\n")
    follow.step()
    text = b"".join(written).decode()
    assert text == f"attempt one\n--- {out}/.confpipe/log.txt ---\n--- attempt 1 ---\nattempt one\n"


# --- real CLI runs ----------------------------------------------------------------------------


@pytest.fixture
def work(tmp_path: Path) -> Path:
    confs = tmp_path / "confs" / "experiment"
    confs.mkdir(parents=True)
    for name, text in EXPERIMENTS.items():
        (confs / f"{name}.yaml").write_text(text)
    return tmp_path


def run(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("--config-dir", "confs", *args, cwd=work)


def table(out: str) -> dict[str, list[str]]:
    """The plain status table: step -> cells (split on 2+ spaces)."""
    import re

    lines = out.splitlines()
    return {r[0]: r for r in (re.split(r"\s{2,}", line) for line in lines[1:-1])}


@pytest.mark.slow
def test_status_after_a_run_with_succeeded_failed_and_never_run_steps(work: Path) -> None:
    first = run(work, "+experiment=broken", "run_only=[ok,after]")
    assert first.returncode == 1, first.stderr
    before = snapshot(work)
    out = run(work, "status", "+experiment=broken")
    assert out.returncode == 0, out.stderr
    assert snapshot(work) == before  # status wrote nothing, here or under the prefix
    rows = table(out.stdout)
    assert out.stdout.splitlines()[0].split() == ["step", "state", "ran", "at", "took", "where",
                                                  "output"]  # fmt: skip
    assert [rows[s][1] for s in ("ok", "bad", "after", "later")] == [
        "SUCCESS", "FAILED", "DEP_FAILED (bad failed)", "never run",
    ]  # fmt: skip
    today = time.strftime("%Y-%m-%d ")
    assert rows["ok"][2].startswith(today) and rows["ok"][3].endswith("s")
    assert rows["later"][2:4] == ["-", "-"]
    assert rows["ok"][4] == "thread" and rows["ok"][5].startswith("outputs/ok-")
    assert out.stdout.splitlines()[-1] == "4 steps: 1 SUCCESS, 1 FAILED, 1 DEP_FAILED, 1 never run"

    only = run(work, "status", "+experiment=broken", "ok", "--json")
    (record,) = json.loads(only.stdout)
    assert record["step"] == "ok" and record["state"] == "SUCCESS" and record["ran_for"] >= 0


@pytest.mark.slow
def test_status_of_a_sweep_shows_every_points_steps(work: Path) -> None:
    assert run(work, "+experiment=scored", "steps.score.config.x=1.0").returncode == 0
    before = snapshot(work)
    out = run(work, "status", "+experiment=scored", "-m", "steps.score.config.x=1.0,3.0")
    assert out.returncode == 0, out.stderr
    assert snapshot(work) == before
    states = sorted(row[1] for row in table(out.stdout).values())
    assert states == ["SUCCESS", "never run"]
    assert out.stdout.splitlines()[-1] == "2 steps: 1 SUCCESS, 1 never run"
    assert sorted(p.name for p in work.iterdir()) == ["confs", "outputs"]
    # a sweep's two steps of one name: the hash tells them apart
    named = run(work, "logs", "+experiment=scored", "-m", "steps.score.config.x=1.0,3.0", "score")
    assert named.returncode == 2
    assert "score: 2 steps of this sweep have that name; name one: score-" in named.stderr


@pytest.mark.slow
def test_logs_of_a_job_and_of_a_thread_step(work: Path) -> None:
    assert run(work, "+experiment=chatty").returncode == 0
    before = snapshot(work)
    job = run(work, "logs", "+experiment=chatty", "job")
    assert job.returncode == 0, job.stderr
    assert "job line 0\njob line 1\njob line 2\n" in job.stdout
    talk = run(work, "logs", "+experiment=chatty", "talk")
    assert snapshot(work) == before
    assert talk.returncode == 0, talk.stderr
    assert "talk line 0" in talk.stdout and "talk line 2" in talk.stdout


@pytest.mark.slow
def test_logs_of_a_step_that_never_ran_says_so(work: Path) -> None:
    out = run(work, "logs", "+experiment=chatty", "job")
    assert out.returncode == 1
    assert out.stderr == "confpipe: step job has written no log: it never ran\n"
    assert sorted(p.name for p in work.iterdir()) == ["confs"]


@pytest.mark.slow
def test_logs_follow_prints_a_running_step_until_it_ends(work: Path) -> None:
    override = ("steps.job.config.lines=6", "steps.job.config.pause=0.5")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CALLS_LOG": str(work / "calls.log")}
    driver = subprocess.Popen(
        [sys.executable, "-m", "confpipe", "--config-dir", "confs", "+experiment=chatty",
         "run_only=[job]", *override],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        eventually(lambda: list((work / "outputs").glob("job-*/.confpipe/jobs/*/log.txt")),
                   "the job to start")  # fmt: skip
        follow = run(work, "logs", "+experiment=chatty", "job", "--follow", *override)
        assert driver.wait(timeout=60) == 0
    finally:
        driver.kill()
        driver.communicate()
    assert follow.returncode == 0, follow.stderr
    assert [f"job line {i}" for i in range(6)] == [
        line for line in follow.stdout.splitlines() if line.startswith("job line")
    ]


@pytest.mark.slow
def test_show_names_config_deps_result_status_and_error(work: Path) -> None:
    assert run(work, "+experiment=broken").returncode == 1
    before = snapshot(work)
    out = run(work, "show", "+experiment=broken", "later", "bad")
    assert out.returncode == 0, out.stderr
    assert snapshot(work) == before
    later, bad = out.stdout.split("\n\nbad  (bad-")
    assert later.startswith("later  (later-")
    assert "  state   SUCCESS\n" in later
    assert "  fn      tests.stepfns.record\n" in later
    assert "  plan    cached: succeeded earlier\n" in later
    assert "config:\n  log: " in later and "  up: ${step:ok}/x\n" in later
    assert f"deps:\n  ok  {work / 'outputs'}/ok-" in later
    assert 'result:\n  "later"\n' in later
    assert "status record:\n  state: SUCCESS\n" in later
    assert "  state   FAILED\n" in bad
    assert (
        "  plan    will run: retry: failed earlier (ValueError: this step is broken on purpose)"
        in bad
    )
    assert "error:\n  Traceback (most recent call last):" in bad
    assert 'raise ValueError("this step is broken on purpose")' in bad
    shown = json.loads(run(work, "show", "+experiment=broken", "ok", "--json").stdout)
    assert shown["result"] == 3 and shown["status"]["state"] == "SUCCESS"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status"], "confpipe: error: status: choose the run to look at with +experiment=NAME"),
        (["show", "+experiment=broken", "bda"], "confpipe: error: bda: no such step in this "
         "config (did you mean 'bad'?); steps: ok, bad, after, later"),
        (["logs", "+experiment=broken"], "confpipe: error: logs: name one step"),
        (["stat", "+experiment=broken"], "confpipe: error: 'stat' is no command"),
        (["status", "+experiment=broken", "steps.ok.confg.a=1"], "confpipe: error: steps.ok"),
    ],
)  # fmt: skip
def test_bad_usage_is_one_line_and_exit_2(work: Path, args: list[str], message: str) -> None:
    out = run(work, *args)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(message) and len(out.stderr.splitlines()) == 1, out.stderr
    assert sorted(p.name for p in work.iterdir()) == ["confs"]


@pytest.mark.slow
def test_command_help_lists_the_commands(work: Path) -> None:
    out = run(work, "status", "--help")
    assert out.returncode == 0
    assert "confpipe gc PREFIX [--keep N]" in out.stdout
    hydra = run(work, "--help")
    assert "python -m confpipe gc PREFIX" in hydra.stdout


@pytest.mark.slow
def test_report_writes_the_page_where_asked_and_prints_its_path(work: Path) -> None:
    assert run(work, "+experiment=broken").returncode == 1
    page = work / "page.html"
    out = run(work, "report", "+experiment=broken", f"report_html={page}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(page)
    text = page.read_text()
    assert "later" in text and "this step is broken on purpose" in text
    default = run(work, "report", "+experiment=scored", "-m", "steps.score.config.x=1.0,3.0")
    assert default.returncode == 0, default.stderr
    assert (work / "confpipe-report-scored.html").exists()


@pytest.mark.slow
def test_status_and_logs_on_gcs(work: Path, gs_prefix: str) -> None:
    prefix = f"prefix={gs_prefix}"
    assert run(work, "+experiment=chatty", prefix).returncode == 0
    out = run(work, "status", "+experiment=chatty", prefix)
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout)
    assert [rows[s][1] for s in ("talk", "job")] == ["SUCCESS", "SUCCESS"]
    assert rows["job"][4] == "local job" and rows["job"][5].startswith(f"{gs_prefix}/job-")
    job = run(work, "logs", "+experiment=chatty", "job", prefix)
    assert job.returncode == 0, job.stderr
    assert "job line 0\njob line 1\njob line 2\n" in job.stdout
    follow = run(work, "logs", "+experiment=chatty", "job", "--follow", prefix)
    assert follow.returncode == 0 and follow.stdout == job.stdout
    assert sorted(p.name for p in work.iterdir()) == ["confs"]


@pytest.mark.slow
def test_logs_follow_stops_when_the_launch_is_gone(work: Path) -> None:
    (work / "seconds").write_text("60")
    (work / "confs" / "experiment" / "slow.yaml").write_text(
        "# @package _global_\nsteps:\n  slow:\n    fn: tests.stepfns.slow\n"
        f"    config: {{workdir: {work}}}\n"
    )
    lock = ("lock.lease_timeout=2", "lock.heartbeat_interval=1")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "confpipe", "--config-dir", "confs", "+experiment=slow", *lock],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        eventually(lambda: (work / "started").exists(), "the slow step to start")
    finally:
        driver.kill()  # -9: its lease and RUNNING stay behind
        driver.wait()
    follow = run(work, "logs", "+experiment=slow", "slow", "--follow", *lock)
    assert follow.returncode == 1
    assert follow.stderr.endswith(
        "confpipe: step slow is RUNNING, but no launch holds its lease: its launch was stopped "
        "(the next run takes the step over)\n"
    )
    status = run(work, "status", "+experiment=slow", *lock)
    assert "RUNNING (abandoned: no live lease)" in status.stdout
