"""HINT's optimiser and loss (requirement 9; upstream ``partial_train_adafactor_dual.gin``).

Two Adafactors (decay 0.8, constant LR 1e-3) under ``optax.multi_transform``: one for the
hypernetwork (label ``hyper``), one for the T5 (label ``t5``). Upstream's T5X
``MultiOptimizer`` picks the hyper group with the regex ``.*hyper.*`` and the T5 group with
``inverse_match_any(".*/hyper.*")``, both over '/'-prefixed flax paths; here a path is labelled
``hyper`` when ``"/" + path`` matches `HYPER_REGEX`. With the model's names (hypernetwork under
``hyper/``, no T5 name contains "hyper") the two upstream filters are complements, so every
parameter lands in exactly one group (the tests check it).

Upstream's ``step_offset=1,100,000`` on the hyper group restarts its second-moment decay
schedule for parameters that start fresh after 1.1M steps of T5 pre-training. optax keeps one
``count`` per group, so a freshly initialised hyper state starts its schedule at 0 by itself.
The T5 group's optimiser state is initialised fresh too: the LM-adapted checkpoint this pipeline
restores carries parameters only, so there is no T5X optimizer state to map (a documented
deviation from restoring the full T5X train state).

Note: one stored version of the upstream gin turns ``multiply_by_parameter_scale`` off for the
hyper group (with LR 1e-1); the issue's reading (on, LR 1e-3) is the default here and both are
arguments of `hint_optimizer`.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import optax

from pipeline_lib.models.hint import hint_batch_forward
from pipeline_lib.train.optim import constant_schedule, path_str
from pipeline_lib.train.step import make_token_loss_fn

HYPER_LABEL, T5_LABEL = "hyper", "t5"
HYPER_REGEX = re.compile(r".*hyper.*")
"""Upstream's hyper filter (``hyper/hyper_utils.match_any.regexes``)."""
T5_INVERSE_REGEX = re.compile(r".*/hyper.*")
"""Upstream's T5 filter is everything NOT matching this (``inverse_match_any``)."""

HINT_Z_LOSS = 1e-4
"""T5X's fine-tuning z-loss, which HINT keeps (label smoothing 0, loss summed)."""


def hint_param_label(path: str) -> str:
    """``hyper`` or ``t5`` for a '/'-joined parameter path."""
    return HYPER_LABEL if HYPER_REGEX.fullmatch("/" + path) else T5_LABEL


def hint_param_labels(params: Any) -> Any:
    """The label of every leaf of a params pytree (an ``nnx.State`` or nested dicts)."""
    return jax.tree_util.tree_map_with_path(lambda p, _: hint_param_label(path_str(p)), params)


def hint_adafactor(
    learning_rate, *, multiply_by_parameter_scale: bool
) -> optax.GradientTransformation:
    """T5X Adafactor (`optim.adafactor_t5x`'s settings) with a choice of parameter scaling."""
    return optax.adafactor(
        learning_rate=learning_rate, min_dim_size_to_factor=128, decay_rate=0.8,
        decay_offset=0, multiply_by_parameter_scale=multiply_by_parameter_scale,
        clipping_threshold=1.0, momentum=None, eps=1e-30, factored=True,
    )


def hint_optimizer(
    learning_rate: float = 1e-3,
    *,
    hyper_learning_rate: float | None = None,
    hyper_multiply_by_parameter_scale: bool = True,
) -> optax.GradientTransformation:
    """``multi_transform({hyper: Adafactor, t5: Adafactor}, hint_param_labels)``, constant LRs
    (``hyper_learning_rate`` defaults to ``learning_rate``)."""
    hyper_lr = learning_rate if hyper_learning_rate is None else hyper_learning_rate
    return optax.multi_transform(
        {
            HYPER_LABEL: hint_adafactor(
                constant_schedule(hyper_lr),
                multiply_by_parameter_scale=hyper_multiply_by_parameter_scale,
            ),
            T5_LABEL: hint_adafactor(constant_schedule(learning_rate),
                                     multiply_by_parameter_scale=True),
        },
        hint_param_labels,
    )


def hint_loss_fn(graphdef):
    """``loss_fn(params, batch, rng) -> (loss_sum, aux)``: token cross-entropy + z-loss 1e-4,
    summed (upstream's contrastive loss is computed there but never added, so it is absent)."""
    return make_token_loss_fn(hint_batch_forward(graphdef), z_loss=HINT_Z_LOSS)


__all__ = [
    "HINT_Z_LOSS",
    "HYPER_LABEL",
    "T5_LABEL",
    "hint_adafactor",
    "hint_loss_fn",
    "hint_optimizer",
    "hint_param_label",
    "hint_param_labels",
]
