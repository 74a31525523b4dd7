"""The training engine: a pure jitted step, teacher-forced eval, and a resumable loop.

Model-agnostic contract. A model plugs in as a pure loss function

    loss_fn(params, batch, rng) -> (loss_sum, aux)

over a params pytree, a dict batch of arrays and a PRNG key (None in evaluation: no dropout).
`loss_sum` is summed over tokens and every `aux` entry is a sum too (`num_tokens`,
`num_correct`, ...), so micro-batches add up and normalisation is the step's business
('sum' as T5X pre-training, or 'mean' per token). `make_token_loss_fn(forward)` builds one from
a forward function `forward(params, batch, rng) -> logits`.

Flax NNX is used only at the edges (the functional pattern of flax examples/gemma and
MaxText; `nnx.jit` would walk the object graph in Python on every call). With the project's T5:

    from pipeline_lib.models import t5
    model = t5.T5(cfg, rngs=nnx.Rngs(params=seed))
    graphdef, params, rest = t5.split_model(model)             # once, before training

    def forward(params, batch, rng):                             # pure: traced once by jit
        return t5.t5_forward(
            graphdef, params, rest, batch["encoder_input_tokens"],
            batch["decoder_input_tokens"], batch["decoder_target_tokens"],
            encoder_segment_ids=batch.get("encoder_segment_ids"),
            decoder_segment_ids=batch.get("decoder_segment_ids"),
            dropout_rng=rng, deterministic=rng is None)

    result = train(cfg, loss_fn=make_token_loss_fn(forward), params=params, ...)
    nnx.update(model, result.params)                             # back into the module

Randomness: the step's key is fold_in(key(seed), step) (and fold_in(., micro_batch) under
gradient accumulation), so dropout masks depend only on (seed, step) and a resumed run draws
exactly what the uninterrupted run drew. The data order has its own seed (data.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pipeline_lib.data.store import write_json_atomic
from pipeline_lib.train import mesh as mesh_lib
from pipeline_lib.train.checkpoint import (
    Checkpointer,
    CheckpointError,
    abstract_like,
    export_params,
)
from pipeline_lib.train.data import BatchPipeline
from pipeline_lib.train.optim import Schedule, token_cross_entropy

log = logging.getLogger(__name__)

PyTree = Any
Batch = dict[str, Any]
LossFn = Callable[[PyTree, Batch, jax.Array | None], tuple[jax.Array, dict[str, jax.Array]]]


class NonFiniteError(RuntimeError):
    """Training produced a NaN/Inf loss or gradient; the bad update was never applied or saved."""


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
    A non-finite loss or gradient norm freezes the state (the update is discarded) and
    records the step in `nonfinite_step`; the loop stops on it.
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
        ok = jnp.isfinite(sums["loss_sum"]) & jnp.isfinite(grad_norm) & (state.nonfinite_step < 0)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

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

    def eval_step(params, batch):
        loss_sum, aux = loss_fn(cast_floating(params, compute_dtype), batch, None)
        return {"loss_sum": loss_sum, **aux}

    return jax.jit(eval_step, compiler_options=dict(compiler_options) if compiler_options else None)


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Per-token loss and accuracy from summed counts (whatever sums are present)."""
    out = {}
    tokens = sums.get("num_tokens")
    if tokens:
        out["loss"] = sums["loss_sum"] / tokens
        if "nll_sum" in sums:
            out["nll"] = sums["nll_sum"] / tokens
        if "z_loss_sum" in sums:
            out["z_loss"] = sums["z_loss_sum"] / tokens
        if "num_correct" in sums:
            out["accuracy"] = sums["num_correct"] / tokens
        out["num_tokens"] = tokens
    else:
        out["loss"] = sums["loss_sum"]
    return out


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
    return summarize(totals)


# --- the loop ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    num_steps: int
    seed: int = 0  # step RNG (dropout); the data order has its own seed
    log_every: int = 100
    eval_every: int = 0  # 0: evaluate only at the end (if eval batches are given)
    save_every: int = 1000
    keep_checkpoints: int = 3
    keep_period: int | None = None  # also keep steps divisible by this (e.g. 5000)
    loss_normalizing: Literal["sum", "mean"] = "sum"
    grad_accum_steps: int = 1
    compute_dtype: str | None = None  # None: bfloat16 on GPU/TPU, float32 on CPU
    model_parallelism: int = 1
    flops_per_step: float | None = None  # model FLOPs of one train step, for MFU
    flops_per_token: float | None = None  # or per loss token (num_tokens), for MFU
    peak_flops_per_device: float | None = None
    async_checkpointing: bool = True
    select_metric: str = "accuracy"  # best checkpoint = max of this eval metric (Wu et al.)
    # stop at the first evaluation whose select_metric reaches this value (Wu et al.'s
    # simple tasks: pre-train until the validation token accuracy threshold); None: never
    stop_at: float | None = None
    # XLA options for the train/eval step compilations, e.g. {"xla_cpu_use_fusion_emitters":
    # False} compiles toy models ~3x faster on CPU (where compile time dominates short runs)
    compiler_options: Mapping[str, Any] | None = None

    def __post_init__(self):
        for name in ("num_steps", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("log_every", "save_every", "keep_checkpoints", "grad_accum_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass
class TrainResult:
    params: PyTree
    step: int
    best: dict | None  # {"step": s, "metrics": {...}} of the best evaluation
    last_eval: dict | None
    resumed_from: int | None


def _truncate_metrics(path: Path, keep_through: int | None) -> None:
    """Drop metric lines after the restored step (they were logged by the killed attempt)."""
    if not path.exists():
        return
    kept = []
    if keep_through is not None:
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= keep_through:
                    kept.append(line)
            except json.JSONDecodeError:
                pass  # a line cut by SIGKILL
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def _json_safe(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


class _MetricsWriter:
    """Appends JSON lines; only process 0 writes (every process computes the same values)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None and jax.process_index() == 0 else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(_json_safe(record), sort_keys=True) + "\n")
            f.flush()


def _is_sum(name: str) -> bool:
    """Step metrics that are token sums (add over steps) rather than per-step values."""
    return name.endswith("_sum") or name.startswith("num_")


def _train_record(host: list[dict]) -> dict:
    """One log line from the host copies of the steps' metrics since the previous line."""
    sums = {k: float(sum(m[k] for m in host)) for k in host[0] if _is_sum(k)}
    return {
        **summarize(sums),
        "learning_rate": float(host[-1]["learning_rate"]),
        "grad_norm": float(np.mean([m["grad_norm"] for m in host])),
    }


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)


def _progress_line(record: dict, num_steps: int) -> str:
    parts = [f"step {record['step']}/{num_steps}", f"loss {record['loss']:.4f}"]
    if "accuracy" in record:
        parts.append(f"acc {record['accuracy']:.4f}")
    parts += [f"lr {record['learning_rate']:.3g}", f"grad_norm {record['grad_norm']:.3g}"]
    if "tokens_per_s" in record:
        parts.append(f"{record['tokens_per_s']:.0f} tok/s")
    if "mfu" in record:
        parts.append(f"mfu {record['mfu']:.2%}")
    return " ".join(parts)


class _Throughput:
    """Steps and loss tokens per second (and MFU) between log lines, after the first step.

    MFU = achieved model FLOPs / (peak_flops_per_device x devices); the model FLOPs come from
    `flops_per_step` (fixed-shape batches: e.g. 3 x the forward matmul FLOPs of one batch) or,
    failing that, `flops_per_token` x loss tokens.
    """

    def __init__(self, config: TrainConfig):
        peak = config.peak_flops_per_device
        self.peak = peak * jax.device_count() if peak else None
        self.flops_per_step, self.flops_per_token = config.flops_per_step, config.flops_per_token
        self.started = False
        self.pending: list = []  # num_tokens (device scalar or None) of each timed step
        self.t0 = 0.0

    def start(self) -> None:
        self.started, self.t0 = True, time.perf_counter()

    def read(self) -> dict:
        """Rates since the previous read (the caller has synced, the values are ready)."""
        now = time.perf_counter()
        if not self.pending or now <= self.t0:
            return {}
        seconds = now - self.t0
        out = {"steps_per_s": len(self.pending) / seconds}
        tokens = [float(t) for t in self.pending if t is not None]
        if tokens:
            out["tokens_per_s"] = sum(tokens) / seconds
        if self.peak and self.flops_per_step:
            out["mfu"] = out["steps_per_s"] * self.flops_per_step / self.peak
        elif self.peak and self.flops_per_token and tokens:
            out["mfu"] = out["tokens_per_s"] * self.flops_per_token / self.peak
        self.pending, self.t0 = [], now
        return out


def _state_tree(state: TrainState, key: jax.Array) -> dict:
    """What is checkpointed: the TrainState minus the NaN flag (never saved non-finite) + key."""
    return {
        "params": state.params,
        "opt_state": state.opt_state,
        "step": state.step,
        "rng": jax.random.key_data(key),
    }


def train(
    config: TrainConfig,
    *,
    loss_fn: LossFn,
    params: PyTree,
    optimizer: optax.GradientTransformation,
    train_data: BatchPipeline,
    ckpt_dir: str | os.PathLike,
    schedule: Schedule | None = None,
    metrics_path: str | os.PathLike | None = None,
    eval_batches: Callable[[], Iterable[Batch]] | None = None,
    eval_fn: Callable[[PyTree, int], dict] | None = None,
    params_out: str | os.PathLike | None = None,
    best_params_out: str | os.PathLike | None = None,
    summary_path: str | os.PathLike | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> TrainResult:
    """Train for `config.num_steps` updates, resuming from `ckpt_dir` if it holds a checkpoint.

    ckpt_dir: resumable state, outside the rule's declared outputs (kept until deleted).
    metrics_path: JSON lines, one per log step ("split": "train") and per eval ("eval").
    eval_batches: a callable returning a fresh iterable of validation batches (teacher-forced
      loss/accuracy every `eval_every` steps and at the end); eval_fn(params, step) may add
      metrics (e.g. decoding). The best eval by `select_metric` is recorded, and its params are
      kept in `<ckpt_dir>/best` and exported to `best_params_out`.
    params_out / summary_path: final artifacts, written atomically after the last step.
    """
    mesh = mesh if mesh is not None else mesh_lib.make_mesh(config.model_parallelism)
    dtype = jnp.dtype(config.compute_dtype) if config.compute_dtype else default_compute_dtype()
    key = jax.random.key(config.seed)
    writer = _MetricsWriter(metrics_path)

    params = mesh_lib.shard_state(params, mesh)
    opt_state = mesh_lib.shard_state(optimizer.init(params), mesh)
    rep = mesh_lib.replicated(mesh)
    state = TrainState(
        params, opt_state, jax.device_put(jnp.int32(0), rep), jax.device_put(jnp.int32(-1), rep)
    )

    ckpt_dir = Path(ckpt_dir)
    ckpt = Checkpointer(
        ckpt_dir,
        keep=config.keep_checkpoints,
        keep_period=config.keep_period,
        async_save=config.async_checkpointing,
    )
    best_ckpt = (
        Checkpointer(ckpt_dir / "best", keep=1, async_save=False)
        if eval_batches is not None or eval_fn is not None
        else None
    )
    best: dict | None = None
    last_eval: dict | None = None
    resumed_from = ckpt.latest_step()
    if resumed_from is not None:
        restored, meta = ckpt.restore(abstract_like(_state_tree(state, key)))
        saved_key = np.asarray(restored["rng"])
        if not np.array_equal(saved_key, np.asarray(jax.random.key_data(key))):
            raise CheckpointError(
                f"{ckpt_dir}: checkpoint was written with another seed than config.seed="
                f"{config.seed}; use a fresh checkpoint directory"
            )
        state = TrainState(
            restored["params"], restored["opt_state"], restored["step"], state.nonfinite_step
        )
        train_data.set_state(meta["data"])
        best, last_eval = meta.get("best"), meta.get("last_eval")
        log.info("resumed from %s at step %d", ckpt_dir, resumed_from)
    if writer.path is not None:
        _truncate_metrics(writer.path, resumed_from)

    step_fn = jit_train_step(
        make_train_step(
            loss_fn,
            optimizer,
            schedule=schedule,
            loss_normalizing=config.loss_normalizing,
            grad_accum_steps=config.grad_accum_steps,
            compute_dtype=dtype,
        ),
        state,
        mesh,
        config.compiler_options,
    )
    eval_step = (
        make_eval_step(loss_fn, dtype, config.compiler_options)
        if eval_batches is not None
        else None
    )

    def check_finite(at_step: int) -> None:
        bad = int(jax.device_get(state.nonfinite_step))
        if bad >= 0:
            ckpt.wait()
            good = ckpt.latest_step()
            writer.write({"step": bad, "split": "train", "event": "nonfinite"})
            raise NonFiniteError(
                f"non-finite loss or gradient at step {bad} (detected at step {at_step}); "
                f"stopped without applying or saving it. Last good checkpoint: "
                f"{ckpt_dir / str(good) if good is not None else 'none'}"
            )

    def save(step: int) -> None:
        check_finite(step)
        meta = {
            "data": train_data.get_state(),
            "best": best,
            "last_eval": last_eval,
            "seed": config.seed,
        }
        ckpt.save(step, _state_tree(state, key), meta)

    def run_eval(step: int) -> None:
        nonlocal best, last_eval
        check_finite(step)
        record: dict[str, Any] = {}
        if eval_batches is not None:
            record.update(evaluate(eval_step, state.params, eval_batches(), mesh))
        if eval_fn is not None:
            record.update(eval_fn(state.params, step))
        last_eval = {"step": step, "metrics": record}
        writer.write({"step": step, "split": "eval", **record})
        log.info("step %d eval %s", step, " ".join(f"{k} {_fmt(v)}" for k, v in record.items()))
        value = record.get(config.select_metric)
        if value is not None and (best is None or value > best["metrics"][config.select_metric]):
            best = {"step": step, "metrics": record}
            for stale in [s for s in best_ckpt.all_steps() if s != step]:
                best_ckpt.delete(stale)
            best_ckpt.save(step, {"params": state.params}, {"step": step, "metrics": record})

    step = int(jax.device_get(state.step))
    pending: list[dict] = []  # device metrics of the steps since the last log line
    meter = _Throughput(config)
    def reached_stop() -> bool:
        return (
            config.stop_at is not None
            and last_eval is not None
            and last_eval["metrics"].get(config.select_metric, -math.inf) >= config.stop_at
        )

    stopped = reached_stop()  # a resumed run that had already stopped stays stopped
    while step < config.num_steps and not stopped:
        batch = mesh_lib.shard_batch(next(train_data), mesh)
        state, metrics = step_fn(state, batch, key)
        step += 1
        last = step == config.num_steps
        if not meter.started:  # the first step of this process includes the compilation
            jax.block_until_ready(metrics)
            meter.start()
        else:
            meter.pending.append(metrics.get("num_tokens"))
        pending.append(metrics)
        if step % config.log_every == 0 or last:
            host = jax.device_get(pending)
            pending = []
            check_finite(step)
            record = {"step": step, "split": "train", **_train_record(host), **meter.read()}
            writer.write(record)
            log.info(_progress_line(record, config.num_steps))
        evaluating = best_ckpt is not None and (
            (config.eval_every and step % config.eval_every == 0) or last
        )
        if evaluating:
            run_eval(step)
        stopped = evaluating and reached_stop()
        if step % config.save_every == 0 or evaluating or last:
            save(step)
        if stopped:
            log.info("step %d: %s reached %s, stopping", step, config.select_metric,
                     config.stop_at)

    check_finite(step)
    ckpt.wait()
    if step > config.num_steps:
        log.warning(
            "%s: checkpoint is at step %d, beyond num_steps %d", ckpt_dir, step, config.num_steps
        )
    if params_out is not None:
        export_params(state.params, params_out)
    if best_params_out is not None:
        if best is None:
            raise CheckpointError(f"{ckpt_dir}: no evaluation recorded, cannot export best params")
        restored, _ = best_ckpt.restore(abstract_like({"params": state.params}), best["step"])
        export_params(restored["params"], best_params_out)
    if summary_path is not None and jax.process_index() == 0:
        write_json_atomic(
            Path(summary_path),
            {"step": step, "best": best, "last_eval": last_eval, "resumed_from": resumed_from},
        )
    ckpt.close()
    if best_ckpt is not None:
        best_ckpt.close()
    return TrainResult(state.params, step, best, last_eval, resumed_from)
