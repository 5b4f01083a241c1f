"""Benchmarks of sweeps: merging a 1,000-point sweep into one DAG, and the cost per point
next to Hydra's basic launcher on the same sweep.

    python benchmarks/bench_sweep.py [--quick]

Targets (issues 5 and 14), each measured in real ``python -m confpipe`` processes:
- merging a 1,000-point sweep into one DAG (``-m ... dry_run=true``: compose, compile and
  merge every point, then plan 1,001 steps): <= 5 s for the whole command (issue 14; it
  was 10 s). Printed beside it: Hydra's compose of one point (the compose API, median of
  20) times 1,000, which is what composing every point anew would cost.
- (issue 14) a fully cached re-run of that sweep (every point's steps run before: the plan,
  1,001 status reads, the results table of 1,000 rows and its CSV and JSON): <= 3 s for
  the whole command, median of 3. Printed beside it as ratios: the import baseline
  (``python -c "import hydra, omegaconf, fsspec"``, median of 3 in the same run) and the
  merge above. The config caches (``confpipe.config.diskcache``) are in a folder of the
  benchmark's own, filled by the runs before.
- per-point overhead: the same sweep of two tiny thread steps (one shared) run with
  confpipe's launcher and with Hydra's basic launcher (``hydra/launcher=basic``: each point
  a separate launch, one after another), first run and fully cached re-run; the cost of a
  point is (time of an N-point sweep - time of a 1-point sweep) / (N - 1), printed in
  milliseconds and as the ratio basic / confpipe (informational, no limit); a cost below
  1 ms is lost in the runs' own variation and printed as "<1ms".
Exits 1 if a target is missed (``--quick``: 200 points, never fails).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

EXPERIMENT = """\
# @package _global_
steps:
  up:
    fn: tests.stepfns.add
    config: {a: 1, b: 2}
  score:
    fn: tests.stepfns.scored
    config: {x: 0.0, up: "${step:up}"}
"""


def confpipe(work: Path, *args: str) -> float:
    """Seconds one ``python -m confpipe --config-dir confs +experiment=bench ARGS`` took."""
    cmd = [PY, "-m", "confpipe", "--config-dir", "confs", "+experiment=bench", *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return took


def compose_per_point(work: Path) -> float:
    """Median seconds of one Hydra compose of a sweep point's config (the compose API)."""
    code = (
        "import statistics, sys, time\n"
        "from hydra import compose, initialize_config_dir\n"
        "from confpipe.config import schema\n"
        "from confpipe.config.compiler import register_resolver\n"
        "schema.register(); register_resolver()\n"
        f"with initialize_config_dir(config_dir={str(ROOT / 'conf')!r},"
        " version_base=None):\n"
        "    times = []\n"
        "    for i in range(21):\n"
        "        start = time.perf_counter()\n"
        f"        compose('config', overrides=['hydra.searchpath=[file://{work}/confs]',"
        " '+experiment=bench', f'steps.score.config.x={i}'])\n"
        "        times.append(time.perf_counter() - start)\n"
        "print(statistics.median(times[1:]))\n"
    )
    done = subprocess.run([PY, "-c", code], cwd=work, capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 points; never fails")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = str(ROOT)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as users run: with the bytecode cache
    points = 200 if args.quick else 1000
    per_point_n = 10 if args.quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["CONFPIPE_CACHE_DIR"] = str(work / "cache")  # the config caches: not the user's
        (work / "confs" / "experiment").mkdir(parents=True)
        (work / "confs" / "experiment" / "bench.yaml").write_text(EXPERIMENT)
        confpipe(work, "dry_run=true")  # warm the bytecode cache

        swept = ["-m", f"steps.score.config.x=range(0,{points})"]
        merge = confpipe(work, *swept, "dry_run=true")
        compose = compose_per_point(work)
        print(f"merge a {points}-point sweep into one DAG (dry run, whole command): {merge:.2f} s")
        print(
            f"  Hydra compose of one point: {compose * 1000:.0f} ms; x {points} points = "
            f"{compose * points:.1f} s ({compose * points / merge:.1f}x the whole merge)"
        )
        rerun, imports = cached_sweep(work, swept, points)
        print(
            f"cached re-run of the {points}-point sweep (whole command, median of 3): "
            f"{rerun:.2f} s ({rerun / imports:.1f}x the import baseline, {imports:.2f} s; "
            f"{rerun / merge:.2f}x the merge)"
        )

        rows = []
        for name, launcher in (("confpipe", []), ("basic", ["hydra/launcher=basic"])):
            per_point = []
            for n, start in ((1, 10_000), (per_point_n, 0)):  # 1 point, then N new points
                sweep = ["-m", f"steps.score.config.x=range({start},{start + n})", *launcher]
                prefix = f"prefix={work}/out-{name}"
                first = confpipe(work, *sweep, prefix)
                cached = statistics.median(confpipe(work, *sweep, prefix) for _ in range(3))
                per_point.append((first, cached))
            (one_first, one_cached), (n_first, n_cached) = per_point
            n = per_point_n - 1
            rows.append((name, (n_first - one_first) / n, (n_cached - one_cached) / n))
        print(f"\ncost of each point beyond the first, {per_point_n}-point sweep vs 1-point:")
        print(f"  {'launcher':10} {'first run':>10} {'cached':>10}")
        for name, first, cached in rows:
            print(f"  {name:10} {_ms(first):>10} {_ms(cached):>10}")
        (_, c_first, c_cached), (_, b_first, b_cached) = rows
        print(
            f"  basic / confpipe: {_ratio(b_first, c_first)} (first run), "
            f"{_ratio(b_cached, c_cached)} (cached)"
        )

    def scaled(full: float) -> float:
        """The 1,000-point limit for ``points`` points: start-up (the import baseline) is
        paid once whatever the size; the rest scales with the points."""
        return imports + (full - imports) * points / 1000

    targets = [
        (f"merge {points} points (s)", merge, scaled(5.0)),
        (f"cached re-run of {points} points (s)", rerun, scaled(3.0)),
    ]
    print(f"\n{'target':40}  {'measured':>9}  {'limit':>6}  result")
    failed = 0
    for name, value, limit in targets:
        ok = value <= limit
        failed += not ok
        print(f"{name:40}  {value:9.2f}  {limit:6.2f}  {'PASS' if ok else 'FAIL'}")
    print(
        f"\n{'FAIL' if failed else 'PASS'}: {len(targets) - failed} of {len(targets)} targets met"
    )
    if args.quick:
        return 0
    return 1 if failed else 0


def cached_sweep(work: Path, swept: list[str], points: int) -> tuple[float, float]:
    """Median seconds of a fully cached re-run of the sweep (after a first run that does the
    work), and of the import baseline, interleaved."""
    prefix = f"prefix={work}/out-cached"
    print(f"preparing: a first run of the {points}-point sweep ...", flush=True)
    confpipe(work, *swept, prefix)
    runs, imports = [], []
    for _ in range(3):
        runs.append(confpipe(work, *swept, prefix))
        start = time.perf_counter()
        subprocess.run([PY, "-c", "import hydra, omegaconf, fsspec"], check=True)
        imports.append(time.perf_counter() - start)
    return statistics.median(runs), statistics.median(imports)


NOISE = 0.001  # seconds: a per-point cost below this is lost in the runs' own variation


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms" if seconds >= NOISE else "<1ms"


def _ratio(basic: float, confpipe: float) -> str:
    """basic / confpipe; a confpipe cost below the noise counts as NOISE (so: at least)."""
    return f"{basic / confpipe:.1f}x" if confpipe >= NOISE else f">{basic / NOISE:.0f}x"


if __name__ == "__main__":
    sys.exit(main())
