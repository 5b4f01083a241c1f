"""Equal values hash equal: a step's config is coerced to its function's annotations first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from confpipe import StepSpec, run
from confpipe.config.compiler import compile_steps
from tests import coercefns


def spec(**config: object) -> StepSpec:
    return StepSpec("s", coercefns.scaled, config)


def test_an_int_for_a_float_parameter_hashes_as_the_float() -> None:
    assert spec(scale=1).hash == spec(scale=1.0).hash
    assert spec(scale=1).config["scale"] == 1.0 and type(spec(scale=1).config["scale"]) is float


@pytest.mark.parametrize(
    ("given", "same_as"),
    [
        ({"weights": [1, 2.5]}, {"weights": [1.0, 2.5]}),
        ({"by_name": {"a": 1}}, {"by_name": {"a": 1.0}}),
        ({"maybe": 3}, {"maybe": 3.0}),
        ({"pair": [1, 2]}, {"pair": [1.0, 2]}),
        ({"nested": {"a": [1, 2]}}, {"nested": {"a": [1.0, 2.0]}}),
    ],
)
def test_ints_inside_float_containers_and_optionals_are_coerced(
    given: dict[str, object], same_as: dict[str, object]
) -> None:
    assert spec(**given).hash == spec(**same_as).hash


@pytest.mark.parametrize(
    ("given", "other"),
    [
        ({"count": 1}, {"count": 1.0}),  # an int parameter: not coerced
        ({"either": 1}, {"either": 1.0}),  # int | float admits the int as it is
        ({"anything": 1}, {"anything": 1.0}),
        ({"flag": True}, {"flag": 1.0}),  # a bool is not an int here
        ({"scale": True}, {"scale": 1.0}),
    ],
)
def test_values_a_float_is_not_declared_for_keep_their_type(
    given: dict[str, object], other: dict[str, object]
) -> None:
    assert spec(**given).hash != spec(**other).hash


def test_a_function_without_annotations_hashes_what_it_is_given() -> None:
    assert StepSpec("s", coercefns.untyped, {"scale": 1}).config["scale"] == 1
    assert (
        StepSpec("s", coercefns.untyped, {"scale": 1}).hash
        != StepSpec("s", coercefns.untyped, {"scale": 1.0}).hash
    )


def test_a_yaml_float_and_an_int_override_compile_to_one_step() -> None:
    def compiled(scale: object) -> StepSpec:
        cfg = {"steps": {"s": {"fn": "tests.coercefns.scaled", "config": {"scale": scale}}}}
        (step,) = compile_steps(cfg)
        return step

    assert compiled(1).hash == compiled(1.0).hash


def test_the_shipped_experiments_keep_their_hashes() -> None:
    from hydra import compose, initialize_config_dir

    from confpipe.config import schema
    from confpipe.config.search import shipped_conf

    schema.register()
    with initialize_config_dir(config_dir=shipped_conf(), version_base=None):
        cfg = compose("config", overrides=["+experiment=tokenize"])
    hashes = {s.name: s.hash for s in compile_steps(cfg)}
    assert hashes == {
        "download": "53aef6fe237b",
        "train_tokenizer": "1026ad38daa5",
        "tokenize": "cfc63ccb8786",
    }


def test_a_cache_miss_from_an_int_once_hashed_names_the_key(tmp_path: Path) -> None:
    """An output made before coercion (its record says ``scale: 1``) re-runs once; the plan
    says why: ``scale: 1 -> 1.0``, not "no previous output"."""
    run(spec(scale=1.0), prefix=str(tmp_path))
    (info_path,) = tmp_path.glob("s-*/.confpipe/info.json")
    info = json.loads(info_path.read_text())
    info["hash_inputs"]["config"]["scale"] = 1  # as confpipe hashed it before
    info_path.write_text(json.dumps(info))
    folder = info_path.parents[1]
    folder.rename(tmp_path / "s-0123456789ab")
    (plan,) = run(spec(scale=1), prefix=str(tmp_path), dry_run=True).plan
    assert plan.reason == "changed: scale: 1 -> 1.0"


@pytest.mark.slow
def test_an_int_override_of_a_float_in_yaml_is_cached(tmp_path: Path) -> None:
    from tests.test_cli import cli

    confs = tmp_path / "confs" / "experiment"
    confs.mkdir(parents=True)
    (confs / "scaled.yaml").write_text(
        "# @package _global_\nsteps:\n  s:\n    fn: tests.coercefns.scaled\n"
        "    config: {scale: 1.0, weights: [0.5, 2.0]}\n"
    )
    first = cli("--config-dir", "confs", "+experiment=scaled", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = cli(
        "--config-dir", "confs", "+experiment=scaled", "steps.s.config.scale=1",
        "steps.s.config.weights=[0.5,2]", cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "1 cached, 0 to run" in again.stderr
