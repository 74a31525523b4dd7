"""The pure training step and teacher-forced evaluation (the loop around them is loop.py).

A model plugs in as a pure loss function `loss_fn(params, batch, rng) -> (loss_sum, aux)`
(see loop.py's docstring); `make_train_step` turns it into `(state, batch, key) -> (state,
metrics)` with gradient accumulation, normalisation and a non-finite guard, `jit_train_step`
jits it with the state donated, and `make_eval_step` / `evaluate` pool teacher-forced sums.
The step is a pure function, so it also vmaps over several runs of one shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from pipeline_lib.errors import PipelineError
from pipeline_lib.train import mesh as mesh_lib
from pipeline_lib.train import metrics as metrics_lib
from pipeline_lib.train.optim import Schedule, token_cross_entropy

PyTree = Any
Batch = dict[str, Any]
LossFn = Callable[[PyTree, Batch, jax.Array | None], tuple[jax.Array, dict[str, jax.Array]]]


class NonFiniteError(PipelineError, RuntimeError):
    """Training produced a NaN/Inf loss or gradient; the bad update was never applied or saved."""

    @classmethod
    def at(cls, bad_step: int, at_step: int, ckpt_dir: Any, good_step: int | None,
           who: str = "") -> "NonFiniteError":
        """The one message of the single loop and the vmapped group (`who`: "run i (seed s): ")."""
        good = "none" if good_step is None else f"{ckpt_dir}/{good_step}"
        return cls(
            f"{who}non-finite loss or gradient at step {bad_step} (detected at step {at_step}); "
            f"stopped without applying or saving it. Last good checkpoint: {good}"
        )


# --- loss plumbing -------------------------------------------------------------------------


def make_token_loss_fn(
    forward: Callable[[PyTree, Batch, jax.Array | None], jax.Array],
    *,
    z_loss: float = 0.0,
    targets_key: str = "decoder_target_tokens",
    weights_key: str = "decoder_loss_weights",
) -> LossFn:
    """loss_fn from `forward(params, batch, rng) -> logits [..., vocab]` (T5, BERT MLM, LM)."""

    def loss_fn(params, batch, rng):
        logits = forward(params, batch, rng)
        return token_cross_entropy(logits, batch[targets_key], batch[weights_key], z_loss)

    return loss_fn


def default_compute_dtype() -> jnp.dtype:
    """bfloat16 on accelerators (f32 master params), float32 on CPU (bf16 is slow there)."""
    return jnp.dtype(jnp.bfloat16 if jax.default_backend() in ("tpu", "gpu") else jnp.float32)


def cast_floating(tree: PyTree, dtype) -> PyTree:
    """Floating leaves to `dtype` (differentiable: gradients flow back to the f32 masters)."""
    dtype = jnp.dtype(dtype)

    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype else x

    return jax.tree.map(cast, tree)


# --- the train step ------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    """What the jitted step carries (donated and updated in place every step)."""

    params: PyTree
    opt_state: PyTree
    step: jax.Array  # int32: updates applied so far
    nonfinite_step: jax.Array  # int32: -1, or the (1-based) update whose loss/grads were NaN/Inf


def init_train_state(params: PyTree, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(params, tx.init(params), jnp.int32(0), jnp.int32(-1))


def make_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    schedule: Schedule | None = None,
    loss_normalizing: Literal["sum", "mean"] = "sum",
    grad_accum_steps: int = 1,
    compute_dtype: Any = jnp.float32,
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """The pure step (state, batch, key) -> (state, metrics); jit it with `jit_train_step`.

    Gradient accumulation scans over `grad_accum_steps` micro-batches (rows i, i+k, i+2k, ...
    so every micro-batch stays spread over the 'data' axis) and sums gradients and aux before
    normalising: the update equals the one-big-batch update (up to float summation order).
    A non-finite loss, gradient norm or updated parameter freezes the state (the update is
    discarded) and records the step in `nonfinite_step`; the loop stops on it.
    """
    if loss_normalizing not in ("sum", "mean"):
        raise ValueError(f"loss_normalizing must be 'sum' or 'mean', got {loss_normalizing!r}")
    k = grad_accum_steps

    def grads_and_sums(params, batch, rng):
        def f(p):
            return loss_fn(cast_floating(p, compute_dtype), batch, rng)

        (loss_sum, aux), grads = jax.value_and_grad(f, has_aux=True)(params)
        return grads, {"loss_sum": loss_sum, **aux}

    def accumulate(params, batch, rng):
        if k == 1:
            return grads_and_sums(params, batch, rng)

        def split(x):
            if x.shape[0] % k:
                raise ValueError(
                    f"batch of {x.shape[0]} rows does not split into {k} micro-batches"
                )
            return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

        micro = jax.tree.map(split, batch)
        # zero accumulators: gradients are shaped like params; the aux sums' shapes come from
        # tracing the forward pass only (cheaper than tracing the gradient a second time)
        first = jax.tree.map(lambda x: x[0], micro)
        loss_shape = jax.eval_shape(
            lambda p, b, r: loss_fn(cast_floating(p, compute_dtype), b, r), params, first, rng
        )
        zeros = (
            jax.tree.map(jnp.zeros_like, params),
            jax.tree.map(
                lambda s: jnp.zeros(s.shape, s.dtype),
                {"loss_sum": loss_shape[0], **loss_shape[1]},
            ),
        )

        def body(carry, inputs):
            i, mb = inputs
            out = grads_and_sums(params, mb, jax.random.fold_in(rng, i))
            return jax.tree.map(jnp.add, carry, out), None

        (grads, sums), _ = jax.lax.scan(body, zeros, (jnp.arange(k), micro))
        return grads, sums

    def step_fn(state: TrainState, batch: Batch, key: jax.Array):
        rng = jax.random.fold_in(key, state.step)
        grads, sums = accumulate(state.params, batch, rng)
        if loss_normalizing == "mean":
            denom = jnp.maximum(sums["num_tokens"], 1.0)
            grads = jax.tree.map(lambda g: g / denom, grads)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A finite loss and gradient can still overflow the parameters (e.g. SGD with a huge
        # rate): the new parameters must be finite too, or the update is discarded like a NaN
        # gradient, so a checkpoint called good never holds Inf/NaN.
        ok = (
            jnp.isfinite(sums["loss_sum"])
            & jnp.isfinite(grad_norm)
            & jnp.isfinite(optax.global_norm(params))
            & (state.nonfinite_step < 0)
        )

        def keep_good(new, old):
            return jnp.where(ok, new, old)

        new_state = TrainState(
            params=jax.tree.map(keep_good, params, state.params),
            opt_state=jax.tree.map(keep_good, opt_state, state.opt_state),
            step=state.step + ok.astype(jnp.int32),
            nonfinite_step=jnp.where(
                ok | (state.nonfinite_step >= 0), state.nonfinite_step, state.step + 1
            ),
        )
        lr = schedule(state.step) if schedule is not None else jnp.float32(jnp.nan)
        metrics = {**sums, "grad_norm": grad_norm, "learning_rate": lr, "finite": ok}
        return new_state, metrics

    return step_fn


def jit_train_step(
    step_fn,
    state: TrainState,
    mesh: jax.sharding.Mesh | None = None,
    compiler_options: Mapping[str, Any] | None = None,
):
    """jax.jit with the state donated (updated in place) and its shardings pinned on the mesh."""
    options = dict(compiler_options) if compiler_options else None
    if mesh is None:
        return jax.jit(step_fn, donate_argnums=(0,), compiler_options=options)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    return jax.jit(
        step_fn,
        donate_argnums=(0,),
        out_shardings=(shardings, mesh_lib.replicated(mesh)),
        compiler_options=options,
    )


# --- evaluation ----------------------------------------------------------------------------


def make_eval_step(
    loss_fn: LossFn,
    compute_dtype: Any = jnp.float32,
    compiler_options: Mapping[str, Any] | None = None,
):
    """Jitted (params, batch) -> summed aux (teacher-forced; rng None = deterministic)."""
    return jax.jit(
        eval_sums_fn(loss_fn, compute_dtype),
        compiler_options=dict(compiler_options) if compiler_options else None,
    )


def eval_sums_fn(loss_fn: LossFn, compute_dtype: Any = jnp.float32):
    """The pure (params, batch) -> summed aux of one teacher-forced evaluation batch (jit it,
    or vmap it over several runs' parameters)."""

    def eval_sums(params, batch):
        loss_sum, aux = loss_fn(cast_floating(params, compute_dtype), batch, None)
        return {"loss_sum": loss_sum, **aux}

    return eval_sums


def evaluate(eval_step, params: PyTree, batches: Iterable[Batch], mesh=None) -> dict[str, float]:
    """Token accuracy and loss over all `batches` (sums pooled in float64 on the host)."""
    totals: dict[str, float] = {}
    for batch in batches:
        if mesh is not None:
            batch = mesh_lib.shard_batch(batch, mesh)
        for name, value in jax.device_get(eval_step(params, batch)).items():
            totals[name] = totals.get(name, 0.0) + float(value)
    if not totals:
        raise ValueError("evaluation got no batches")
    return metrics_lib.summarize(totals)
