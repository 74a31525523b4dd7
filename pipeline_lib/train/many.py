"""Several training runs of one shape in one process, vmapped into one jitted step.

Many-small-runs experiments (Wu et al.'s tables: every (task, init) x seeds) spend most of a
separate job's time on fixed cost (interpreter and JAX start-up, compile-cache loads, set-up)
and run tiny matmuls that use a CPU badly. `train_many` trains K runs that share a model shape,
an optimizer and a loss together: their states are stacked on a leading "run" axis and one
`jax.vmap` of the pure step (`train.step.make_train_step`) updates all of them at once, each
with its own parameters, data order (one pipeline per run) and dropout key. A run is bitwise
independent of which other runs share its group only up to float reassociation inside the
batched matmuls (XLA may tile a vmapped matmul differently), so a group is keyed by its runs.

Per run, as `loop.train` does for one: JSON-lines metrics (train lines every `log_every`,
eval lines every `eval_every` and at the end), the best evaluation by `select_metric` (a
non-finite evaluation is never selected) with its parameters, and a non-finite guard that
stops the group naming the run. The stacked state, every run's best parameters, data position
and best/last evaluation are checkpointed with orbax every `save_every` steps and at the end,
so a killed group resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pipeline_lib.train import metrics as metrics_lib
from pipeline_lib.train.checkpoint import Checkpointer, CheckpointError, abstract_like
from pipeline_lib.train.data import BatchPipeline
from pipeline_lib.train.loop import TrainConfig
from pipeline_lib.train.optim import Schedule
from pipeline_lib.train.step import (
    Batch,
    LossFn,
    NonFiniteError,
    PyTree,
    TrainState,
    default_compute_dtype,
    eval_sums_fn,
    make_train_step,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunResult:
    """One run of a group: final and best parameters (host arrays) and its evaluations."""

    params: PyTree
    best_params: PyTree | None
    step: int
    best: dict | None
    last_eval: dict | None
    resumed_from: int | None


def _stack(trees: Sequence[PyTree]) -> PyTree:
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _unstack(tree: PyTree, i: int) -> PyTree:
    return jax.tree.map(lambda x: np.asarray(x[i]), tree)


def train_many(
    config: TrainConfig,
    *,
    loss_fn: LossFn,
    params: Sequence[PyTree],
    seeds: Sequence[int],
    optimizer: optax.GradientTransformation,
    train_data: Sequence[BatchPipeline],
    ckpt_dir: str | os.PathLike,
    metrics_paths: Sequence[str | os.PathLike],
    schedule: Schedule | None = None,
    eval_batches: Callable[[], Iterable[Batch]] | None = None,
) -> list[RunResult]:
    """Train len(params) runs together for `config.num_steps` updates (resuming from ckpt_dir).

    `seeds[i]` is run i's dropout seed (its data order is its pipeline's); `metrics_paths[i]`
    its JSON-lines log. `config.seed`, `stop_at`, meshes and gradient accumulation are not used
    here (one device, one micro-batch): a group is for many small runs.
    """
    k = len(params)
    if not (k == len(seeds) == len(train_data) == len(metrics_paths)) or k == 0:
        raise ValueError(
            f"train_many: {len(params)} params, {len(seeds)} seeds, {len(train_data)} "
            f"pipelines and {len(metrics_paths)} metrics paths; need the same number (>= 1)"
        )
    if config.stop_at is not None or config.grad_accum_steps != 1:
        raise ValueError("train_many supports neither stop_at nor gradient accumulation")
    dtype = jnp.dtype(config.compute_dtype) if config.compute_dtype else default_compute_dtype()
    keys = jnp.stack([jax.random.key_data(jax.random.key(int(s))) for s in seeds])
    writers = [metrics_lib.MetricsWriter(p) for p in metrics_paths]

    stacked = jax.tree.map(jnp.asarray, _stack(params))
    state = jax.vmap(lambda p: TrainState(p, optimizer.init(p), jnp.int32(0), jnp.int32(-1)))(
        stacked
    )
    # a copy (the state's buffers are donated to every step); overwritten at the first eval
    best_params = jax.tree.map(jnp.copy, state.params)
    best: list[dict | None] = [None] * k
    last_eval: list[dict | None] = [None] * k

    ckpt_dir = Path(ckpt_dir)
    ckpt = Checkpointer(ckpt_dir, keep=1, async_save=config.async_checkpointing)
    resumed_from = ckpt.latest_step()
    if resumed_from is not None:
        like = {"state": state, "best_params": best_params, "keys": keys}
        restored, meta = ckpt.restore(abstract_like(like))
        if not np.array_equal(np.asarray(restored["keys"]), np.asarray(keys)):
            raise CheckpointError(
                f"{ckpt_dir}: checkpoint was written for other seeds than {list(seeds)}; "
                "use a fresh checkpoint directory"
            )
        state = restored["state"]
        best_params = restored["best_params"]
        for pipe, data_state in zip(train_data, meta["data"]):
            pipe.set_state(data_state)
        best, last_eval = list(meta["best"]), list(meta["last_eval"])
        log.info("resumed %d runs from %s at step %d", k, ckpt_dir, resumed_from)
    for writer in writers:  # drop lines (and events) of a killed attempt's last steps
        writer.begin(resumed_from)

    step_fn = make_train_step(
        loss_fn, optimizer, schedule=schedule, loss_normalizing=config.loss_normalizing,
        compute_dtype=dtype,
    )
    vstep = jax.jit(
        jax.vmap(lambda s, b, key: step_fn(s, b, jax.random.wrap_key_data(key))),
        donate_argnums=(0,),
    )

    veval = jax.jit(jax.vmap(eval_sums_fn(loss_fn, dtype), in_axes=(0, None)))
    select_best = jax.jit(
        lambda mask, new, old: jax.tree.map(
            lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old
        )
    )

    def check_finite(at_step: int) -> None:
        bad = np.asarray(jax.device_get(state.nonfinite_step))
        for i in np.flatnonzero(bad >= 0).tolist():
            ckpt.wait()
            good = ckpt.latest_step()
            writers[i].write({"step": int(bad[i]), "split": "train", "event": "nonfinite"})
            raise NonFiniteError.at(int(bad[i]), at_step, ckpt_dir, good,
                                    who=f"run {i} (seed {seeds[i]}): ")

    def save(step: int) -> None:
        check_finite(step)
        meta = {
            "data": [pipe.get_state() for pipe in train_data],
            "best": best,
            "last_eval": last_eval,
            "seeds": [int(s) for s in seeds],
        }
        ckpt.save(step, {"state": state, "best_params": best_params, "keys": keys}, meta)

    def run_eval(step: int) -> None:
        nonlocal best_params
        check_finite(step)
        totals: list[dict[str, float]] = [{} for _ in range(k)]
        for batch in eval_batches():
            sums = jax.device_get(veval(state.params, batch))
            for name, values in sums.items():
                for i in range(k):
                    totals[i][name] = totals[i].get(name, 0.0) + float(values[i])
        improved = np.zeros(k, bool)
        for i in range(k):
            record = metrics_lib.summarize(totals[i])
            last_eval[i] = {"step": step, "metrics": record}
            writers[i].write({"step": step, "split": "eval", **record})
            if metrics_lib.improves(record, best[i], config.select_metric):
                best[i] = {"step": step, "metrics": record}
                improved[i] = True
        log.info(
            "step %d eval %s %s", step, config.select_metric,
            " ".join(metrics_lib.format_value(e["metrics"].get(config.select_metric, np.nan))
                     for e in last_eval),
        )
        if improved.any():
            best_params = select_best(jnp.asarray(improved), state.params, best_params)

    step = int(np.asarray(jax.device_get(state.step)).min())
    pending: list[dict] = []
    meter = metrics_lib.Throughput(
        config.peak_flops_per_device,
        None if config.flops_per_step is None else k * config.flops_per_step,
        config.flops_per_token,
    )
    while step < config.num_steps:
        batch = _stack([next(pipe) for pipe in train_data])
        state, step_metrics = vstep(state, batch, keys)
        step += 1
        last = step == config.num_steps
        if not meter.started:  # the first step of this process includes the compilation
            jax.block_until_ready(step_metrics)
            meter.start()
        else:
            meter.pending.append(jnp.sum(step_metrics["num_tokens"]))
        pending.append(step_metrics)
        if step % config.log_every == 0 or last:
            host = jax.device_get(pending)
            pending = []
            check_finite(step)
            throughput = meter.read()
            for i, writer in enumerate(writers):
                per_run = [{name: value[i] for name, value in m.items()} for m in host]
                writer.write({"step": step, "split": "train",
                              **metrics_lib.train_record(per_run), **throughput})
            log.info("step %d/%d (%d runs) %s", step, config.num_steps, k,
                     " ".join(f"{n} {metrics_lib.format_value(v)}" for n, v in throughput.items()))
        evaluating = eval_batches is not None and (
            (config.eval_every and step % config.eval_every == 0) or last
        )
        if evaluating:
            run_eval(step)
        if step % config.save_every == 0 or last:
            save(step)
    check_finite(step)
    ckpt.wait()
    ckpt.close()
    for writer in writers:
        writer.close()
    return [
        RunResult(
            params=_unstack(state.params, i),
            best_params=None if best[i] is None else _unstack(best_params, i),
            step=step,
            best=best[i],
            last_eval=last_eval[i],
            resumed_from=resumed_from,
        )
        for i in range(k)
    ]


__all__ = ["RunResult", "train_many"]
