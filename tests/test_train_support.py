"""Shared pieces of the training-engine tests: a tiny NNX model, a toy corpus, a training run.

`run_training` is also the script of the subprocess tests (SIGKILL resume, 8 host devices):

    python -c "import test_train_support as t; t.run_training(...)"   (cwd = tests/)
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

from pipeline_lib.data.ragged import Ragged

VOCAB = 16
LENGTHS = {"inputs": 8, "targets": 6}
#: per-computation XLA option: ~3x faster CPU compiles of the (tiny) train steps
FAST_CPU_COMPILE = {"xla_cpu_use_fusion_emitters": False}


def configure_jax():
    import jax

    jax.config.update("jax_disable_most_optimizations", True)  # faster CPU compiles
    return jax


def toy_corpus(seed: int = 0, n: int = 40) -> dict[str, tuple[Ragged, Ragged]]:
    """Two sources ('copy', 'rev') of random rows of ids 2..VOCAB-1 (no EOS, as stored)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in ("copy", "rev"):
        lengths = rng.integers(1, 9, n)
        inputs = Ragged.from_lengths(
            rng.integers(2, VOCAB, lengths.sum()).astype(np.uint16), lengths
        )
        targets = inputs if name == "copy" else inputs.reverse_rows()
        out[name] = (inputs, targets)
    return out


def tiny_model(seed: int = 0, dropout: float = 0.0, hidden: int = 16):
    """A 2-layer MLP 'LM': mean of encoder embeddings + decoder-input embedding -> logits."""
    from flax import nnx

    class TinyLM(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.embed = nnx.Embed(VOCAB, 8, rngs=rngs)
            self.hidden = nnx.Linear(8, hidden, rngs=rngs)
            self.layer_norm = nnx.LayerNorm(hidden, rngs=rngs)
            self.dropout = nnx.Dropout(dropout)
            self.out = nnx.Linear(hidden, VOCAB, rngs=rngs)

        def __call__(self, enc, dec, *, rngs=None, deterministic=True):
            import jax
            import jax.numpy as jnp

            mask = (enc > 0)[..., None].astype(jnp.float32)
            ctx = (self.embed(enc) * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
            h = jax.nn.gelu(self.hidden(self.embed(dec) + ctx[:, None, :]))
            h = self.dropout(self.layer_norm(h), deterministic=deterministic, rngs=rngs)
            return self.out(h)

    return TinyLM(nnx.Rngs(seed))


def split_model(model):
    """The NNX functional pattern: (params, forward(params, batch, rng) -> logits)."""
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def forward(params, batch, rng):
        m = nnx.merge(graphdef, params, rest)
        return m(
            batch["encoder_input_tokens"],
            batch["decoder_input_tokens"],
            rngs=rng,
            deterministic=rng is None,
        )

    return params, forward


@functools.lru_cache(maxsize=None)
def _cached_model(seed: int, dropout: float):
    from flax import nnx

    # one compiled initialiser instead of eager op-by-op initialisation (much faster on CPU)
    model = nnx.jit(lambda: tiny_model(seed, dropout))()
    params, forward = split_model(model)
    return jax_to_numpy(params), forward


def jax_to_numpy(tree):
    import jax

    return jax.tree.map(np.asarray, tree)


def model_params(seed: int = 0, dropout: float = 0.0):
    """(fresh device params, forward) of a tiny model; initialised once per process (eager
    initialisers compile op by op), so tests can donate their copies freely."""
    import jax

    params, forward = _cached_model(seed, dropout)
    return jax.device_put(params), forward


def flatten(tree) -> dict:
    """{'hidden/kernel': leaf, ...} of a params pytree (NNX State or nested dicts)."""
    import jax

    from pipeline_lib.train.optim import path_str

    return {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


class SlowPipeline:
    """A pipeline wrapper that sleeps per batch, so a test can kill training mid-run."""

    def __init__(self, inner, sleep: float):
        self.inner, self.sleep = inner, sleep

    def __next__(self):
        time.sleep(self.sleep)
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def run_training(
    workdir: str,
    num_steps: int = 12,
    sleep: float = 0.0,
    model_parallelism: int = 1,
    devices: int | None = None,
    batch_size: int = 8,
    name: str = "run",
) -> None:
    """One small training run: AdamW + linear schedule, dropout, z-loss, accumulation, packed
    mixed data, eval every 4 steps with best-checkpoint selection, checkpoints every 4."""
    jax = configure_jax()
    from pipeline_lib.train import data, loop, mesh, optim

    workdir = Path(workdir)
    corpus = toy_corpus()
    pipe = data.Seq2SeqPipeline(corpus, batch_size, LENGTHS, seed=3, pack=True)
    params, forward = model_params(seed=1, dropout=0.1)
    tx, schedule = optim.make_optimizer(
        optim.OptimizerConfig(
            name="adamw",
            schedule="linear",
            learning_rate=3e-3,
            warmup_steps=2,
            total_steps=num_steps + 1,
            grad_clip_norm=1.0,
        )
    )
    cfg = loop.TrainConfig(
        num_steps=num_steps,
        seed=7,
        log_every=2,
        eval_every=4,
        save_every=4,
        keep_checkpoints=2,
        grad_accum_steps=2,
        model_parallelism=model_parallelism,
        flops_per_token=100.0,
        peak_flops_per_device=1e9,
        compiler_options=FAST_CPU_COMPILE,
    )
    m = mesh.make_mesh(model_parallelism, jax.devices()[:devices] if devices else None)
    result = loop.train(
        cfg,
        loss_fn=loop.make_token_loss_fn(forward, z_loss=1e-4),
        params=params,
        optimizer=tx,
        schedule=schedule,
        train_data=SlowPipeline(pipe, sleep) if sleep else pipe,
        ckpt_dir=workdir / f"{name}_ckpt",
        metrics_path=workdir / f"{name}_metrics.jsonl",
        eval_batches=lambda: data.seq2seq_eval_batches(corpus, batch_size, LENGTHS, num_batches=2),
        params_out=workdir / f"{name}_params.npz",
        best_params_out=workdir / f"{name}_best.npz",
        summary_path=workdir / f"{name}_summary.json",
        mesh=m,
    )
    print(json.dumps({"step": result.step, "resumed_from": result.resumed_from}), flush=True)


if __name__ == "__main__":  # python tests/test_train_support.py WORKDIR [NUM_STEPS SLEEP]
    run_training(sys.argv[1], *(float(a) if "." in a else int(a) for a in sys.argv[2:]))
