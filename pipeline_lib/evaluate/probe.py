"""Liu et al. (2023)'s linear probe: a linear classifier trained on frozen features.

The original (`run_lp.py` + `BertForSequenceClassificationL`, liu2023 §5) freezes the encoder,
flattens the hidden states of positions 1..18 of a length-20 input into 18·d features, applies
dropout 0.1 and a `Linear(18·d, num_labels)`, and trains with torch AdamW (lr 1e-3, torch's
default weight decay 0.01 on every parameter, betas (0.9, 0.999), eps 1e-8), HF's `polynomial`
schedule (power 1, i.e. linear warmup over 50 updates then linear decay to lr_end = 1e-7 at the
last update), batch 512, 50 epochs (paper: 100 epochs, 5 seeds). Validation accuracy is logged
every epoch and the **last** one is reported (no best-epoch selection). This module reproduces
that on a precomputed feature matrix [n, f]; building the features from a model is the caller's
business.

Decisions:
* The schedule is the engine's `polynomial_schedule(lr, warmup, total, power=1, end=1e-7)`,
  evaluated at the number of updates already applied, like HF's LambdaLR (so the first update
  has lr 0). Unlike HF, warmup_steps >= total updates is rejected rather than silently never
  decaying.
* Weights are initialised as torch's `nn.Linear` does (kernel and bias ~ U(±1/sqrt(f))).
* Dropout is applied to the features only. The original also leaves the frozen encoder's own
  dropout on during probe training (`model.train()`); with features computed once, in eval mode,
  that extra noise is not reproduced (it makes the "frozen" features stochastic, which is
  arguably a bug; the probe's dropout already regularises).
* The last minibatch of an epoch may be partial (torch's DataLoader without drop_last). To keep
  one fixed shape for `lax.scan`, it is padded with weight-0 rows and its loss is the mean over
  its real rows, exactly the torch loss.

Speed: one `jax.jit`-compiled function runs a whole epoch (shuffle + `lax.scan` over the
minibatches + validation accuracy); Python only loops over epochs to log. Its static argument is
the hashable `ProbeConfig`, so the 5 seeds of a probe (same shapes and hyper-parameters) share
one compilation. Randomness: one seed splits into independent streams for the initialisation,
the per-epoch shuffles and the dropout masks, each folded with the epoch number, so a result
depends only on (data, hyper-parameters, seed).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pipeline_lib.train.optim import polynomial_schedule

#: HF `get_polynomial_decay_schedule_with_warmup`'s default final learning rate.
LR_END = 1e-7

Params = dict[str, jax.Array]


class ProbeError(ValueError):
    """Bad probe input (shapes, labels, hyper-parameters); the message names the argument."""


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """Final accuracies (after the last epoch: the original reports the last, not the best).

    history: one dict per epoch with epoch (1-based), train_loss (mean over the epoch, with
    dropout), valid_accuracy and learning_rate (of the epoch's last update). params: the learned
    kernel [f, c] and bias [c] as numpy arrays.
    """

    valid_accuracy: float
    train_accuracy: float  # without dropout
    history: tuple[dict[str, float], ...]
    params: dict[str, np.ndarray] = dataclasses.field(repr=False, default_factory=dict)


# --- pure numerics ---------------------------------------------------------------------------


def init_probe(key: jax.Array, num_features: int, num_classes: int) -> Params:
    """torch `nn.Linear` initialisation: kernel and bias ~ U(-1/sqrt(f), 1/sqrt(f))."""
    bound = 1.0 / math.sqrt(num_features)
    k_kernel, k_bias = jax.random.split(key)
    return {
        "kernel": jax.random.uniform(
            k_kernel, (num_features, num_classes), jnp.float32, -bound, bound
        ),
        "bias": jax.random.uniform(k_bias, (num_classes,), jnp.float32, -bound, bound),
    }


def probe_logits(params: Params, features: jax.Array) -> jax.Array:
    return features @ params["kernel"] + params["bias"]


def epoch_batches(
    key: jax.Array, num_examples: int, batch_size: int
) -> tuple[jax.Array, jax.Array]:
    """A shuffled epoch as (indices [steps, batch], weights [steps, batch]).

    steps = ceil(n / batch); the tail of the last batch is padded with index 0 and weight 0,
    so every example appears exactly once with weight 1.
    """
    steps = -(-num_examples // batch_size)
    padding = steps * batch_size - num_examples
    order = jax.random.permutation(key, num_examples)
    indices = jnp.concatenate([order, jnp.zeros((padding,), order.dtype)])
    weights = jnp.concatenate(
        [jnp.ones((num_examples,), jnp.float32), jnp.zeros((padding,), jnp.float32)]
    )
    return indices.reshape(steps, batch_size), weights.reshape(steps, batch_size)


def feature_dropout(key: jax.Array, features: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout (torch `nn.Dropout`, train mode): zero with prob `rate`, scale the rest."""
    if rate == 0.0:
        return features
    keep = jax.random.bernoulli(key, 1.0 - rate, features.shape)
    return jnp.where(keep, features / (1.0 - rate), 0.0)


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Everything static about a probe run: the jit cache key, so seeds reuse one compilation."""

    num_examples: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    epochs: int
    dropout: float

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.num_examples // self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def schedule(self):
        """HF `polynomial` with power 1: linear warmup, then linear decay to LR_END."""
        return polynomial_schedule(
            self.learning_rate, self.warmup_steps, self.total_steps, power=1.0, end_value=LR_END
        )

    def optimizer(self) -> optax.GradientTransformation:
        # torch AdamW defaults; decay on every parameter (the original passes no param groups).
        return optax.adamw(
            self.schedule(), b1=0.9, b2=0.999, eps=1e-8, weight_decay=self.weight_decay
        )


@functools.partial(jax.jit, static_argnames=("config",), donate_argnums=(0, 1))
def _run_epoch(
    params, opt_state, x, y, valid_x, valid_y, epoch, shuffle_root, dropout_root, *, config
):
    """One epoch of updates -> (params, opt_state, mean train loss, last lr, valid #correct)."""
    tx = config.optimizer()
    indices, weights = epoch_batches(
        jax.random.fold_in(shuffle_root, epoch), config.num_examples, config.batch_size
    )
    step_keys = jax.random.split(jax.random.fold_in(dropout_root, epoch), indices.shape[0])

    def step(carry, batch):
        params, opt_state = carry
        idx, w, key = batch

        def loss_fn(p):
            logits = probe_logits(p, feature_dropout(key, x[idx], config.dropout))
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, y[idx])
            return jnp.sum(nll * w) / jnp.sum(w)  # mean over the batch's real rows

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss * jnp.sum(w)

    (params, opt_state), loss_sums = jax.lax.scan(
        step, (params, opt_state), (indices, weights, step_keys)
    )
    # the rate of the epoch's last update (schedules are read at updates-applied - 1)
    last_lr = config.schedule()((epoch + 1) * config.steps_per_epoch - 1)
    return (
        params,
        opt_state,
        jnp.sum(loss_sums) / config.num_examples,
        last_lr,
        _num_correct(params, valid_x, valid_y),
    )


@jax.jit
def _num_correct(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.sum(jnp.argmax(probe_logits(params, x), axis=-1) == y)


def accuracy(params: Params, x: jax.Array, y: jax.Array) -> float:
    return float(_num_correct(params, x, y)) / int(y.shape[0])


# --- input checks ----------------------------------------------------------------------------


def _check_split(name: str, x: Any, y: Any, num_classes: int, num_features: int | None):
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2:
        raise ProbeError(f"{name}_x must be a 2-D [examples, features] array, got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ProbeError(f"{name}_x is empty (shape {x.shape})")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ProbeError(f"{name}_x must be numeric, got dtype {x.dtype}")
    if num_features is not None and x.shape[1] != num_features:
        raise ProbeError(f"{name}_x has {x.shape[1]} features but train_x has {num_features}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ProbeError(
            f"{name}_y must have shape ({x.shape[0]},) to match {name}_x, got {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ProbeError(f"{name}_y must hold integer class ids, got dtype {y.dtype}")
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        raise ProbeError(
            f"{name}_y[{bad[0]}] = {y[bad[0]]} is outside [0, num_classes={num_classes}) "
            f"({bad.size} such labels)"
        )
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ProbeError(f"{name}_x[{row}] has a non-finite feature")
    return jnp.asarray(x), jnp.asarray(y, jnp.int32)


# --- the trainer -----------------------------------------------------------------------------


def train_linear_probe(
    train_x,
    train_y,
    valid_x,
    valid_y,
    *,
    num_classes: int,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.01,
    epochs: int,
    batch_size: int,
    warmup_steps: int = 50,
    seed: int,
    dropout: float = 0.1,
) -> ProbeResult:
    """Train a linear classifier on frozen features [n, f] with labels [n] in [0, num_classes).

    AdamW + linear warmup/linear decay over epochs * ceil(n / batch_size) updates, feature
    dropout, a fresh seeded shuffle per epoch. Returns the final train/valid accuracies, the
    per-epoch history and the learned parameters (numpy).
    """
    hyper = dict(
        num_classes=num_classes,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        epochs=epochs,
        batch_size=batch_size,
        warmup_steps=warmup_steps,
        dropout=dropout,
    )
    for name, value in hyper.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ProbeError(f"{name} must be a number, got {value!r}")
    for name in ("num_classes", "epochs", "batch_size", "warmup_steps"):
        if not isinstance(hyper[name], numbers.Integral):
            raise ProbeError(f"{name} must be an integer, got {hyper[name]!r}")
    requirements = {
        "num_classes": (num_classes >= 2, "must be >= 2"),
        "learning_rate": (learning_rate > LR_END, f"must exceed the final rate {LR_END}"),
        "weight_decay": (weight_decay >= 0, "must be >= 0"),
        "epochs": (epochs >= 1, "must be >= 1"),
        "batch_size": (batch_size >= 1, "must be >= 1"),
        "warmup_steps": (warmup_steps >= 0, "must be >= 0"),
        "dropout": (0.0 <= dropout < 1.0, "must be in [0, 1)"),
    }
    for name, (ok, requirement) in requirements.items():
        if not ok:
            raise ProbeError(f"{name} {requirement}, got {hyper[name]!r}")

    x, y = _check_split("train", train_x, train_y, num_classes, None)
    vx, vy = _check_split("valid", valid_x, valid_y, num_classes, int(x.shape[1]))
    num_examples, num_features = int(x.shape[0]), int(x.shape[1])
    config = ProbeConfig(
        num_examples=num_examples,
        # batch > n: one batch of everything, as a DataLoader would give
        batch_size=min(int(batch_size), num_examples),
        learning_rate=float(learning_rate),
        weight_decay=float(weight_decay),
        warmup_steps=int(warmup_steps),
        epochs=int(epochs),
        dropout=float(dropout),
    )
    if config.warmup_steps >= config.total_steps:
        raise ProbeError(
            f"warmup_steps ({warmup_steps}) must be fewer than the total number of updates, "
            f"epochs * ceil(n / batch_size) = {epochs} * {config.steps_per_epoch} = "
            f"{config.total_steps}"
        )
    init_key, shuffle_root, dropout_root = jax.random.split(jax.random.key(seed), 3)
    params = init_probe(init_key, num_features, num_classes)
    opt_state = config.optimizer().init(params)

    history = []
    for epoch in range(config.epochs):
        params, opt_state, train_loss, last_lr, valid_correct = _run_epoch(
            params,
            opt_state,
            x,
            y,
            vx,
            vy,
            jnp.int32(epoch),
            shuffle_root,
            dropout_root,
            config=config,
        )
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(train_loss),
                "valid_accuracy": int(valid_correct) / int(vy.shape[0]),
                "learning_rate": float(last_lr),
            }
        )
    if not math.isfinite(history[-1]["train_loss"]):
        raise FloatingPointError(
            f"linear probe diverged (train loss {history[-1]['train_loss']}); lower learning_rate"
        )
    return ProbeResult(
        valid_accuracy=history[-1]["valid_accuracy"],
        train_accuracy=accuracy(params, x, y),
        history=tuple(history),
        params={k: np.asarray(v) for k, v in params.items()},
    )


__all__ = [
    "LR_END",
    "ProbeConfig",
    "ProbeError",
    "ProbeResult",
    "accuracy",
    "epoch_batches",
    "feature_dropout",
    "init_probe",
    "probe_logits",
    "train_linear_probe",
]
