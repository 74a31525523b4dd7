"""Benchmark: training throughput and model FLOPs utilisation (MFU) of T5, BERT and the decoder LM.

    python benchmarks/train_mfu.py [--quick] [--rounds N] [--only CASE,...] [--xla-option K=V ...]

One process measures

1. this machine's float32 matmul peak: a jitted 2048 x 2048 @ 2048 x 2048 product with XLA's
   default options (all cores), each probe the mean rate over ~1 s of back-to-back products;
2. the training engine's jitted step (`loop.make_train_step` + `loop.jit_train_step`, the
   optimizer from `optim.make_optimizer`, state donated, on the loop's mesh), for

   | case             | model                               | optimizer        | batch                       |
   |------------------|-------------------------------------|------------------|-----------------------------|
   | t5_bench         | `t5_bench`: T5 v1.0, 4+4 layers     | Adafactor, rsqrt | 32 x (128 + 128)            |
   | bert_bench       | `bert_bench`: pre-LN, 4 layers      | AdamW, linear    | 32 x 128, 20 masked         |
   | lm_primer_bench  | `bench` decoder LM, Primer-EZ       | AdamW, linear    | 32 x 128                    |
   | lm_tpp_bench     | `bench` decoder LM, Transformer++   | AdamW, linear    | 32 x 128                    |
   | t5_laptop        | `t5_laptop` (config.yaml pretrain)  | Adafactor, rsqrt | batch x (inputs + targets)  |
   | bert_laptop      | `bert_laptop`, PCFG vocabulary      | AdamW, linear    | batch x mlm.max_seq_length  |
   | lm_*_laptop      | `laptop` decoder LM, both variants  | AdamW, linear    | batch x (inputs + targets)  |
   | plain_nnx_lm     | baseline: plain Flax NNX decoder LM of the bench shape, `jax.jit` + optax |

   The bench shape is the target's: d_model 256, 4 layers per stack, 4 heads of 64, d_ff 1024
   (Transformer++: 680, its gated-MLP rule), 4096 tokens per batch (per stack for T5). Laptop
   shapes and `batch` are config.yaml's `pretrain` section (the BERT pre-training batch is not
   configured yet, so it borrows `pretrain.batch_size`). Vocabularies are the project's: the
   laptop layout (1336 ids) everywhere except bert_laptop (PCFG terminals + 5 specials, padded
   to 8). Dropout is each preset's (T5 and BERT 0.1, LMs 0), as training runs them. The
   baseline (nnx.MultiHeadAttention, LayerNorm, GELU MLP, learned positions, tied logits) is
   what the target's "about 70%" refers to;
3. the checkpoint overhead: the t5_laptop state saved as `loop.train` saves it (finiteness
   sync, then an async orbax save of `loop._state_tree` + JSON meta through the engine's
   `Checkpointer`), timed until the write is on disk, against `pretrain.save_every` (100) steps.
   Waiting for the write makes it an upper bound: the loop overlaps the write with training.

Model FLOPs (what MFU counts): every forward matmul, 2 FLOPs per multiply-add, times 3 for a
train step (the backward pass has two matmuls per forward matmul). Per layer, with n positions,
d = d_model, i = heads x head_dim, f = d_ff, V = vocabulary: attention projections q, k, v, out
4 x 2ndi (T5 cross-attention: q/out over decoder, k/v over encoder positions); scores QK^T and
values AV 2 x 2 n_q n_k i, counted in full under a causal mask (the hardware computes them); MLP
2ndf per matrix (2, or 3 when gated); logits 2ndV (BERT: only at the masked positions, after
its 2Pd^2 MLM transform). Not counted: gathers, norms, softmax, activations, dropout, biases,
Primer's depthwise convolutions (< 0.2%) and the optimizer. The per-matmul counts below must
equal the models' own `*_matmul_flops` (checked at start-up); XLA's `cost_analysis()` of the
compiled step (all ops) is printed beside them.

MFU = model FLOPs per step / (median step time x median peak). The 2 CPU cores are shared
with other jobs, so steps and peak probes are sampled round-robin (a probe before every case's
sample, both averaged over >= 1 s) and medians are compared: load slows both alike.
`*_mfu_cpu_time` divides FLOPs per CPU-second of this process by the peak's FLOPs per
CPU-second: blind to how much CPU other jobs take, but it also counts spinning threads.

Compiled steps go to the persistent JAX compilation cache (default results/cache/jax, the
workflow's), so a second run skips compilation. The last line is one JSON object of figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from pipeline_lib.config import load_config  # noqa: E402
from pipeline_lib.data.layout_config import layout_from_config  # noqa: E402
from pipeline_lib.models import bert, decoder_lm, t5  # noqa: E402
from pipeline_lib.models.configs import t5_config  # noqa: E402
from pipeline_lib.train import data as train_data  # noqa: E402
from pipeline_lib.train import loop, optim  # noqa: E402
from pipeline_lib.train import mesh as mesh_lib  # noqa: E402
from pipeline_lib.train.checkpoint import Checkpointer  # noqa: E402

PEAK_N = 2048
BENCH_BATCH, BENCH_LENGTH = 32, 128  # 4096 tokens per batch (per stack for T5)
BENCH_PREDICTIONS = 20  # BERT max_predictions_per_seq at length 128 (15%, rounded up)
TARGET_MFU = 0.60
TARGET_CHECKPOINT_OVERHEAD = 0.10
TARGET_CASES = {"t5": ["t5_bench"], "bert": ["bert_bench"],
                "decoder_lm": ["lm_primer_bench", "lm_tpp_bench"]}

# --- model FLOPs, per matmul (forward pass of one batch; a train step is 3x) ----------------


def _attention(prefix: str, q_len: int, kv_len: int, d: int, inner: int, layers: int):
    return {
        f"{prefix} q/out projections": layers * 2 * 2 * q_len * d * inner,
        f"{prefix} k/v projections": layers * 2 * 2 * kv_len * d * inner,
        f"{prefix} scores + values": layers * 2 * 2 * q_len * kv_len * inner,
    }


def t5_forward_matmuls(cfg, batch: int, enc_len: int, dec_len: int) -> dict[str, int]:
    d, inner, f, v = cfg.d_model, cfg.qkv_dim, cfg.d_ff, cfg.vocab_size
    mats = 3 if cfg.mlp in ("gated-gelu", "swiglu") else 2
    enc, dec = cfg.num_encoder_layers, cfg.num_decoder_layers
    out = {
        **_attention("encoder self-attention", enc_len, enc_len, d, inner, enc),
        "encoder MLP": enc * mats * 2 * enc_len * d * f,
        **_attention("decoder self-attention", dec_len, dec_len, d, inner, dec),
        **_attention("decoder cross-attention", dec_len, enc_len, d, inner, dec),
        "decoder MLP": dec * mats * 2 * dec_len * d * f,
        "logits": 2 * dec_len * d * v,
    }
    return {k: batch * x for k, x in out.items()}


def bert_forward_matmuls(cfg, batch: int, length: int, predictions: int) -> dict[str, int]:
    d, f, v, layers = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers
    out = {
        **_attention("self-attention", length, length, d, d, layers),
        "MLP": layers * 2 * 2 * length * d * f,
        "MLM head transform": 2 * predictions * d * d,
        "logits": 2 * predictions * d * v,
    }
    return {k: batch * x for k, x in out.items()}


def lm_forward_matmuls(cfg, batch: int, length: int) -> dict[str, int]:
    d, inner, f, v = cfg.d_model, cfg.qkv_dim, cfg.d_ff, cfg.vocab_size
    mats = 3 if cfg.resolved_mlp in decoder_lm.GATED else 2
    out = {
        **_attention("self-attention", length, length, d, inner, cfg.num_layers),
        "MLP": cfg.num_layers * mats * 2 * length * d * f,
        "logits": 2 * length * d * v,
    }
    return {k: batch * x for k, x in out.items()}


def _checked(name: str, matmuls: dict[str, int], model_count: int) -> dict[str, int]:
    """The per-matmul count, which must agree with the model's own `*_matmul_flops`."""
    if sum(matmuls.values()) != model_count:
        raise AssertionError(
            f"{name}: per-matmul forward FLOPs {sum(matmuls.values())} != the model's "
            f"*_matmul_flops {model_count}; one of the two counts is wrong"
        )
    return matmuls


# --- cases ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    """One jitted train step with its state and batch, and the samples timed for it."""

    name: str
    describe: str
    tokens: int  # positions per step (encoder + decoder for T5)
    forward_matmuls: dict[str, int]
    jitted: Callable  # (state, batch, key) -> (state, metrics); state donated
    state: Any
    batch: dict[str, Any]
    compiled: Any = None
    compile_s: float = 0.0
    xla_flops: float | None = None
    steps_per_sample: int = 1
    wall: list[float] = dataclasses.field(default_factory=list)  # seconds per step
    cpu: list[float] = dataclasses.field(default_factory=list)  # process CPU-seconds per step

    @property
    def model_flops(self) -> int:
        return 3 * sum(self.forward_matmuls.values())


def _tokens(rng: np.random.Generator, shape, lo: int, hi: int) -> np.ndarray:
    return rng.integers(lo, hi, shape).astype(np.int32)


def _adamw() -> tuple[optax.GradientTransformation, Callable]:
    return optim.make_optimizer(optim.OptimizerConfig(
        name="adamw", schedule="linear", learning_rate=1e-3, warmup_steps=1000,
        total_steps=10_000,
    ))


def engine_step(loss_fn, params, optimizer, normalizing: str, mesh, options) -> tuple:
    """(jitted step, initial TrainState), built exactly as `loop.train` builds them."""
    tx, schedule = optimizer
    params = mesh_lib.shard_state(params, mesh)
    rep = mesh_lib.replicated(mesh)
    state = loop.TrainState(
        params, mesh_lib.shard_state(tx.init(params), mesh),
        jax.device_put(jnp.int32(0), rep), jax.device_put(jnp.int32(-1), rep),
    )
    step = loop.make_train_step(loss_fn, tx, schedule=schedule, loss_normalizing=normalizing,
                                compute_dtype=loop.default_compute_dtype())
    return loop.jit_train_step(step, state, mesh, options), state


def t5_case(name, cfg, batch: int, enc_len: int, dec_len: int, mesh, options) -> Case:
    graphdef, params, rest = t5.split_model(t5.T5(cfg, rngs=nnx.Rngs(params=0)))

    def forward(params, batch, rng):  # as pipeline_lib.experiments.transfer.pretrain
        return t5.t5_forward(
            graphdef, params, rest, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch["decoder_target_tokens"], dropout_rng=rng, deterministic=rng is None,
        )

    rng = np.random.default_rng(0)
    features = train_data.encdec_features(_tokens(rng, (batch, enc_len), 2, cfg.vocab_size),
                                          _tokens(rng, (batch, dec_len), 2, cfg.vocab_size))
    optimizer = optim.make_optimizer(optim.OptimizerConfig())  # Adafactor, rsqrt (T5X)
    jitted, state = engine_step(loop.make_token_loss_fn(forward), params, optimizer, "sum",
                                mesh, options)
    return Case(
        name=name,
        describe=(f"T5 d{cfg.d_model} {cfg.num_encoder_layers}+{cfg.num_decoder_layers}L "
                  f"{cfg.num_heads}x{cfg.resolved_head_dim} ff{cfg.d_ff} {cfg.mlp} "
                  f"V{cfg.vocab_size} dropout {cfg.dropout_rate}; {batch} x ({enc_len}+{dec_len})"
                  f"; Adafactor"),
        tokens=batch * (enc_len + dec_len),
        forward_matmuls=_checked(name, t5_forward_matmuls(cfg, batch, enc_len, dec_len),
                                 t5.t5_matmul_flops(cfg, batch, enc_len, dec_len)),
        jitted=jitted, state=state, batch=mesh_lib.shard_batch(features, mesh),
    )


def bert_mlm_inputs(graphdef, batch: int, length: int, predictions: int, vocab: int):
    """(loss_fn, features) of a BERT MLM step on a seeded random batch with sparse masked
    positions (shared with benchmarks/vs_torch.py, so both time the same work)."""

    def forward(params, batch, rng):
        return bert.bert_mlm_logits(
            graphdef, params, batch["input_ids"], batch["input_mask"],
            masked_positions=batch["masked_lm_positions"], dropout_rng=rng,
            deterministic=rng is None,
        )

    rng = np.random.default_rng(0)
    positions = np.stack([np.sort(rng.choice(np.arange(1, length - 1), predictions, False))
                          for _ in range(batch)]).astype(np.int32)
    features = {
        "input_ids": _tokens(rng, (batch, length), 5, vocab),
        "input_mask": np.ones((batch, length), np.int32),
        "masked_lm_positions": positions,
        "masked_lm_ids": _tokens(rng, (batch, predictions), 5, vocab),
        "masked_lm_weights": np.ones((batch, predictions), np.float32),
    }
    loss_fn = loop.make_token_loss_fn(forward, targets_key="masked_lm_ids",
                                      weights_key="masked_lm_weights")
    return loss_fn, features


def bert_case(name, cfg, batch: int, length: int, predictions: int, mesh, options) -> Case:
    graphdef, params = nnx.split(bert.Bert(cfg, rngs=nnx.Rngs(params=0)))
    loss_fn, features = bert_mlm_inputs(graphdef, batch, length, predictions, cfg.vocab_size)
    # the pooler is outside the MLM loss; AdamW still updates it, as training does
    jitted, state = engine_step(loss_fn, params, _adamw(), "mean", mesh, options)
    return Case(
        name=name,
        describe=(f"BERT d{cfg.hidden_size} {cfg.num_layers}L {cfg.num_heads}x{cfg.head_dim} "
                  f"ff{cfg.intermediate_size} V{cfg.vocab_size} dropout "
                  f"{cfg.hidden_dropout_rate}; {batch} x {length}, {predictions} masked; AdamW"),
        tokens=batch * length,
        forward_matmuls=_checked(name, bert_forward_matmuls(cfg, batch, length, predictions),
                                 bert.bert_matmul_flops(cfg, batch, length, predictions)),
        jitted=jitted, state=state, batch=mesh_lib.shard_batch(features, mesh),
    )


def _lm_batch(vocab: int, batch: int, length: int) -> dict[str, np.ndarray]:
    sequence = _tokens(np.random.default_rng(0), (batch, length + 1), 2, vocab)
    return {"inputs": sequence[:, :-1], "targets": sequence[:, 1:],
            "weights": np.ones((batch, length), np.float32)}


def lm_case(name, cfg, batch: int, length: int, mesh, options) -> Case:
    graphdef, params = nnx.split(decoder_lm.DecoderLM(cfg, rngs=nnx.Rngs(params=0)))

    def forward(params, batch, rng):
        return decoder_lm.decoder_lm_logits(graphdef, params, batch["inputs"], dropout_rng=rng,
                                            deterministic=rng is None)

    loss_fn = loop.make_token_loss_fn(forward, targets_key="targets", weights_key="weights")
    jitted, state = engine_step(loss_fn, params, _adamw(), "mean", mesh, options)
    return Case(
        name=name,
        describe=(f"decoder LM {cfg.variant} d{cfg.d_model} {cfg.num_layers}L "
                  f"{cfg.num_heads}x{cfg.resolved_head_dim} ff{cfg.d_ff} {cfg.resolved_mlp} "
                  f"V{cfg.vocab_size}; {batch} x {length}; AdamW"),
        tokens=batch * length,
        forward_matmuls=_checked(name, lm_forward_matmuls(cfg, batch, length),
                                 decoder_lm.decoder_lm_matmul_flops(cfg, batch, length)),
        jitted=jitted, state=state,
        batch=mesh_lib.shard_batch(_lm_batch(cfg.vocab_size, batch, length), mesh),
    )


class _PlainBlock(nnx.Module):
    def __init__(self, d: int, heads: int, ff: int, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(d, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=d, decode=False,
                                           rngs=rngs)
        self.ln2 = nnx.LayerNorm(d, rngs=rngs)
        self.fc1 = nnx.Linear(d, ff, rngs=rngs)
        self.fc2 = nnx.Linear(ff, d, rngs=rngs)

    def __call__(self, x, mask):
        x = x + self.attn(self.ln1(x), mask=mask)
        return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))


class _PlainLM(nnx.Module):
    def __init__(self, vocab: int, length: int, d: int, layers: int, heads: int, ff: int,
                 rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, d, rngs=rngs)
        self.pos = nnx.Embed(length, d, rngs=rngs)
        self.blocks = nnx.List([_PlainBlock(d, heads, ff, rngs) for _ in range(layers)])
        self.ln_f = nnx.LayerNorm(d, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens) + self.pos(jnp.arange(tokens.shape[1]))[None]
        mask = nnx.make_causal_mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.embed.attend(self.ln_f(x))


def plain_lm_case(name: str, vocab: int, batch: int, length: int, mesh) -> Case:
    """The baseline, outside the engine: plain `jax.jit` of value_and_grad + optax AdamW."""
    d, layers, heads, ff = 256, 4, 4, 1024
    graphdef, params = nnx.split(_PlainLM(vocab, length, d, layers, heads, ff, nnx.Rngs(0)))
    tx = optax.adamw(1e-3, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01)

    def step(state, batch, key):
        params, opt_state = state

        def loss(p):
            logits = nnx.merge(graphdef, p)(batch["inputs"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": value}

    matmuls = {
        **_attention("self-attention", length, length, d, d, layers),
        "MLP": layers * 2 * 2 * length * d * ff,
        "logits": 2 * length * d * vocab,
    }
    return Case(
        name=name,
        describe=(f"plain Flax NNX LM d{d} {layers}L {heads}x{d // heads} ff{ff} GELU V{vocab}; "
                  f"{batch} x {length}; optax AdamW, jax.jit"),
        tokens=batch * length,
        forward_matmuls={k: batch * x for k, x in matmuls.items()},
        jitted=jax.jit(step, donate_argnums=(0,)), state=(params, tx.init(params)),
        batch=mesh_lib.shard_batch(_lm_batch(vocab, batch, length), mesh),
    )


def laptop_settings(config_path: Path) -> dict[str, Any]:
    """The default config's shapes (schema defaults filled in by `load_config`)."""
    cfg = load_config(config_path)
    with tempfile.TemporaryDirectory() as cache:
        layout = layout_from_config(cfg, cache)
    p, mlm = cfg["transfer"]["pretrain"], cfg["pcfg"]["mlm"]
    return {
        "vocab": int(layout.model_vocab_size), "batch": int(p["batch_size"]),
        "inputs_length": int(p["inputs_length"]), "targets_length": int(p["targets_length"]),
        "save_every": int(p["save_every"]),
        "pcfg_vocab": bert.padded_vocab_size(5 + int(cfg["pcfg"]["generate"]["n_terminals"])),
        "mlm_length": int(mlm["max_seq_length"]),
        "mlm_predictions": int(mlm["max_predictions_per_seq"]),
    }


def case_builders(laptop: dict[str, Any], mesh, options) -> dict[str, Callable[[], Case]]:
    v, b = laptop["vocab"], laptop["batch"]
    n = laptop["inputs_length"] + laptop["targets_length"]  # the LM sees inputs + targets
    bb, bl = BENCH_BATCH, BENCH_LENGTH

    def lm(preset: str, variant: str, batch: int, length: int) -> Callable[[], Case]:
        short = {"primer_ez": "primer", "transformer_pp": "tpp"}[variant]
        cfg = decoder_lm.decoder_lm_config(preset, vocab_size=v, variant=variant)
        suffix = "bench" if preset == "bench" else "laptop"
        return lambda: lm_case(f"lm_{short}_{suffix}", cfg, batch, length, mesh, options)

    return {
        "t5_bench": lambda: t5_case("t5_bench", t5_config("t5_bench", vocab_size=v), bb, bl, bl,
                                    mesh, options),
        "bert_bench": lambda: bert_case("bert_bench", bert.bert_config("bert_bench", vocab_size=v),
                                        bb, bl, BENCH_PREDICTIONS, mesh, options),
        "lm_primer_bench": lm("bench", "primer_ez", bb, bl),
        "lm_tpp_bench": lm("bench", "transformer_pp", bb, bl),
        "plain_nnx_lm": lambda: plain_lm_case("plain_nnx_lm", v, bb, bl, mesh),
        "t5_laptop": lambda: t5_case(
            "t5_laptop", t5_config("t5_laptop", vocab_size=v), b, laptop["inputs_length"],
            laptop["targets_length"], mesh, options),
        "bert_laptop": lambda: bert_case(
            "bert_laptop", bert.bert_config("bert_laptop", vocab_size=laptop["pcfg_vocab"]), b,
            laptop["mlm_length"], laptop["mlm_predictions"], mesh, options),
        "lm_primer_laptop": lm("laptop", "primer_ez", b, n),
        "lm_tpp_laptop": lm("laptop", "transformer_pp", b, n),
    }


# --- compilation and round-robin timing -----------------------------------------------------


def compile_case(case: Case, key) -> None:
    t0 = time.perf_counter()
    case.compiled = case.jitted.lower(case.state, case.batch, key).compile()
    case.compile_s = time.perf_counter() - t0
    cost = case.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    case.xla_flops = float(cost["flops"]) if cost and "flops" in cost else None


class MatmulPeak:
    """float32 GFLOP/s of a jitted n x n @ n x n (default compiler options), probe by probe."""

    def __init__(self, n: int = PEAK_N):
        k1, k2 = jax.random.split(jax.random.key(0))
        self.a = jax.random.normal(k1, (n, n), jnp.float32)
        self.b = jax.random.normal(k2, (n, n), jnp.float32)
        self.f = jax.jit(jnp.matmul).lower(self.a, self.b).compile()
        self.f(self.a, self.b).block_until_ready()
        self.gflop = 2 * n**3 / 1e9
        self.wall: list[float] = []  # GFLOP/s of each probe
        self.cpu: list[float] = []  # GFLOP per process CPU-second of each probe

    def probe(self, min_s: float = 1.0) -> float:
        """Mean rate over >= min_s of back-to-back products: averaged over the same kind of
        time window as a training sample (a best-of-short-runs would flatter the peak)."""
        c0, w0, n = time.process_time(), time.perf_counter(), 0
        while n == 0 or time.perf_counter() - w0 < min_s:
            self.f(self.a, self.b).block_until_ready()
            n += 1
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        self.wall.append(n * self.gflop / wall)
        self.cpu.append(n * self.gflop / max(cpu, 1e-9))
        return self.wall[-1]


def run_steps(case: Case, n: int, key) -> tuple[float, float]:
    """(wall, process CPU) seconds of n back-to-back steps, dispatched asynchronously as the
    loop dispatches them, then synced."""
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        case.state, metrics = case.compiled(case.state, case.batch, key)
    jax.block_until_ready((case.state, metrics))
    return time.perf_counter() - w0, time.process_time() - c0


def time_round_robin(cases: list[Case], peak: MatmulPeak, rounds: int, key,
                     sample_s: float) -> None:
    """`rounds` x (for each case: a peak probe, then >= sample_s of its steps)."""
    for case in cases:  # warm-up (first execution allocates), which also sizes the samples
        wall, _ = run_steps(case, 1, key)
        case.steps_per_sample = max(1, min(50, round(sample_s / wall)))
    for r in range(rounds):
        for case in cases:
            peak.probe(sample_s)
            wall, cpu = run_steps(case, case.steps_per_sample, key)
            case.wall.append(wall / case.steps_per_sample)
            case.cpu.append(cpu / case.steps_per_sample)
        line = "  ".join(f"{c.name} {c.wall[-1]:.3g}s" for c in cases)
        print(f"  round {r + 1}/{rounds}: peak {statistics.median(peak.wall[-len(cases):]):.1f} "
              f"GFLOP/s; {line}", flush=True)


# --- checkpoint overhead --------------------------------------------------------------------


def checkpoint_overhead(case: Case, period: int, key, *, saves: int, between: int) -> dict:
    """Seconds per save (sync + async save + wait until written) / (period x seconds per step).

    `saves` times: train `between` steps (timed: the step time), then save as `loop.train`
    does. The directory is under results/ (the disk the workflow writes its checkpoints to).
    """
    base = ROOT / "results"
    base.mkdir(exist_ok=True)
    step = int(jax.device_get(case.state.step))
    save_s, step_s = [], []
    with tempfile.TemporaryDirectory(prefix="train_mfu_ckpt_", dir=base) as tmp:
        ckpt = Checkpointer(Path(tmp) / "ckpt", keep=3, async_save=True)
        try:
            for _ in range(saves):
                wall, _ = run_steps(case, between, key)
                step += between
                step_s.append(wall / between)
                t0 = time.perf_counter()
                if int(jax.device_get(case.state.nonfinite_step)) >= 0:  # loop's check_finite
                    raise RuntimeError(f"{case.name}: non-finite step before the checkpoint")
                meta = {"data": {"epoch": 0, "index": step}, "best": None, "last_eval": None,
                        "seed": 0}
                ckpt.save(step, loop._state_tree(case.state, key), meta)
                ckpt.wait()
                save_s.append(time.perf_counter() - t0)
            last = Path(tmp) / "ckpt" / str(step)
            size = sum(f.stat().st_size for f in last.rglob("*") if f.is_file())
        finally:
            ckpt.close()
    per_save, per_step = statistics.median(save_s), statistics.median(step_s)
    return {"seconds_per_save": per_save, "step_s": per_step, "bytes": size,
            "overhead": per_save / (period * per_step)}


# --- main -----------------------------------------------------------------------------------


def parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--xla-option wants KEY=VALUE, got {text!r}")
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds, no plain-NNX baseline, 3 checkpoint saves")
    parser.add_argument("--rounds", type=int, help="round-robin rounds (default 4, quick 2)")
    parser.add_argument("--only", help="comma-separated case names (default: all)")
    parser.add_argument("--xla-option", action="append", type=parse_option, default=[],
                        metavar="KEY=VALUE", help="XLA compiler option for every engine step")
    parser.add_argument("--config", type=Path, default=ROOT / "config.yaml",
                        help="workflow config giving the laptop shapes (default config.yaml)")
    parser.add_argument("--jax-cache", default=str(ROOT / "results" / "cache" / "jax"),
                        help="persistent JAX compilation cache ('' to compile afresh)")
    args = parser.parse_args()
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
    if args.jax_cache:
        Path(args.jax_cache).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", args.jax_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    rounds = args.rounds or (2 if args.quick else 4)
    sample_s = 0.5 if args.quick else 1.0
    options = dict(args.xla_option) or None
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    print(f"jax {jax.__version__}, {jax.device_count()} {jax.default_backend()} device(s), "
          f"{os.cpu_count()} CPUs, load average {load0:.1f}; XLA options: {options or 'defaults'}")

    laptop = laptop_settings(args.config)
    print(f"laptop shapes ({args.config.name}): {laptop}")
    mesh, key = mesh_lib.make_mesh(1), jax.random.key(0)
    builders = case_builders(laptop, mesh, options)
    names = args.only.split(",") if args.only else [
        n for n in builders if not (args.quick and n == "plain_nnx_lm")]
    unknown = sorted(set(names) - set(builders))
    if unknown:
        parser.error(f"--only: unknown case(s) {', '.join(unknown)}; known: {', '.join(builders)}")

    print("\nmodel GFLOP per train step (3 x forward matmuls, = the models' *_matmul_flops x 3; "
          "XLA cost analysis of the whole step beside it):")
    cases = []
    for name in names:
        case = builders[name]()
        compile_case(case, key)
        cases.append(case)
        xla = f"{case.xla_flops / 1e9:.2f}" if case.xla_flops else "n/a"
        print(f"  {name:17s} {case.model_flops / 1e9:7.2f} (XLA {xla}; compile "
              f"{case.compile_s:.1f} s)  {case.describe}")
    big = max(cases, key=lambda c: c.model_flops)
    print(f"  forward matmuls of {big.name} (GFLOP): " + ", ".join(
        f"{k} {v / 1e9:.2f}" for k, v in sorted(big.forward_matmuls.items(), key=lambda t: -t[1])))

    peak = MatmulPeak()
    print(f"\nround-robin: {rounds} rounds of (peak probe, case sample) for {len(cases)} cases, "
          f">= {sample_s} s each; first peak probe {peak.probe(sample_s):.1f} GFLOP/s")
    peak.wall.clear()  # the first probe ran apart from the cases: not a round-robin sample
    peak.cpu.clear()
    time_round_robin(cases, peak, rounds, key, sample_s)

    peak_wall, peak_cpu = statistics.median(peak.wall), statistics.median(peak.cpu)
    figures: dict[str, Any] = {"matmul_peak_gflop_per_s": peak_wall,
                               "matmul_peak_gflop_per_cpu_s": peak_cpu}
    print(f"\npeak float32 matmul: median {peak_wall:.1f} GFLOP/s (range {min(peak.wall):.1f}"
          f"-{max(peak.wall):.1f} over {len(peak.wall)} probes), {peak_cpu:.1f} GFLOP per "
          f"CPU-second")
    print(f"{'case':17s} {'tokens/s':>9s} {'step s':>8s} {'MFU':>6s} {'CPU-t MFU':>9s} "
          f"{'CPU/wall':>8s}")
    for case in cases:
        step_s, cpu_s = statistics.median(case.wall), statistics.median(case.cpu)
        mfu = case.model_flops / 1e9 / step_s / peak_wall
        mfu_cpu = case.model_flops / 1e9 / cpu_s / peak_cpu
        print(f"{case.name:17s} {case.tokens / step_s:9.0f} {step_s:8.3f} {mfu:6.1%} "
              f"{mfu_cpu:9.1%} {cpu_s / step_s:8.2f}")
        figures.update({f"{case.name}_tokens_per_s": case.tokens / step_s,
                        f"{case.name}_step_s": step_s, f"{case.name}_mfu": mfu,
                        f"{case.name}_mfu_cpu_time": mfu_cpu,
                        f"{case.name}_model_gflop_per_step": case.model_flops / 1e9})

    ckpt_case = next((c for c in cases if c.name == "t5_laptop"), None)
    if ckpt_case is not None:
        period = laptop["save_every"]
        saves, between = (3, 3) if args.quick else (5, 5)
        result = checkpoint_overhead(ckpt_case, period, key, saves=saves, between=between)
        print(f"\ncheckpoint (t5_laptop, pretrain.save_every = {period}): "
              f"{result['seconds_per_save']:.3f} s per save until written "
              f"({result['bytes'] / 1e6:.1f} MB) / ({period} x {result['step_s']:.3f} s per "
              f"step) = +{result['overhead']:.2%} (upper bound; median of {saves} saves)")
        figures.update({"checkpoint_overhead_fraction": result["overhead"],
                        "checkpoint_seconds_per_save": result["seconds_per_save"],
                        "checkpoint_period_steps": period})

    targets = {f"target_mfu_met_{family}": all(figures[f"{n}_mfu"] >= TARGET_MFU for n in ns)
               for family, ns in TARGET_CASES.items()
               if all(f"{n}_mfu" in figures for n in ns)}
    if "checkpoint_overhead_fraction" in figures:
        targets["target_checkpoint_overhead_met"] = (
            figures["checkpoint_overhead_fraction"] <= TARGET_CHECKPOINT_OVERHEAD)
    print("\ntargets: " + (", ".join(f"{k} {v}" for k, v in targets.items()) or "none measured"))
    figures.update(targets)
    figures.update({"load_average_start": load0, "load_average_end": os.getloadavg()[0],
                    "rounds": rounds, "quick": args.quick,
                    "xla_options": json.dumps(options) if options else "defaults",
                    "wall_s": time.perf_counter() - started})
    print(json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v
                      for k, v in figures.items()}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
