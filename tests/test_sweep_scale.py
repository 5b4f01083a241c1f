"""Sweeps at scale: what makes 1,000 points cheap keeps each point's own config and name."""

from __future__ import annotations

import copy
import pickle

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from confpipe.cli.sweepend import point_names
from confpipe.config import schema
from confpipe.config.compiler import compile_steps, register_resolver
from confpipe.config.functions import Functions
from confpipe.config.search import shipped_conf


def test_points_are_named_by_what_varies_among_a_thousand() -> None:
    every = [["+experiment=bench", f"steps.score.config.x={i}", "prefix=out"] for i in range(1000)]
    every[7] = [*every[7], "seed=1"]
    names = point_names(every)
    assert names[0] == "x=0" and names[999] == "x=999"
    assert names[7] == "x=7 seed=1"
    assert point_names([["a=1"], ["a=1"]]) == ["", ""]


def test_a_point_config_unpickled_from_the_sweep_config_equals_its_deep_copy() -> None:
    schema.register()
    register_resolver()
    with initialize_config_dir(config_dir=shipped_conf(), version_base=None):
        cfg = compose("config", overrides=["+experiment=tokenize"], return_hydra_config=True)
    base = copy.deepcopy(cfg)
    with open_dict(base):
        del base["hydra"]
    copied, unpickled = copy.deepcopy(base), pickle.loads(pickle.dumps(base))
    assert OmegaConf.to_yaml(copied) == OmegaConf.to_yaml(unpickled)
    assert OmegaConf.get_type(unpickled) is OmegaConf.get_type(copied)
    assert OmegaConf.is_struct(unpickled) == OmegaConf.is_struct(copied)
    unpickled.steps.train_tokenizer.config.vocab_size = 7  # each point's config is its own
    assert base.steps.train_tokenizer.config.vocab_size != 7


def test_the_points_of_a_sweep_share_their_step_functions_checked_once() -> None:
    functions = Functions()
    steps = {"steps": {"a": {"fn": "tests.stepfns.add", "config": {"a": 1, "b": 2}}}}
    first = compile_steps(steps, check_resources=False, functions=functions)
    steps["steps"]["a"]["config"]["a"] = 5
    second = compile_steps(steps, check_resources=False, functions=functions)
    assert first[0].fn is second[0].fn and len(functions._params) == 1
    assert first[0].identity != second[0].identity
