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

What a run logs and reports (metric lines, tokens/s and MFU, best eval, summary) is metrics.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pipeline_lib.files import write_json_atomic
from pipeline_lib.train import mesh as mesh_lib
from pipeline_lib.train import metrics as metrics_lib
from pipeline_lib.train.checkpoint import (
    Checkpointer,
    CheckpointError,
    abstract_like,
    export_params,
)
from pipeline_lib.train.data import BatchPipeline
from pipeline_lib.train.optim import Schedule
from pipeline_lib.train.step import (  # the step API: used here and re-exported (__all__)
    Batch,
    LossFn,
    NonFiniteError,
    PyTree,
    TrainState,
    cast_floating,
    default_compute_dtype,
    evaluate,
    init_train_state,
    jit_train_step,
    make_eval_step,
    make_token_loss_fn,
    make_train_step,
)

log = logging.getLogger(__name__)


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
    writer = metrics_lib.MetricsWriter(metrics_path)

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
    writer.begin(resumed_from)  # drops lines (and events) of a killed attempt's last steps

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
            raise NonFiniteError.at(bad, at_step, ckpt_dir, good)

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
        log.info("step %d eval %s", step,
                 " ".join(f"{k} {metrics_lib.format_value(v)}" for k, v in record.items()))
        if metrics_lib.improves(record, best, config.select_metric):
            best = {"step": step, "metrics": record}
            for stale in [s for s in best_ckpt.all_steps() if s != step]:
                best_ckpt.delete(stale)
            best_ckpt.save(step, {"params": state.params}, {"step": step, "metrics": record})

    step = int(jax.device_get(state.step))
    pending: list[dict] = []  # device metrics of the steps since the last log line
    meter = metrics_lib.Throughput(
        config.peak_flops_per_device, config.flops_per_step, config.flops_per_token
    )

    def reached_stop() -> bool:
        return metrics_lib.reached(last_eval, config.select_metric, config.stop_at)

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
            record = {
                "step": step, "split": "train", **metrics_lib.train_record(host), **meter.read()
            }
            writer.write(record)
            log.info(metrics_lib.progress_line(record, config.num_steps))
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
            Path(summary_path), metrics_lib.run_summary(step, best, last_eval, resumed_from)
        )
    ckpt.close()
    if best_ckpt is not None:
        best_ckpt.close()
    writer.close()
    return TrainResult(state.params, step, best, last_eval, resumed_from)


__all__ = [
    "Batch",
    "LossFn",
    "NonFiniteError",
    "PyTree",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "cast_floating",
    "default_compute_dtype",
    "evaluate",
    "init_train_state",
    "jit_train_step",
    "make_eval_step",
    "make_token_loss_fn",
    "make_train_step",
    "train",
]
