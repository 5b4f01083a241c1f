"""The fixed-window neural language model in numpy: its weights, loss, gradients and optimiser.

Bengio et al. (2003): the previous ``context`` tokens are embedded, concatenated, passed
through one tanh hidden layer and projected to logits over the vocabulary; the loss is the
mean softmax cross-entropy of the next token. Forward and backward passes are written by hand
(float32); training uses Adam under a linear warm-up then cosine decay (``schedule``). The
steps that train and evaluate it are in experiments/train.py.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.floating[Any]]
Params = dict[str, Array]
PARAM_NAMES = ("embed", "w1", "b1", "w2", "b2")


def init_params(
    vocab_size: int,
    context: int,
    dim: int,
    hidden: int,
    rng: np.random.Generator,
    dtype: npt.DTypeLike = np.float32,
) -> Params:
    """Fresh weights: unit-variance embeddings, fan-in scaled hidden layer, small output."""
    return {
        "embed": rng.normal(0.0, 1.0, (vocab_size, dim)).astype(dtype),
        "w1": rng.normal(0.0, 1.0 / math.sqrt(context * dim), (context * dim, hidden)).astype(
            dtype
        ),
        "b1": np.zeros(hidden, dtype=dtype),
        "w2": rng.normal(0.0, 0.5 / math.sqrt(hidden), (hidden, vocab_size)).astype(dtype),
        "b2": np.zeros(vocab_size, dtype=dtype),
    }


def _hidden(params: Params, x: npt.NDArray[np.integer[Any]]) -> tuple[Array, Array]:
    """The concatenated context embeddings (batch, context * dim) and the hidden activations."""
    inputs = params["embed"][x].reshape(x.shape[0], -1)
    return inputs, np.tanh(inputs @ params["w1"] + params["b1"])


def _log_softmax_parts(logits: Array) -> tuple[Array, Array]:
    """Logits shifted by their row max (so that exp cannot overflow), and their exponentials."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return shifted, exp


def loss_and_grads(
    params: Params, x: npt.NDArray[np.integer[Any]], y: npt.NDArray[np.integer[Any]]
) -> tuple[float, Params]:
    """Mean cross-entropy of predicting ``y`` (batch,) from contexts ``x`` (batch, context),
    and its gradient with respect to every parameter (same keys and shapes as ``params``)."""
    batch = x.shape[0]
    rows = np.arange(batch)
    inputs, z = _hidden(params, x)
    shifted, exp = _log_softmax_parts(z @ params["w2"] + params["b2"])
    total = exp.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, y]))

    dlogits = exp / total  # softmax probabilities, then minus the one-hot target
    dlogits[rows, y] -= 1.0
    dlogits /= batch
    dz = dlogits @ params["w2"].T
    da = dz * (1.0 - z * z)  # tanh' = 1 - tanh^2
    dinputs = (da @ params["w1"].T).reshape(-1, params["embed"].shape[1])
    dembed = np.zeros_like(params["embed"])
    np.add.at(dembed, x.reshape(-1), dinputs)
    grads: Params = {
        "embed": dembed,
        "w1": inputs.T @ da,
        "b1": da.sum(axis=0),
        "w2": z.T @ dlogits,
        "b2": dlogits.sum(axis=0),
    }
    return loss, grads


def nll_sum(
    params: Params, x: npt.NDArray[np.integer[Any]], y: npt.NDArray[np.integer[Any]]
) -> float:
    """The summed negative log-likelihood (nats) of ``y`` given ``x``: forward pass only."""
    _, z = _hidden(params, x)
    shifted, exp = _log_softmax_parts(z @ params["w2"] + params["b2"])
    rows = np.arange(x.shape[0])
    return float(np.sum(np.log(exp.sum(axis=1), dtype=np.float64) - shifted[rows, y]))


def windows(
    stream: npt.NDArray[np.int64], positions: npt.NDArray[np.int64], context: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Contexts (len(positions), context) and targets (len(positions),) at ``positions``."""
    x = stream[positions[:, None] + np.arange(-context, 0)]
    return x, stream[positions]


def schedule(step: int, steps: int, warmup_steps: int) -> float:
    """The learning-rate multiplier at ``step``: linear warm-up, then cosine down to 0.1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


class Adam:
    """Adam (Kingma & Ba) with bias correction, updating the parameter arrays in place."""

    def __init__(
        self, params: Params, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def update(self, params: Params, grads: Params, lr: float) -> None:
        self.t += 1
        c1 = 1.0 - self.beta1**self.t
        c2 = 1.0 - self.beta2**self.t
        for key, grad in grads.items():
            m, v = self.m[key], self.v[key]
            m *= self.beta1
            m += (1.0 - self.beta1) * grad
            v *= self.beta2
            v += (1.0 - self.beta2) * (grad * grad)
            params[key] -= (lr / c1) * m / (np.sqrt(v / c2) + self.eps)
