"""Optimizers, learning-rate schedules and the token loss: pure functions over pytrees.

Two recipes are reproduced (see the reference notes):

* Wu et al. 2022 / T5X pre-training (wu2022 §3.2): Adafactor (decay_rate 0.8, update clipping
  at RMS 1.0, relative step size via parameter scale, no momentum, eps 1e-30, factored second
  moments for dims >= 128), `rsqrt` schedule lr = 1/sqrt(max(step, 10000)), token cross-entropy
  **summed** over non-padding targets, z-loss 0 (1e-4 when fine-tuning).
* Liu et al. 2023 / academic-budget BERT (liu2023 §6.1): AdamW (b1 0.9, b2 0.98, eps 1e-6,
  weight decay 0.01 except biases and LayerNorm parameters), linear warmup then linear decay to
  0, or warmup then constant; SGD for the flatness runs.

Step convention: a schedule is evaluated at the number of updates already applied (optax's
`count`, 0 for the first update), as T5X's `learning_rate_fn(state.step)` and HF/DeepSpeed's
LambdaLR do. So a linear warmup gives lr 0 to the very first update, like theirs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[jax.Array | int], jax.Array]
PyTree = Any


# --- schedules -----------------------------------------------------------------------------


def rsqrt_schedule(base: float = 1.0, warmup_steps: int = 10_000) -> Schedule:
    """T5X `rsqrt_decay`: base / sqrt(max(step, warmup)); base 1, warmup 10k -> 0.01 flat, then decay.

    T5X calls this "warmup" although the rate is flat (not ramped) for the first steps.
    """
    floor = float(max(warmup_steps, 1))  # max(., 1): step 0 with warmup 0 would divide by 0

    def schedule(step):
        return base / jnp.sqrt(jnp.maximum(jnp.asarray(step, jnp.float32), floor))

    return schedule


def _warmup_factor(step, warmup_steps: int):
    """0 -> 1 linearly over `warmup_steps` updates (1 from then on; 1 always if warmup is 0)."""
    if warmup_steps <= 0:
        return jnp.float32(1.0)
    return jnp.minimum(jnp.asarray(step, jnp.float32) / warmup_steps, 1.0)


def linear_warmup_decay_schedule(peak: float, warmup_steps: int, total_steps: int) -> Schedule:
    """BERT `curve linear`: 0 -> peak over warmup, then linearly to 0 at `total_steps`."""
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")

    def schedule(step):
        s = jnp.asarray(step, jnp.float32)
        decay = jnp.clip((total_steps - s) / (total_steps - warmup_steps), 0.0, 1.0)
        return peak * jnp.where(s < warmup_steps, _warmup_factor(s, warmup_steps), decay)

    return schedule


def constant_schedule(value: float, warmup_steps: int = 0) -> Schedule:
    """Constant (the Wu fine-tuning `constant` factor), optionally after a linear warmup."""

    def schedule(step):
        return value * _warmup_factor(step, warmup_steps)

    return schedule


def polynomial_schedule(
    peak: float, warmup_steps: int, total_steps: int, power: float = 1.0, end_value: float = 0.0
) -> Schedule:
    """Linear warmup, then (peak - end) * (1 - progress)^power + end until `total_steps`."""
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")

    def schedule(step):
        s = jnp.asarray(step, jnp.float32)
        progress = jnp.clip((s - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
        decayed = (peak - end_value) * (1.0 - progress) ** power + end_value
        return jnp.where(s < warmup_steps, peak * _warmup_factor(s, warmup_steps), decayed)

    return schedule


# --- weight-decay mask ---------------------------------------------------------------------

#: BERT's `no_decay = ["bias", "LayerNorm.bias", "LayerNorm.weight"]`, by parameter path. Any
#: component naming a norm layer (layer_norm, LayerNorm, pre_mlp_layer_norm, ln_f, ...) and any
#: leaf called bias is excluded; embeddings and kernels decay, as in BERT.
NO_DECAY_PATTERNS: tuple[str, ...] = (
    r"(^|/)bias$",
    r"(?i)norm[^/]*/",
    r"(?i)(^|/)ln(_[^/]*)?[0-9]*/",
)


def path_str(path: Sequence[Any]) -> str:
    """A jax key path as 'a/b/0/c'. NNX's trailing `.value` (Variable payload) is dropped."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    if len(path) and isinstance(path[-1], jax.tree_util.GetAttrKey) and parts[-1] == "value":
        parts.pop()
    return "/".join(parts)


def decay_mask(params: PyTree, exclude: Sequence[str] = NO_DECAY_PATTERNS) -> PyTree:
    """A bool per leaf: True = apply weight decay. A leaf is excluded if any pattern matches."""
    compiled = [re.compile(p) for p in exclude]

    def keep(path, _leaf):
        name = path_str(path)
        return not any(p.search(name) for p in compiled)

    return jax.tree_util.tree_map_with_path(keep, params)


# --- optimizers ----------------------------------------------------------------------------


def adafactor_t5x(learning_rate: float | Schedule) -> optax.GradientTransformation:
    """T5X's Adafactor as used for T5 pre-training and fine-tuning (wu2022 §3.2).

    epsilon2 = 1e-3 (the floor of the parameter scale) is optax's `scale_by_param_block_rms`
    default, matching T5X.
    """
    return optax.adafactor(
        learning_rate=learning_rate,
        min_dim_size_to_factor=128,
        decay_rate=0.8,
        decay_offset=0,
        multiply_by_parameter_scale=True,
        clipping_threshold=1.0,
        momentum=None,
        eps=1e-30,
        factored=True,
    )


def adamw_bert(
    learning_rate: float | Schedule,
    weight_decay: float = 0.01,
    b1: float = 0.9,
    b2: float = 0.98,
    eps: float = 1e-6,
    no_decay: Sequence[str] = NO_DECAY_PATTERNS,
) -> optax.GradientTransformation:
    """AdamW with academic-budget BERT's settings; decay masked off by parameter path."""
    return optax.adamw(
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        mask=lambda params: decay_mask(params, no_decay),
    )


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Everything that defines the update rule; the rule author fills it from config.yaml."""

    name: Literal["adafactor", "adamw", "sgd"] = "adafactor"
    schedule: Literal["rsqrt", "linear", "constant", "polynomial"] = "rsqrt"
    learning_rate: float = 1.0  # rsqrt: the base (T5X: 1.0); otherwise the peak/constant value
    warmup_steps: int = 10_000
    total_steps: int | None = None  # linear/polynomial: where the decay ends
    power: float = 1.0  # polynomial
    end_value: float = 0.0  # polynomial
    weight_decay: float = 0.01  # adamw
    b1: float = 0.9  # adamw
    b2: float = 0.98  # adamw
    eps: float = 1e-6  # adamw
    momentum: float | None = None  # sgd
    grad_clip_norm: float | None = None  # global-norm clipping before the optimizer


def make_schedule(cfg: OptimizerConfig) -> Schedule:
    if cfg.schedule == "rsqrt":
        return rsqrt_schedule(cfg.learning_rate, cfg.warmup_steps)
    if cfg.schedule == "constant":
        return constant_schedule(cfg.learning_rate, cfg.warmup_steps)
    if cfg.total_steps is None:
        raise ValueError(f"schedule {cfg.schedule!r} needs total_steps")
    if cfg.schedule == "linear":
        return linear_warmup_decay_schedule(cfg.learning_rate, cfg.warmup_steps, cfg.total_steps)
    if cfg.schedule == "polynomial":
        return polynomial_schedule(
            cfg.learning_rate, cfg.warmup_steps, cfg.total_steps, cfg.power, cfg.end_value
        )
    raise ValueError(f"unknown schedule {cfg.schedule!r} (rsqrt, linear, constant, polynomial)")


def optimizer_from_config(section: dict, total_steps: int):
    """`make_optimizer` from a config.yaml optimizer section (name, schedule, learning_rate,
    warmup_steps, optional grad_clip_norm) and the run's number of steps."""
    return make_optimizer(
        OptimizerConfig(
            name=section["name"], schedule=section["schedule"],
            learning_rate=section["learning_rate"], warmup_steps=section["warmup_steps"],
            total_steps=total_steps, grad_clip_norm=section.get("grad_clip_norm"),
        )
    )


def make_optimizer(cfg: OptimizerConfig) -> tuple[optax.GradientTransformation, Schedule]:
    """(gradient transformation, schedule); the schedule is returned for logging the lr."""
    schedule = make_schedule(cfg)
    if cfg.name == "adafactor":
        tx = adafactor_t5x(schedule)
    elif cfg.name == "adamw":
        tx = adamw_bert(schedule, cfg.weight_decay, cfg.b1, cfg.b2, cfg.eps)
    elif cfg.name == "sgd":
        tx = optax.sgd(schedule, momentum=cfg.momentum)
    else:
        raise ValueError(f"unknown optimizer {cfg.name!r} (adafactor, adamw, sgd)")
    if cfg.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
    return tx, schedule


# --- loss ----------------------------------------------------------------------------------


def token_cross_entropy(
    logits: jax.Array, targets: jax.Array, weights: jax.Array, z_loss: float = 0.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted token cross-entropy plus z-loss, **summed** over tokens (T5X's form).

    Per token: log Z - logit[target] + z_loss * (log Z)^2 with log Z = logsumexp(logits)
    (t5x `cross_entropy_with_logits`). Returns (loss_sum, aux) where every aux entry is a sum
    over tokens, so micro-batch results add up and the caller normalises ('sum' or 'mean').
    Computed in float32 whatever the compute dtype of the logits.
    """
    logits = logits.astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), -1)[..., 0]
    nll = log_z - target_logit
    z_term = z_loss * jnp.square(log_z)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    aux = {
        "nll_sum": jnp.sum(nll * weights),
        "z_loss_sum": jnp.sum(z_term * weights),
        "num_correct": jnp.sum(correct * weights),
        "num_tokens": jnp.sum(weights),
    }
    return aux["nll_sum"] + aux["z_loss_sum"], aux
