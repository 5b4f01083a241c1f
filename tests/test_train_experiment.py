"""The train experiment: its numpy language model, on small synthetic token shards, and its YAML."""

from __future__ import annotations

import importlib
import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest

from experiments import lm
from experiments import train as exp
from experiments.lm import init_params, loss_and_grads
from experiments.train import evaluate, train

CONF = Path(__file__).parents[1] / "conf/experiment/train.yaml"
VOCAB = 64
EOS = 0


def write_token_shards(root: Path, docs_per_shard: list[int], seed: int = 0) -> str:
    """Token shards in tokenize's format: a learnable stream (mostly ``next = 3 * prev + 1``
    modulo the vocabulary, with some noise), each document ended by the eos id."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    shards = []
    for n, docs in enumerate(docs_per_shard):
        flat: list[int] = []
        lengths = []
        for _ in range(docs):
            length = int(rng.integers(50, 150))
            doc = [int(rng.integers(1, VOCAB))]
            for _ in range(length - 1):
                nxt = (3 * doc[-1] + 1) % VOCAB
                if nxt == EOS or rng.random() < 0.2:
                    nxt = int(rng.integers(1, VOCAB))
                doc.append(nxt)
            flat += [*doc, EOS]
            lengths.append(len(doc) + 1)
        tokens = np.array(flat, dtype=np.uint16)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        names = {"tokens": f"tokens-{n:05d}.npy", "offsets": f"offsets-{n:05d}.npy"}
        np.save(root / names["tokens"], tokens)
        np.save(root / names["offsets"], offsets)
        shards.append(
            {
                "source": f"shard-{n:05d}.jsonl",
                "tokens_file": names["tokens"],
                "offsets_file": names["offsets"],
                "documents": docs,
                "tokens": int(tokens.size),
            }
        )
    index = {
        "dtype": "uint16",
        "eos_token": "<|endoftext|>",
        "eos_id": EOS,
        "vocab_size": VOCAB,
        "shards": shards,
    }
    (root / "index.json").write_text(json.dumps(index))
    return str(root)


@pytest.fixture
def tokens(tmp_path: Path) -> str:
    return write_token_shards(tmp_path / "tokens", [30, 30, 20])


SMALL = {"steps": 150, "batch_size": 64, "context": 3, "dim": 16, "hidden": 32, "lr": 1e-2}


def test_loss_goes_down_and_outputs_are_written(tmp_path: Path, tokens: str) -> None:
    out = tmp_path / "train"
    result = train(str(out), tokens=tokens, **SMALL)
    assert set(result) >= {"train_loss_first", "train_loss_last", "steps", "tokens_seen", "seconds"}
    assert result["steps"] == 150
    assert result["tokens_seen"] == 150 * 64
    assert result["vocab_size"] == VOCAB
    assert result["train_loss_first"] == pytest.approx(math.log(VOCAB), abs=0.3)
    # the stream is ~80% deterministic: the model must get well below a uniform guess
    assert result["train_loss_last"] < result["train_loss_first"] - 1.5
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["loss"]) == 150 and len(metrics["lr"]) == 150
    assert max(metrics["lr"]) == pytest.approx(1e-2)
    meta = json.loads((out / "model.json").read_text())
    assert meta["vocab_size"] == VOCAB and meta["context"] == 3
    with np.load(out / "model.npz") as npz:
        assert npz["embed"].shape == (VOCAB, 16)
        assert npz["w2"].shape == (32, VOCAB)
    json.dumps(result)  # the step's result must be JSON-serializable


def test_training_is_deterministic_for_a_seed(tmp_path: Path, tokens: str) -> None:
    config = {**SMALL, "steps": 30}
    first = train(str(tmp_path / "a"), tokens=tokens, **config)
    second = train(str(tmp_path / "b"), tokens=tokens, **config)
    other = train(str(tmp_path / "c"), tokens=tokens, **config, seed=1)
    assert first["train_loss_last"] == second["train_loss_last"]
    with np.load(tmp_path / "a/model.npz") as a, np.load(tmp_path / "b/model.npz") as b:
        for name in lm.PARAM_NAMES:
            np.testing.assert_array_equal(a[name], b[name])
    assert (
        json.loads((tmp_path / "a/metrics.json").read_text())["loss"]
        == json.loads((tmp_path / "b/metrics.json").read_text())["loss"]
    )
    assert other["train_loss_last"] != first["train_loss_last"]


def test_eval_reports_held_out_loss_and_perplexity(tmp_path: Path, tokens: str) -> None:
    model = str(tmp_path / "train")
    trained = train(model, tokens=tokens, **SMALL, holdout_fraction=0.2)
    result = evaluate(str(tmp_path / "eval"), model=model, tokens=tokens)
    assert math.isfinite(result["eval_loss"])
    assert result["perplexity"] == pytest.approx(math.exp(result["eval_loss"]), rel=1e-4)
    assert result["eval_loss"] < math.log(VOCAB) - 1.0  # it generalises to held-out tokens
    stream, _ = exp.read_tokens(tokens)
    held_out = stream.size - round(stream.size * 0.8)
    assert result["tokens"] == held_out - SMALL["context"]
    assert trained["train_tokens"] == stream.size - held_out
    assert json.loads((tmp_path / "eval/metrics.json").read_text())["tokens"] == result["tokens"]

    capped = evaluate(str(tmp_path / "e2"), model=f"{model}/model.npz", tokens=tokens, max_tokens=7)
    assert capped["tokens"] == 7
    # the mean over batches equals the mean over one batch
    one = evaluate(str(tmp_path / "e3"), model=model, tokens=tokens, batch_size=100_000)
    assert one["eval_loss"] == pytest.approx(result["eval_loss"], abs=1e-4)
    with pytest.raises(ValueError, match="larger than the model's"):
        evaluate(str(tmp_path / "e4"), model=model, tokens=tokens, holdout_fraction=0.5)


def test_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(3)
    vocab, context, dim, hidden, batch = 7, 3, 4, 5, 6
    params = init_params(vocab, context, dim, hidden, rng, dtype=np.float64)
    for name in ("b1", "b2"):  # non-zero biases, so their gradients are exercised too
        params[name] = rng.normal(0.0, 0.5, params[name].shape)
    x = rng.integers(0, vocab, size=(batch, context))
    x[0, :2] = x[1, 0] = 2  # a token repeated within and across contexts: summed gradients
    y = rng.integers(0, vocab, size=batch)
    loss, grads = loss_and_grads(params, x, y)
    assert set(grads) == set(params)
    eps = 1e-6
    for name, value in params.items():
        assert grads[name].shape == value.shape
        numeric = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            saved = value[i]
            value[i] = saved + eps
            plus, _ = loss_and_grads(params, x, y)
            value[i] = saved - eps
            minus, _ = loss_and_grads(params, x, y)
            value[i] = saved
            numeric[i] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)
    # and the forward-only sum agrees with the mean loss
    assert lm.nll_sum(params, x, y) == pytest.approx(loss * batch)


def test_vocab_size_from_a_tokenizer_and_bad_configs(tmp_path: Path, tokens: str) -> None:
    tok_mod = pytest.importorskip("tokenizers")
    tok = tok_mod.Tokenizer(tok_mod.models.BPE())
    tok.add_special_tokens(["<|endoftext|>"])
    tok.add_tokens([f"t{i}" for i in range(99)])  # 100 ids in all
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok/tokenizer.json"))
    for ref in (str(tmp_path / "tok"), str(tmp_path / "tok/tokenizer.json")):
        result = train(str(tmp_path / "m"), tokens=tokens, vocab_size_from=ref, steps=2)
        assert result["vocab_size"] == 100

    small = tmp_path / "small/tokenizer.json"
    small.parent.mkdir()
    small_tok = tok_mod.Tokenizer(tok_mod.models.BPE())
    small_tok.add_tokens(["a", "b"])
    small_tok.save(str(small))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        train(str(tmp_path / "m"), tokens=tokens, vocab_size_from=str(small), steps=1)
    for bad in ({"holdout_fraction": 0.0}, {"lr": 0.0}, {"steps": 0}, {"context": 0}):
        with pytest.raises(ValueError):
            train(str(tmp_path / "m"), tokens=tokens, **bad)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match=r"index\.json"):
        train(str(tmp_path / "m"), tokens=str(tmp_path / "nowhere"))


def test_memory_urls(tokens: str) -> None:
    import uuid

    import fsspec

    root = f"memory://train-{uuid.uuid4().hex[:8]}"
    try:
        train(f"{root}/model", tokens=tokens, **{**SMALL, "steps": 5})
        result = evaluate(f"{root}/eval", model=f"{root}/model", tokens=tokens)
        assert math.isfinite(result["eval_loss"])
    finally:
        fs, path = fsspec.core.url_to_fs(root)
        if fs.exists(path):
            fs.rm(path, recursive=True)


# --------------------------------------------------------------------------------------------
# the experiment's config


def test_experiment_yaml_composes_and_compiles() -> None:
    hydra = pytest.importorskip("hydra")
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from confpipe.config import compiler, schema

    assert CONF.read_text().startswith("# @package _global_\n")
    schema.register()
    compiler.register_resolver()
    GlobalHydra.instance().clear()
    with hydra.initialize_config_dir(config_dir=str(CONF.parents[1]), version_base=None):
        cfg = hydra.compose("config", overrides=["+experiment=train", "steps.train.config.lr=1e-3"])
    GlobalHydra.instance().clear()
    steps = cfg.steps
    assert list(steps) == ["download", "train_tokenizer", "tokenize", "train", "eval"]
    assert steps.train.config.lr == 1e-3
    for name in ("train", "eval"):
        fn = getattr(exp, steps[name].fn.rpartition(".")[2])
        params = inspect.signature(fn).parameters
        assert set(steps[name].config) <= set(params) - {"output_path"}, name
        # every default in the YAML is the function's own default (one source of truth)
        for key, value in OmegaConf.to_container(steps[name].config).items():  # type: ignore[union-attr]
            if key not in ("tokens", "model", "lr"):
                assert params[key].default == value, f"{name}.{key}"

    specs = {spec.name: spec for spec in compiler.compile_steps(cfg)}
    assert list(specs) == ["download", "train_tokenizer", "tokenize", "train", "eval"]
    assert [dep.name for dep in specs["train"].dependencies] == ["tokenize"]
    assert {dep.name for dep in specs["eval"].dependencies} == {"train", "tokenize"}
    assert specs["train"].resources is not None and specs["train"].resources.cpu == 1
    assert specs["train"].config["tokens"] is specs["tokenize"]


def test_every_step_function_is_defined_in_the_module_its_yaml_names() -> None:
    """A step's hash includes its function's ``module.qualname``: moving a step function (or
    re-exporting it from a helper module) would change every hash and orphan users' caches."""
    from omegaconf import OmegaConf

    for yaml in ("tokenize.yaml", "train.yaml"):
        for name, step in OmegaConf.load(CONF.parent / yaml).steps.items():
            module, _, qualname = step.fn.rpartition(".")
            fn = getattr(importlib.import_module(module), qualname)
            assert (fn.__module__, fn.__qualname__) == (module, qualname), name
