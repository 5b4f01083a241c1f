"""Train experiment: a small numpy language model on the tokenize experiment's token shards.

The two steps that ``conf/experiment/train.yaml`` adds after download, train_tokenizer and
tokenize (``python -m confpipe +experiment=train``)::

    train  tokens-NNNNN.npy + index.json  ->  model.npz, model.json, metrics.json
    eval   model.npz + tokens             ->  metrics.json (held-out loss and perplexity)

The model is a fixed-window neural language model (Bengio et al., 2003): the previous
``context`` tokens are embedded (``dim`` numbers each), concatenated, passed through one tanh
hidden layer (``hidden`` units) and projected to logits over the vocabulary; the loss is the
mean softmax cross-entropy of the next token. Forward and backward passes are written by hand
in numpy (float32), optimised with Adam under a linear warm-up then cosine decay of the
learning rate. No GPU, no framework: the defaults train in well under a minute on one core.

Data split: the token shards are concatenated in ``index.json`` order into one stream (each
document followed by its eos id, as tokenize wrote it). The first ``1 - holdout_fraction`` of
the stream is training data, the rest is held out; a prediction only ever sees context from
its own part. Training samples ``batch_size`` random positions per step from the training
part (numpy ``default_rng(seed)``), so a run is deterministic given its config.

File formats
------------
``model.npz``
    The weights (float32): ``embed`` (vocab, dim), ``w1`` (context * dim, hidden), ``b1``
    (hidden), ``w2`` (hidden, vocab), ``b2`` (vocab).
``model.json``
    What evaluating the model needs: vocab_size, context, dim, hidden, holdout_fraction, and
    the tokens path it was trained on.
``metrics.json`` (train)
    The loss curve: ``loss`` (training loss of every step, in order), ``lr`` (every step's
    learning rate) and the returned summary.
``metrics.json`` (eval)
    The returned summary.

Every path may be a local directory or an fsspec URL, like the tokenize experiment's.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from typing import Any

import numpy as np
import numpy.typing as npt
from fsspec.core import url_to_fs

from experiments.bpe import load_tokenizer
from experiments.lm import (
    PARAM_NAMES,
    Adam,
    Params,
    init_params,
    loss_and_grads,
    nll_sum,
    schedule,
    windows,
)
from experiments.stepio import check, join, prepare_output, write_json

log = logging.getLogger(__name__)

__all__ = ["train", "evaluate"]

MODEL_FILE = "model.npz"
MODEL_META = "model.json"
METRICS_FILE = "metrics.json"


# --------------------------------------------------------------------------------------------
# train


def train(
    output_path: str,
    tokens: str,
    vocab_size_from: str | None = None,
    lr: float = 3e-3,
    steps: int = 1500,
    batch_size: int = 256,
    context: int = 4,
    dim: int = 64,
    hidden: int = 256,
    warmup_steps: int = 30,
    seed: int = 0,
    holdout_fraction: float = 0.05,
) -> dict[str, Any]:
    """Train the fixed-window language model on a tokenize step's output; save it.

    Config keys:
        tokens: a ``tokenize`` step's output path (``${step:tokenize}``): its
            ``index.json`` and ``tokens-NNNNN.npy`` files.
        vocab_size_from: where the vocabulary size comes from: a ``tokenizer.json`` path or a
            ``train_tokenizer`` step's output (``${step:train_tokenizer}``); null: the
            ``vocab_size`` that tokenize recorded in ``index.json``.
        lr: peak Adam learning rate (reached after ``warmup_steps``, then cosine-decayed
            to a tenth of it at the last step).
        steps: optimisation steps.
        batch_size: next-token predictions per step (random positions of the training part).
        context: tokens of context the model sees before each prediction.
        dim: embedding size per token.
        hidden: units of the tanh hidden layer.
        warmup_steps: steps of linear learning-rate warm-up.
        seed: seeds the initial weights and the batch positions.
        holdout_fraction: the last fraction of the token stream, never trained on (``eval``
            measures it).

    Writes model.npz, model.json and metrics.json (the per-step loss curve) under
    output_path. Returns: train_loss_first / train_loss_last (mean training loss of the first /
    last ``max(1, min(50, steps // 10))`` steps), steps, tokens_seen (predictions trained on:
    steps * batch_size), seconds, parameters, vocab_size, train_tokens (size of the training
    part).
    """
    start = time.perf_counter()
    check(lr > 0, f"lr must be > 0, got {lr}")
    check(steps >= 1, f"steps must be >= 1, got {steps}")
    check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    check(context >= 1, f"context must be >= 1, got {context}")
    check(dim >= 1, f"dim must be >= 1, got {dim}")
    check(hidden >= 1, f"hidden must be >= 1, got {hidden}")
    check(warmup_steps >= 0, f"warmup_steps must be >= 0, got {warmup_steps}")
    _check_fraction(holdout_fraction)

    stream, index_vocab = read_tokens(tokens)
    vocab_size = index_vocab if vocab_size_from is None else tokenizer_vocab_size(vocab_size_from)
    _check_ids(stream, vocab_size, tokens)
    train_part, _ = split(stream, holdout_fraction)
    check(
        train_part.size > context,
        f"the training part has {train_part.size} tokens: need more than context={context}",
    )

    rng = np.random.default_rng(seed)
    params = init_params(vocab_size, context, dim, hidden, rng)
    adam = Adam(params)
    losses: list[float] = []
    rates: list[float] = []
    for step in range(steps):
        positions = rng.integers(context, train_part.size, size=batch_size)
        x, y = windows(train_part, positions, context)
        loss, grads = loss_and_grads(params, x, y)
        rate = lr * schedule(step, steps, warmup_steps)
        adam.update(params, grads, rate)
        losses.append(loss)
        rates.append(rate)
        if not math.isfinite(loss):
            raise FloatingPointError(f"train: the loss became {loss} at step {step}; lower lr")
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:  # ten lines a run
            log.info("step %d/%d: loss %.4f, lr %.3g", step + 1, steps, loss, rate)

    fs, root = prepare_output(output_path)
    buf = io.BytesIO()
    arrays: dict[str, Any] = dict(params)  # (typed Any: savez's stub also has allow_pickle)
    np.savez(buf, allow_pickle=False, **arrays)
    fs.pipe_file(join(root, MODEL_FILE), buf.getvalue())
    meta = {
        "vocab_size": vocab_size,
        "context": context,
        "dim": dim,
        "hidden": hidden,
        "holdout_fraction": holdout_fraction,
        "tokens": tokens,
        "seed": seed,
    }
    write_json(fs, join(root, MODEL_META), meta)
    k = max(1, min(50, steps // 10))
    summary: dict[str, Any] = {
        "train_loss_first": round(float(np.mean(losses[:k])), 4),
        "train_loss_last": round(float(np.mean(losses[-k:])), 4),
        "steps": steps,
        "tokens_seen": steps * batch_size,
        "seconds": round(time.perf_counter() - start, 3),
        "parameters": int(sum(p.size for p in params.values())),
        "vocab_size": vocab_size,
        "train_tokens": int(train_part.size),
    }
    curve = {"loss": [round(v, 5) for v in losses], "lr": [float(f"{r:.6g}") for r in rates]}
    write_json(fs, join(root, METRICS_FILE), {**summary, **curve})
    return summary


# --------------------------------------------------------------------------------------------
# evaluate


def evaluate(
    output_path: str,
    model: str,
    tokens: str,
    holdout_fraction: float | None = None,
    max_tokens: int | None = None,
    batch_size: int = 2048,
) -> dict[str, Any]:
    """Held-out loss and perplexity of a trained model on the held-out part of a token stream.

    Config keys:
        model: a ``train`` step's output path (``${step:train}``) or its ``model.npz``.
        tokens: a ``tokenize`` step's output path (``${step:tokenize}``), normally the one the
            model was trained on.
        holdout_fraction: the held-out part is the last this-fraction of the token stream;
            null: the model's own (from model.json). Larger than the model's is refused (it
            would score tokens the model trained on).
        max_tokens: score only the first this-many held-out predictions (null: all).
        batch_size: predictions per forward pass (memory: batch_size * vocab floats).

    Every held-out token that has ``context`` held-out tokens before it is predicted. Writes
    metrics.json under output_path. Returns: eval_loss (mean nats per token), perplexity
    (exp(eval_loss)), tokens (predictions scored), seconds.
    """
    start = time.perf_counter()
    check(max_tokens is None or max_tokens >= 1, f"max_tokens must be >= 1, got {max_tokens}")
    check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    params, meta = load_model(model)
    if holdout_fraction is None:
        holdout_fraction = float(meta["holdout_fraction"])
    _check_fraction(holdout_fraction)
    check(
        holdout_fraction <= meta["holdout_fraction"],
        f"holdout_fraction={holdout_fraction} is larger than the model's "
        f"({meta['holdout_fraction']}): the extra part was trained on",
    )
    context = int(meta["context"])
    stream, _ = read_tokens(tokens)
    _check_ids(stream, int(meta["vocab_size"]), tokens)
    _, held_out = split(stream, holdout_fraction)
    count = held_out.size - context
    if max_tokens is not None:
        count = min(count, max_tokens)
    check(
        count >= 1,
        f"the held-out part has {held_out.size} tokens: need more than context={context}",
    )
    total = 0.0
    for lo in range(0, count, batch_size):
        positions = np.arange(context + lo, context + min(count, lo + batch_size))
        x, y = windows(held_out, positions, context)
        total += nll_sum(params, x, y)
    loss = total / count
    summary: dict[str, Any] = {
        "eval_loss": round(loss, 5),
        "perplexity": round(math.exp(loss), 4),
        "tokens": count,
        "seconds": round(time.perf_counter() - start, 3),
    }
    log.info("eval: loss %.4f (perplexity %.2f) over %d tokens", loss, math.exp(loss), count)
    fs, root = prepare_output(output_path)
    write_json(fs, join(root, METRICS_FILE), {**summary, "model": model, "data": tokens})
    return summary


def load_model(model: str) -> tuple[Params, dict[str, Any]]:
    """The weights and model.json of a train step's output dir (or its model.npz path)."""
    fs, path = url_to_fs(model)
    root = path[: -len(MODEL_FILE)].rstrip("/") if path.endswith(".npz") else path
    with np.load(io.BytesIO(fs.cat_file(join(root, MODEL_FILE))), allow_pickle=False) as npz:
        params: Params = {name: npz[name] for name in PARAM_NAMES}
    meta: dict[str, Any] = json.loads(fs.cat_file(join(root, MODEL_META)))
    return params, meta


# --------------------------------------------------------------------------------------------
# data


def read_tokens(tokens: str) -> tuple[npt.NDArray[np.int64], int]:
    """A tokenize output's shards as one int64 stream (index.json order), and its vocab size."""
    fs, root = url_to_fs(tokens)
    try:
        index = json.loads(fs.cat_file(join(root, "index.json")))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no index.json under tokens={tokens!r}: is it a tokenize step's output?"
        ) from None
    parts = [
        np.load(io.BytesIO(fs.cat_file(join(root, shard["tokens_file"]))), allow_pickle=False)
        for shard in index["shards"]
    ]
    stream = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return stream, int(index["vocab_size"])


def split(
    stream: npt.NDArray[np.int64], holdout_fraction: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The training part (first ``1 - holdout_fraction``) and the held-out rest."""
    cut = round(stream.size * (1.0 - holdout_fraction))
    return stream[:cut], stream[cut:]


def tokenizer_vocab_size(ref: str) -> int:
    """The vocabulary size (added tokens included) of a tokenizer.json or its step's dir."""
    return int(load_tokenizer(ref).get_vocab_size(with_added_tokens=True))


def _check_ids(stream: npt.NDArray[np.int64], vocab_size: int, tokens: str) -> None:
    if stream.size and int(stream.max()) >= vocab_size:
        raise ValueError(
            f"tokens={tokens!r} has id {int(stream.max())}, outside the vocabulary of "
            f"{vocab_size}: vocab_size_from names another tokenizer?"
        )


def _check_fraction(holdout_fraction: float) -> None:
    check(
        0.0 < holdout_fraction < 1.0,
        f"holdout_fraction must be between 0 and 1 (exclusive), got {holdout_fraction}",
    )
