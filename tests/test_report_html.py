"""The HTML run report: its layout, escaping, cuts and sweep axes from records made by hand,
and the page of a real run (a failing step, a dependent it stopped, a job, a sweep) opened
in headless chromium: a screenshot that shows the states' colours, the DOM after the script
ran with every step in it, and not one console message."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shutil
import struct
import subprocess
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from confpipe import Resources, RunFailed, StepSpec, load_result, run
from confpipe.cli.history import StepHistory, gather
from confpipe.cli.report.charts import CHART_W, LABEL_W, Bar, duration, gantt_svg, nice_ticks
from confpipe.cli.report.graph import layers, order
from confpipe.cli.report.page import TEXT_LIMIT, Shown, render, shown_state, write_report
from confpipe.cli.report.sweep import swept_axis
from confpipe.cli.results import PointResult, PointStatus
from confpipe.engine.options import RunOptions
from confpipe.engine.outcome import Outcome
from confpipe.engine.pipeline import survey
from confpipe.engine.plan import StepPlan, labels_of
from confpipe.engine.status import Status, StepState, log_path
from confpipe.storage import store_for
from tests import jobfns, stepfns

# the page's state colours (report_assets.CSS), as the screenshot has them
GREEN, RED, ORANGE, BLUE = (
    (0x2F, 0x9E, 0x5F),
    (0xD6, 0x45, 0x41),
    (0xE8, 0x9B, 0x3C),
    (0x2F, 0x74, 0xD0),
)


# --- records made by hand -------------------------------------------------------------------


def histories(
    specs: Sequence[StepSpec], states: dict[str, StepState | None] | None = None, **extra: Any
) -> list[StepHistory]:
    """A StepHistory per spec, SUCCESS one second apart unless ``states`` says otherwise;
    ``extra`` (log, error, result, info) goes to every one."""
    labels, now, made = labels_of(specs), time.time(), []
    for i, spec in enumerate(specs):
        state = (states or {}).get(spec.name, StepState.SUCCESS)
        started = None if state is StepState.DEP_FAILED else now + i  # it never began
        status = None if state is None else Status(state, "me@host", now + i + 1, started=started)
        output, label = f"/out/{spec.identity}", labels[spec.identity]
        plan = StepPlan(spec, label, output, Outcome.CACHED, "succeeded earlier", "thread", None)
        made.append(
            StepHistory(
                plan,
                status,
                extra.get("info"),
                extra.get("result"),
                "result" in extra,
                extra.get("error"),
                extra.get("log"),
            )
        )
    return made


def crossings(columns: list[list[int]], parents: Sequence[Sequence[int]]) -> int:
    """Edge crossings between neighbouring columns."""
    place = {i: r for column in columns for r, i in enumerate(column)}
    count = 0
    for left, right in itertools.pairwise(columns):
        edges = [(place[p], place[c]) for c in right for p in parents[c] if p in left]
        count += sum(1 for a in edges for b in edges if a[0] < b[0] and a[1] > b[1])
    return count


def test_layers_are_the_longest_path_from_a_root() -> None:
    #  0 -> 1 -> 2, and 0 -> 2 directly: 2 is in layer 2, not 1
    assert layers([[], [0], [0, 1], []]) == [0, 1, 2, 0]


def test_the_barycentre_pass_uncrosses_a_fan_out() -> None:
    # roots 0 and 1; 2 is 1's child, 3 is 0's: listed crossed, laid out uncrossed
    parents: list[list[int]] = [[], [], [1], [0]]
    assert crossings([[0, 1], [2, 3]], parents) == 1
    columns, _ = order(parents, layers(parents))
    assert crossings(columns, parents) == 0


def test_a_single_step_and_no_step_render() -> None:
    page = render(histories([StepSpec("only", stepfns.noop)]), title="one")
    assert 'id="step-0"' in page and '<svg class="dag"' in page
    assert "· 1 step</p>" in page
    empty = render([], title="nothing")
    assert "<svg" not in empty and "No step has run yet" in empty


def test_the_graph_grows_with_steps_and_edges_not_their_product() -> None:
    root = StepSpec("tokenize", stepfns.noop)
    specs = [root] + [StepSpec("train", stepfns.noop, {"lr": i, "up": root}) for i in range(300)]
    page = render(histories(specs), title="sweep")
    dag = re.search(r'<svg class="dag".*?</svg>', page, re.S)
    assert dag is not None
    edges = re.search(r'<g class="edges">(.*?)</g>', dag.group())
    assert edges is not None and edges.group(1).count("<path d=") == 300  # one edge each
    assert len(dag.group()) < 400 * len(specs)
    # every node links to its step's details, which exist
    anchors = re.findall(r'<a href="#(step-\d+)"', dag.group())
    assert len(anchors) == len(specs) and all(f'id="{a}"' in page for a in anchors)


def test_every_record_text_is_escaped_and_control_codes_dropped() -> None:
    nasty = "</pre><script>alert(1)</script><b onmouseover=x>"
    specs = [StepSpec("step", stepfns.noop, {"text": nasty})]
    page = render(
        histories(specs, info={"config": {"text": nasty}, "where": "thread"}, result={"r": nasty},
                  log=f"\x1b[31mred\x1b[0m bell\x07 {nasty}", error=f"Traceback {nasty}"),
        title=nasty,
    )  # fmt: skip
    assert "alert(1)</script>" not in page and "<b onmouseover" not in page
    assert (
        page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5
    )  # title x2, config, result, log, error
    assert "\x1b" not in page and "\x07" not in page
    assert "red bell\ufffd" in page
    assert page.count("<script>") == 1  # the page's own


def test_long_texts_are_cut_and_say_so() -> None:
    log = "".join(f"line {n}\n" for n in range(20_000))
    page = render(histories([StepSpec("chatty", stepfns.noop)], log=log), title="t")
    assert "line 19999" in page  # the end of a log is kept
    assert "line 0\n" not in page
    cut = re.search(r"\(first ([\d,]+) characters not shown", page)
    assert cut is not None and int(cut.group(1).replace(",", "")) == len(log) - TEXT_LIMIT


def test_states_come_from_the_records() -> None:
    a = StepSpec("a", stepfns.noop)
    b = StepSpec("b", stepfns.noop, deps=(a,))
    c = StepSpec("c", stepfns.noop, deps=(b,))
    d = StepSpec("d", stepfns.noop)
    made = histories(
        [a, b, c, d], {"a": StepState.FAILED, "b": StepState.DEP_FAILED, "c": None, "d": None}
    )
    page = render(made, title="states")
    assert '<span class="badge s-failed">1 failed</span>' in page
    assert '<span class="badge s-dep-failed">1 dep failed</span>' in page
    assert '<span class="badge s-not-run">2 not run</span>' in page
    assert "Never ran (3)" in page
    assert Shown.FAILED.css == "s-failed"


def test_a_running_step_is_told_from_one_a_killed_run_left_running() -> None:
    live, left = histories(
        [StepSpec("live", stepfns.noop), StepSpec("left", stepfns.noop)],
        {"live": StepState.RUNNING, "left": StepState.RUNNING},
    )
    live = dataclasses.replace(live, plan=dataclasses.replace(live.plan, state=Outcome.RUNNING))
    assert (shown_state(live), shown_state(left)) == (Shown.RUNNING, Shown.INTERRUPTED)


def test_a_step_whose_code_changed_is_marked() -> None:
    (made,) = histories([StepSpec("train", stepfns.noop)])
    note = "code changed since this output was made; bump `version` to re-run"
    made = dataclasses.replace(made, plan=dataclasses.replace(made.plan, code_note=note))
    page = render([made], title="code")
    assert '<a href="#step-0" class="s-succeeded marked">' in page  # dashed in the graph
    assert "code changed since its output was made</span>" in page  # the legend says so
    assert f'<span class="warn">{escape(note)}</span>' in page  # and its details


def test_the_swept_value_is_read_from_the_overrides() -> None:
    def rows(*overrides: list[str]) -> list[PointResult]:
        return [PointResult(list(o), PointStatus.RAN, {"m": 1.0}) for o in overrides]

    assert swept_axis(rows(["lr=0.1"], ["+lr=1e-3"], ["lr=10"])) == ("lr", [0.1, 0.001, 10.0], [])
    assert swept_axis(rows(["model='big'"], ["model=small"], ["model='big'"])) == (
        "model", [0.0, 1.0, 0.0], ["big", "small"],
    )  # fmt: skip
    name, xs, categories = swept_axis(rows(["a=1", "b=x"], ["a=2", "b=y"]))
    assert (name, xs, categories) == ("point (see the table)", [0.0, 1.0], ["#1", "#2"])
    # a key shared by every point is not what is swept
    assert swept_axis(rows(["seed=1", "lr=0.5"], ["seed=1", "lr=2"]))[:2] == ("lr", [0.5, 2.0])


def test_the_timeline_draws_a_lease_wait_before_the_run_and_hatches_jobs() -> None:
    svg = gantt_svg(
        [
            Bar("late", "step-1", "s-failed", "local job", True, 130.0, 250.0, waited=20.0),
            Bar("early", "step-0", "s-succeeded", "thread", False, 100.0, 160.0),
        ]
    )
    rows = re.findall(r'<g class="row (s-[a-z-]+)">(.*?)</g>', svg)
    assert [css for css, _ in rows] == ["s-succeeded", "s-failed"]  # in start order
    assert "wait" not in rows[0][1] and 'class="job"' not in rows[0][1]
    wait = re.search(r'<rect class="wait" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', rows[1][1])
    run = re.search(r'<rect class="bar" x="([\d.]+)"', rows[1][1])
    assert wait is not None and run is not None
    assert float(wait[1]) + float(wait[2]) == pytest.approx(float(run[1]), abs=0.1)
    assert float(wait[1]) == pytest.approx(LABEL_W + CHART_W * 10 / 150, abs=0.1)  # from 110 s
    assert 'class="job"' in rows[1][1] and ">local job<" in rows[1][1]
    assert ">0s<" in svg and ">1m<" in svg and ">2m<" in svg  # the axis, from the first wait


def test_axes_get_round_ticks() -> None:
    assert nice_ticks(0.3, 9.2) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    flat = nice_ticks(5.0, 5.0)  # one value: a range around it
    assert flat[0] < 5.0 < flat[-1] and 5.0 in flat
    assert [duration(s) for s in (0, 0.25, 4.2, 90, 3900)] == [
        "0s",
        "250ms",
        "4.2s",
        "1m30s",
        "1h05m",
    ]


@pytest.mark.slow
def test_ten_thousand_steps_render_in_seconds() -> None:
    root = StepSpec("tokenize", stepfns.noop)
    specs = [root]
    for i in range(5000):
        train = StepSpec("train", stepfns.noop, {"lr": i, "up": root})
        specs += [train, StepSpec("eval", stepfns.noop, {"model": train})]
    made = histories(specs, log="a log line\n" * 2000, info={"config": {"big": "x" * 9000}})
    started = time.perf_counter()
    page = render(made, title="big")
    assert time.perf_counter() - started < 5
    assert page.count('<details class="step"') == len(specs)
    assert len(page) < 40_000_000  # texts cut harder, the more steps


@pytest.mark.slow
def test_a_report_is_written_to_gcs(gs_prefix: str) -> None:
    path = write_report(
        f"{gs_prefix}/report.html", histories([StepSpec("x", stepfns.noop)]), title="t"
    )
    blob = store_for(path).read(path)
    assert blob is not None and blob.data.startswith(b"<!DOCTYPE html>")


# --- the page in a real browser --------------------------------------------------------------

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0",
]  # fmt: skip
CONSOLE = re.compile(r":CONSOLE[(:]")  # chromium's log line of a console message


@pytest.fixture
def chromium() -> str:
    found = "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    found = found or shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip(
            "the report's browser test needs Debian's chromium (/usr/bin/chromium): "
            "apt-get install -y chromium (.ci/run installs it)"
        )
    return found


@dataclass(frozen=True)
class Opened:
    dom: str  # the DOM once the page loaded and its script ran
    console: list[str]  # console messages (errors, CSP violations, logs)
    png: Path


def browse(chromium: str, url: str, folder: Path, *, screenshot: bool = True) -> Opened:
    """Open ``url`` in headless chromium to dump its DOM, and again for a 1400x2000
    screenshot; the console messages of both."""
    folder.mkdir(parents=True, exist_ok=True)
    base = [chromium, *FLAGS, f"--user-data-dir={folder / 'profile'}"]
    png = folder / "page.png"
    runs = [[*base, "--dump-dom", url]]
    if screenshot:
        runs.append([*base, f"--screenshot={png}", "--window-size=1400,2000", url])
    done = [subprocess.run(args, capture_output=True, text=True, timeout=120) for args in runs]
    for one in done:
        assert one.returncode == 0, one.stderr[-3000:]
    console = [line for one in done for line in one.stderr.splitlines() if CONSOLE.search(line)]
    return Opened(done[0].stdout, console, png)


def pixels(png: Path) -> np.ndarray:
    """The PNG's RGB pixels, decoded here (8-bit RGB or RGBA, as chromium writes them)."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + size]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + size
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), np.uint8).reshape(height, -1)
    rows = np.zeros((height, width * bpp), np.int64)
    above = np.zeros(width * bpp, np.int64)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int64)
        if kind == 0:
            row = line
        elif kind == 1:  # sub: a running sum per channel
            row = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1) & 255
        elif kind == 2:
            row = (line + above) & 255
        else:  # average, paeth: each byte needs the one decoded before it
            out, up = [0] * len(line), above.tolist()
            for i, value in enumerate(line.tolist()):
                a = out[i - bpp] if i >= bpp else 0
                b, c = up[i], (up[i - bpp] if i >= bpp else 0)
                if kind == 3:
                    out[i] = (value + (a + b) // 2) & 255
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    out[i] = (value + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            row = np.array(out, np.int64)
        rows[y], above = row, row
    return rows.reshape(height, width, bpp)[:, :, :3].astype(np.uint8)


def count(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((image == np.array(colour, np.uint8)).all(axis=2).sum())


def check_screenshot(png: Path, *colours: tuple[int, int, int]) -> None:
    assert png.exists() and png.stat().st_size > 20_000, "the screenshot is missing or blank"
    image = pixels(png)
    assert image.shape == (2000, 1400, 3)
    packed = image.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], np.int32)
    assert len(np.unique(packed)) > 100, "the screenshot is nearly blank"
    for colour in colours:
        assert count(image, colour) > 200, f"no {colour} in the screenshot"


@pytest.mark.slow
def test_the_console_check_catches_a_broken_script_and_a_network_load(
    chromium: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body><p>page</p>'
        "<script>document.body.dataset.ready = nosuchname;</script></body></html>"
    )
    opened = browse(chromium, broken.as_uri(), tmp_path / "broken", screenshot=False)
    assert any("nosuchname is not defined" in line for line in opened.console), opened.console
    assert "data-ready" not in opened.dom
    # the report's Content-Security-Policy turns any load from the network into a message
    page = render(histories([StepSpec("x", stepfns.noop)]), title="csp")
    leaky = tmp_path / "leaky.html"
    leaky.write_text(page.replace("</body>", '<img src="https://example.com/x.png"></body>'))
    opened = browse(chromium, leaky.as_uri(), tmp_path / "leaky", screenshot=False)
    assert any("Content Security Policy" in line for line in opened.console), opened.console


def real_run(tmp_path: Path) -> list[StepSpec]:
    """A run that leaves every kind of record: thread steps, a job that prints, a failing
    step and the step it stopped."""
    log = str(tmp_path / "calls.log")
    prepare = StepSpec("prepare", stepfns.record, {"log": log, "name": "prepare", "sleep": 0.2})
    tokenize = StepSpec(
        "tokenize", stepfns.record, {"log": log, "name": "tok <b>&", "sleep": 0.3}, deps=(prepare,)
    )
    train = StepSpec("train", jobfns.noisy, {"lines": 30}, resources=Resources(cpu=1),
                     deps=(tokenize,))  # fmt: skip
    evaluate = StepSpec("evaluate", stepfns.fail, {"up": tokenize})
    publish = StepSpec("publish", stepfns.noop, {"model": train, "scores": evaluate})
    with pytest.raises(RunFailed):
        run(publish, prefix=str(tmp_path / "out"))
    return [publish]


@pytest.mark.slow
def test_the_report_of_a_real_run_renders_in_chromium(chromium: str, tmp_path: Path) -> None:
    steps = real_run(tmp_path)
    found = gather(survey(steps, RunOptions(prefix=str(tmp_path / "out"))), logs=True)
    states = {h.plan.label: h.status.state if h.status else None for h in found}
    assert states == {
        "prepare": StepState.SUCCESS, "tokenize": StepState.SUCCESS, "train": StepState.SUCCESS,
        "evaluate": StepState.FAILED, "publish": StepState.DEP_FAILED,
    }  # fmt: skip
    page = tmp_path / "report" / "report.html"
    assert write_report(str(page), found, title="a <real> run") == str(page)

    opened = browse(chromium, page.as_uri(), tmp_path / "browser")
    assert opened.console == []
    assert re.search(r'<body data-ready="5">', opened.dom), opened.dom[:500]
    for i, h in enumerate(found):
        assert f'id="step-{i}"' in opened.dom
        assert f">{h.plan.label}</text>" in opened.dom  # its box in the graph
    assert '<div id="tools" class="tools">' in opened.dom  # the script showed the tools
    assert "tok &lt;b&gt;&amp;" in opened.dom  # the config, escaped once
    assert "ValueError: this step is broken on purpose" in opened.dom
    assert 'File "' in opened.dom and "stepfns.py" in opened.dom  # the traceback's frames
    assert "Never ran (1)" in opened.dom and "local job" in opened.dom
    at = [h.plan.label for h in found].index("train")
    train_details = re.search(
        rf'<details class="step" id="step-{at}".*?</details>', opened.dom, re.S
    )
    assert train_details is not None and "<h4>resources</h4>" in train_details.group()
    assert "<h4>result</h4><pre>30</pre>" in train_details.group()
    train = next(h for h in found if h.plan.label == "train")
    if store_for(log_path(train.plan.output)).read(log_path(train.plan.output)) is not None:
        assert "line 29" in opened.dom  # the job's log tail, once jobs write log.txt
    check_screenshot(opened.png, GREEN, RED, ORANGE)

    # a link to a step opens its details; without JS every step is there all the same
    jumped = browse(chromium, page.as_uri() + "#step-1", tmp_path / "jump", screenshot=False)
    assert jumped.console == []
    assert re.search(r'<details class="step" id="step-1"[^>]* open=""', jumped.dom)
    scriptless = page.with_name("scriptless.html")
    scriptless.write_text(re.sub(r"<script>.*?</script>", "", page.read_text(), flags=re.S))
    plain = browse(chromium, scriptless.as_uri(), tmp_path / "nojs", screenshot=False)
    assert "data-ready" not in plain.dom and '<div id="tools" class="tools" hidden="">' in plain.dom
    assert all(f">{h.plan.label}</text>" in plain.dom for h in found)


@pytest.mark.slow
def test_a_sweep_report_plots_each_metric_in_chromium(chromium: str, tmp_path: Path) -> None:
    xs = [0.001, 0.01, 0.1, 1.0, 3.0]
    steps = [StepSpec("score", stepfns.scored, {"x": x}) for x in xs]
    run(steps, prefix=str(tmp_path / "out"))
    found = gather(survey(steps, RunOptions(prefix=str(tmp_path / "out"))), logs=True)
    rows = []
    for x, h in zip(xs, found, strict=True):
        value = load_result(h.plan.output)
        rows.append(PointResult([f"lr={x}"], PointStatus.RAN,
                                {"score.loss": value["loss"], "score.x": value["x"]}))  # fmt: skip
    rows.append(PointResult(["lr=10"], PointStatus.FAILED, {}, "score: ValueError: <diverged>"))
    page = tmp_path / "sweep.html"
    write_report(str(page), found, title="lr sweep", sweep=rows)

    opened = browse(chromium, page.as_uri(), tmp_path / "browser")
    assert opened.console == []
    assert f'data-ready="{len(found)}"' in opened.dom
    table = re.search(r'<table class="results">.*?</table>', opened.dom, re.S)
    assert table is not None and table.group().count("<tr>") == len(rows) + 1
    assert "lr=0.001" in table.group() and "&lt;diverged&gt;" in table.group()
    plots = re.findall(r'<svg class="plot".*?</svg>', opened.dom, re.S)
    assert len(plots) == 2  # score.loss and score.x
    assert all(p.count("<circle") == len(xs) and "lr (log)" in p for p in plots)
    assert "1 point(s) without a value" in opened.dom
    check_screenshot(opened.png, GREEN, RED, BLUE)


def test_a_steps_config_shows_its_references_as_step_names() -> None:
    """The records keep a reference as ``{"$step": identity}``; the page shows what the YAML
    said: ``${step:NAME}`` and its suffix."""
    up = StepSpec("up", stepfns.noop, {})
    down = StepSpec("down", stepfns.noop, {"data": up})
    config = {"data": {"$step": up.identity}, "files": {"$step": up.identity, "suffix": "/x"}}
    page = render(histories([up, down], info={"config": config, "where": "thread"}), title="t")
    assert "${step:up}" in page and "${step:up}/x" in page
    assert (
        "$step&quot;" not in page and up.identity not in page.split("<h4>config</h4>", 1)[1][:400]
    )
