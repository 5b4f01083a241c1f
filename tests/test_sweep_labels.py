"""How the display names a sweep step's point: the point's swept values, or how many share it."""

from __future__ import annotations

from confpipe.cli.results import Point
from confpipe.cli.sweep import point_labels
from confpipe.engine.spec import StepSpec
from tests import stepfns


def test_a_sweep_step_is_labelled_with_its_swept_values_or_the_points_sharing_it() -> None:
    data = StepSpec("data", stepfns.add, {"a": 0, "b": 0})
    points = []
    for lr, seed in (("1e-3", 0), ("3e-4", 0), ("3e-4", 1)):
        train = StepSpec("train", stepfns.add, {"a": data, "b": seed}, version=lr)
        overrides = ["+experiment=train", f"steps.train.config.lr={lr}", f"seed={seed}"]
        points.append(Point(overrides, [data, train], {}))
    found = point_labels(points)
    assert found.count == 3
    assert found.labels[data.identity] == "shared by 3 points"
    trains = [p.steps[1].identity for p in points]
    assert [found.labels[t] for t in trains] == [
        "lr=1e-3 seed=0", "lr=3e-4 seed=0", "lr=3e-4 seed=1",
    ]  # fmt: skip


def test_keys_whose_last_part_is_ambiguous_are_shown_whole() -> None:
    points = [
        Point([f"steps.a.config.n={n}", f"steps.b.config.n={n}"], [step], {})
        for n, step in ((1, StepSpec("a", stepfns.add, {"a": 1, "b": 1})),
                        (2, StepSpec("a", stepfns.add, {"a": 2, "b": 1})))
    ]  # fmt: skip
    labels = point_labels(points).labels
    assert sorted(labels.values()) == [
        "steps.a.config.n=1 steps.b.config.n=1", "steps.a.config.n=2 steps.b.config.n=2",
    ]  # fmt: skip


def test_a_single_point_needs_no_label() -> None:
    step = StepSpec("a", stepfns.add, {"a": 1, "b": 1})
    assert point_labels([Point(["x=1"], [step], {})]).labels == {}
