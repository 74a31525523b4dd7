"""Benchmark: the engine's T5 and BERT training steps against Hugging Face transformers + PyTorch.

    python benchmarks/vs_torch.py [--quick] [--rounds N] [--sample-s S] [--only CASE,...]
                                  [--torch-threads N]

What is measured: tokens per second of one full training step (forward + backward + optimizer
update) on this CPU, float32, for the same model, batch and sequence lengths on both sides:

| case        | model                                         | batch             | optimizer |
|-------------|-----------------------------------------------|-------------------|-----------|
| t5_laptop   | `t5_laptop`: T5 v1.0, d128, 2+2 layers, V1336 | 16 x (64 + 16)    | Adafactor |
| bert_laptop | `bert_laptop`: d128, 2 layers, V104           | 32 x 32, 5 masked | AdamW     |
| t5_bench    | `t5_bench`: T5 v1.0, d256, 4+4 layers, V1336  | 32 x (128 + 128)  | Adafactor |
| bert_bench  | `bert_bench`: d256, 4 layers x 4 heads, V1336 | 32 x 128, 20 mask | AdamW     |

T5 uses the project's laptop vocabulary (1336 ids, as benchmarks/train_mfu.py); tokens per step
count encoder + decoder positions (T5) or all input positions (BERT). `--quick` runs only the
laptop cases, with fewer rounds and shorter samples.

Engine: the step `loop.train` runs (`loop.make_train_step` + `loop.jit_train_step`, state
donated, on the loop's mesh; `optim.make_optimizer`: T5X Adafactor with the rsqrt schedule for
T5, loss summed over tokens; AdamW (b2 0.98, eps 1e-6, weight decay 0.01 off biases and norms)
with the linear schedule for BERT, loss averaged over the masked tokens). It includes what the
engine always does per step: the global gradient norm and the non-finite guard.

Baseline: the *same* model in transformers, built by `interop.to_transformers(model)` from the
engine model's initial weights (`T5ForConditionalGeneration`, `BertForMaskedLM`), in train mode,
eager PyTorch (no torch.compile), `torch.set_num_threads` = the cores JAX uses. One step is
`zero_grad; forward; cross-entropy; backward; optimizer.step()`:
  * T5: `transformers.optimization.Adafactor(lr=0.01 fixed (the rsqrt schedule's value for the
    first 10k steps), scale_parameter=True, relative_step=False, decay_rate=-0.8 (= T5X's 0.8),
    beta1=None, clip_threshold=1.0, eps=(1e-30, 1e-3))`, loss summed over target tokens;
  * BERT: `torch.optim.AdamW(lr 1e-3, betas (0.9, 0.98), eps 1e-6, weight decay 0.01 except
    biases and LayerNorm, fused=True)` (fused is the Hugging Face Trainer's default optimizer
    with torch >= 2.8). The encoder output is gathered at the masked positions before
    `model.cls` (as the engine's sparse MLM head does), so neither side projects unmasked
    positions onto the vocabulary.
Dropout is 0 on both sides (same work; both skip dropout entirely at rate 0). BERT is built
post-LN (`pre_ln=False`, not the project's default pre-LN), because Hugging Face BERT is post-LN
and `to_transformers` needs it; the two have the same matmuls and norm count per layer (pre-LN
adds one final norm). The first step's loss is compared on both sides as a check that both
train the same function.

Threads: torch gets `OMP_WAIT_POLICY=PASSIVE` unless the environment sets it: with libgomp's
default spin-waiting, a 2-thread torch T5 laptop step took ~2.5 s instead of ~0.08 s while
other jobs held a core (1 thread: ~0.065 s), a contention artefact rather than torch's speed.

Timing: after warm-up (compilation + 3 steps for JAX, 4 for torch; the last one sizes the
samples), `--rounds` rounds;
in each round every case runs one engine sample and one torch sample back to back (the order
alternates between rounds), each sample N back-to-back steps with N sized from the warm-up so a
sample lasts >= `--sample-s`. The 2 cores are shared with other jobs, so medians over rounds are
reported, and load in one round hits both sides of that round alike.

Reading the ratio: `<case>_ratio_vs_torch` = median engine tokens/s / median torch tokens/s
(> 1: the engine is faster); the per-round paired ratios (engine / torch of the same round) are
printed and their range is in the JSON. CPU/wall (process CPU-seconds per wall second, at
most the number of cores) shows how much of the 2 cores each side got, or burnt spinning.
The issue's goal is engine >= 1.5 x torch tokens/s (`target_met_<case>`). The last line is one
JSON object of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Idle OpenMP threads sleep instead of spinning (read when torch loads libgomp; set it yourself
# to override). On this shared 2-core machine libgomp's default spin-wait made a 2-thread torch
# step 10-30x slower whenever another job held a core (see the docstring).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from flax import nnx  # noqa: E402
from transformers.optimization import Adafactor  # noqa: E402

from pipeline_lib.models import bert, t5  # noqa: E402
from pipeline_lib.models.configs import t5_config  # noqa: E402
from pipeline_lib.models.interop import to_transformers  # noqa: E402
from pipeline_lib.train import data as train_data  # noqa: E402
from pipeline_lib.train import loop, optim  # noqa: E402
from pipeline_lib.train import mesh as mesh_lib  # noqa: E402

TARGET_RATIO = 1.5
T5_VOCAB = 1336  # the project's laptop vocabulary layout (config.yaml), as train_mfu.py
BERT_LAPTOP_VOCAB = 104  # a PCFG-sized vocabulary (~100, a multiple of 8)
BERT_BENCH_VOCAB = 1336  # as train_mfu.py's bert_bench
T5_LR = 0.01  # rsqrt schedule: 1 / sqrt(max(step, 10000)) = 0.01 for the first 10k steps
BERT_LR = 1e-3

# name: (family, preset, vocab, batch, lengths); T5 lengths (inputs, targets), BERT (length,
# masked predictions)
CASES = {
    "t5_laptop": ("t5", "t5_laptop", T5_VOCAB, 16, (64, 16)),
    "bert_laptop": ("bert", "bert_laptop", BERT_LAPTOP_VOCAB, 32, (32, 5)),
    "t5_bench": ("t5", "t5_bench", T5_VOCAB, 32, (128, 128)),
    "bert_bench": ("bert", "bert_bench", BERT_BENCH_VOCAB, 32, (128, 20)),
}
QUICK_CASES = ("t5_laptop", "bert_laptop")


class Side:
    """One side of a case: `step_n(n)` runs n training steps and returns when they are done."""

    def __init__(self, step_n, first_loss: float, finite):
        self.step_n = step_n
        self.first_loss = first_loss  # loss of the very first step (before any update)
        self.finite = finite  # () -> True while no step has seen a non-finite loss
        self.steps_per_sample = 1
        self.step_s: list[float] = []  # seconds per step, one entry per round
        self.cpu_s: list[float] = []  # process CPU-seconds per step (both cores: up to 2x)

    def sample(self) -> None:
        c0, t0 = time.process_time(), time.perf_counter()
        self.step_n(self.steps_per_sample)
        self.step_s.append((time.perf_counter() - t0) / self.steps_per_sample)
        self.cpu_s.append((time.process_time() - c0) / self.steps_per_sample)


def engine_side(loss_fn, params, optimizer, normalizing: str, features, mesh) -> Side:
    """The jitted engine step, built as `loop.train` builds it; compiled and run once here."""
    from train_mfu import engine_step  # the MFU benchmark's step builder (this folder)

    jitted, state = engine_step(loss_fn, params, optimizer, normalizing, mesh, None)
    batch, key = mesh_lib.shard_batch(features, mesh), jax.random.key(0)
    t0 = time.perf_counter()
    compiled = jitted.lower(state, batch, key).compile()
    print(f"    engine compile {time.perf_counter() - t0:.1f} s", flush=True)

    def step_n(n: int):
        nonlocal state
        for _ in range(n):  # dispatched asynchronously, as the loop dispatches them
            state, metrics = compiled(state, batch, key)
        jax.block_until_ready((state, metrics))
        return metrics

    metrics = jax.device_get(step_n(1))
    loss = float(metrics["loss_sum"])
    if normalizing == "mean":
        loss /= float(metrics["num_tokens"])
    return Side(step_n, loss, lambda: int(jax.device_get(state.nonfinite_step)) < 0)


def torch_side(model, optimizer, loss_of) -> Side:
    """`zero_grad; loss_of(model) (forward + loss); backward; optimizer.step()` per step."""
    model.train()
    last_loss = None

    def step_n(n: int):
        nonlocal last_loss
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(model)
            loss.backward()
            optimizer.step()
        last_loss = float(loss.detach())

    step_n(1)
    return Side(step_n, last_loss, lambda: bool(np.isfinite(last_loss)))


def t5_case(preset: str, vocab: int, batch: int, lengths, mesh):
    enc_len, dec_len = lengths
    cfg = t5_config(preset, vocab_size=vocab, dropout_rate=0.0)
    model = t5.T5(cfg, rngs=nnx.Rngs(params=0))
    hf_model = to_transformers(model)  # same weights, before the engine donates them
    graphdef, params, rest = t5.split_model(model)

    def forward(params, batch, rng):  # as pipeline_lib.experiments.transfer.pretrain
        return t5.t5_forward(
            graphdef, params, rest, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch["decoder_target_tokens"], dropout_rng=rng, deterministic=rng is None,
        )

    rng = np.random.default_rng(0)
    features = train_data.encdec_features(
        rng.integers(2, vocab, (batch, enc_len)).astype(np.int32),
        rng.integers(2, vocab, (batch, dec_len)).astype(np.int32),
    )
    engine = engine_side(loop.make_token_loss_fn(forward), params,
                         optim.make_optimizer(optim.OptimizerConfig()), "sum", features, mesh)

    inputs = torch.from_numpy(features["encoder_input_tokens"]).long()
    decoder_inputs = torch.from_numpy(features["decoder_input_tokens"]).long()
    targets = torch.from_numpy(features["decoder_target_tokens"]).long()
    attention_mask = torch.ones_like(inputs)

    def loss_of(m):
        logits = m(input_ids=inputs, attention_mask=attention_mask,
                   decoder_input_ids=decoder_inputs, use_cache=False).logits
        return F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), reduction="sum")

    adafactor = Adafactor(hf_model.parameters(), lr=T5_LR, eps=(1e-30, 1e-3), clip_threshold=1.0,
                          decay_rate=-0.8, beta1=None, weight_decay=0.0, scale_parameter=True,
                          relative_step=False, warmup_init=False)
    describe = (f"T5 d{cfg.d_model} {cfg.num_encoder_layers}+{cfg.num_decoder_layers}L "
                f"{cfg.num_heads}x{cfg.resolved_head_dim} ff{cfg.d_ff} {cfg.mlp} V{vocab}; "
                f"{batch} x ({enc_len}+{dec_len}); torch attention "
                f"{hf_model.config._attn_implementation}")
    return engine, torch_side(hf_model, adafactor, loss_of), batch * (enc_len + dec_len), describe


def bert_case(preset: str, vocab: int, batch: int, lengths, mesh):
    length, predictions = lengths
    cfg = bert.bert_config(preset, vocab_size=vocab, pre_ln=False, hidden_dropout_rate=0.0,
                           attention_dropout_rate=0.0)
    model = bert.Bert(cfg, rngs=nnx.Rngs(params=0))
    hf_model = to_transformers(model)  # BertForMaskedLM with the same weights
    graphdef, params = nnx.split(model)
    from train_mfu import bert_mlm_inputs  # the MFU benchmark's batch (this folder)

    loss_fn, features = bert_mlm_inputs(graphdef, batch, length, predictions, vocab)
    positions = features["masked_lm_positions"]
    adamw = optim.make_optimizer(optim.OptimizerConfig(
        name="adamw", schedule="linear", learning_rate=BERT_LR, warmup_steps=1000,
        total_steps=10_000,
    ))
    engine = engine_side(loss_fn, params, adamw, "mean", features, mesh)

    input_ids = torch.from_numpy(features["input_ids"]).long()
    attention_mask = torch.from_numpy(features["input_mask"]).long()
    gather = torch.from_numpy(positions).long()[..., None].expand(-1, -1, cfg.hidden_size)
    labels = torch.from_numpy(features["masked_lm_ids"]).long()

    def loss_of(m):
        hidden = m.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = m.cls(hidden.gather(1, gather))  # sparse prediction, as the engine
        return F.cross_entropy(logits.reshape(-1, vocab), labels.reshape(-1))

    no_decay = [p for n, p in hf_model.named_parameters() if "bias" in n or "LayerNorm" in n]
    decay = [p for n, p in hf_model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
    adamw_torch = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=BERT_LR, betas=(0.9, 0.98), eps=1e-6, fused=True,
    )
    describe = (f"BERT post-LN d{cfg.hidden_size} {cfg.num_layers}L {cfg.num_heads}x"
                f"{cfg.head_dim} ff{cfg.intermediate_size} V{vocab}; {batch} x {length}, "
                f"{predictions} masked; torch attention {hf_model.config._attn_implementation}")
    return engine, torch_side(hf_model, adamw_torch, loss_of), batch * length, describe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="laptop cases only, 5 rounds of >= 0.5 s samples")
    parser.add_argument("--rounds", type=int, help="round-robin rounds (default 9, quick 5)")
    parser.add_argument("--sample-s", type=float,
                        help="minimum seconds per sample (default 1.5, quick 0.5)")
    parser.add_argument("--torch-threads", type=int,
                        help="torch intra-op threads (default: the cores JAX uses)")
    parser.add_argument("--only", help=f"comma-separated cases (default: all); {', '.join(CASES)}")
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 9)
    sample_s = args.sample_s or (0.5 if args.quick else 1.5)
    names = args.only.split(",") if args.only else list(QUICK_CASES if args.quick else CASES)
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"--only: unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")

    started, load0 = time.perf_counter(), os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0))  # XLA's CPU thread pool uses every core it may run on
    torch.set_num_threads(args.torch_threads or cores)
    transformers.logging.set_verbosity_error()  # BertForMaskedLM: "pooler UNEXPECTED" is expected
    transformers.logging.disable_progress_bar()
    print(f"jax {jax.__version__} ({jax.device_count()} {jax.default_backend()} device(s)), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
          f"{transformers.__version__}; {cores} cores, load average {load0:.1f}; float32; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")

    mesh = mesh_lib.make_mesh(1)
    cases = {}
    for name in names:
        family, preset, vocab, batch, lengths = CASES[name]
        print(f"  building {name} ...", flush=True)
        build = t5_case if family == "t5" else bert_case
        engine, baseline, tokens, describe = build(preset, vocab, batch, lengths, mesh)
        engine.step_n(1)  # second engine warm-up step; torch had one (its first loss) already
        baseline.step_n(2)
        for side in (engine, baseline):  # size the samples from one more timed step
            t0 = time.perf_counter()
            side.step_n(1)
            side.steps_per_sample = max(1, round(sample_s / (time.perf_counter() - t0)))
        cases[name] = (engine, baseline, tokens)
        agree = abs(engine.first_loss - baseline.first_loss) <= 1e-4 * abs(baseline.first_loss)
        print(f"  {name:11s} {describe}\n"
              f"              first-step loss engine {engine.first_loss:.7g}, torch "
              f"{baseline.first_loss:.7g} ({'agree' if agree else 'DIFFER'}); "
              f"{engine.steps_per_sample} / {baseline.steps_per_sample} steps per sample",
              flush=True)

    print(f"\nround-robin: {rounds} rounds x {len(cases)} cases x (engine, torch), samples "
          f">= {sample_s} s (order alternates between rounds)")
    for r in range(rounds):
        line = []
        for name, (engine, baseline, tokens) in cases.items():
            for side in ((engine, baseline) if r % 2 == 0 else (baseline, engine)):
                side.sample()
            line.append(f"{name} {tokens / engine.step_s[-1]:.0f} / "
                        f"{tokens / baseline.step_s[-1]:.0f} = "
                        f"{baseline.step_s[-1] / engine.step_s[-1]:.2f}x")
        print(f"  round {r + 1}/{rounds} (engine / torch tokens/s): " + ";  ".join(line),
              flush=True)

    figures: dict[str, object] = {}
    print(f"\n{'case':11s} {'engine tok/s':>12s} {'torch tok/s':>11s} {'ratio':>6s} "
          f"{'paired range':>13s} {'engine s':>9s} {'torch s':>8s} {'CPU/wall e, t':>13s}  "
          f"target >= {TARGET_RATIO}x")
    for name, (engine, baseline, tokens) in cases.items():
        if not (engine.finite() and baseline.finite()):
            raise RuntimeError(f"{name}: a non-finite loss during the benchmark")
        engine_s, torch_s = statistics.median(engine.step_s), statistics.median(baseline.step_s)
        ratio = torch_s / engine_s
        paired = [t / e for e, t in zip(engine.step_s, baseline.step_s)]
        engine_cpu = statistics.median(engine.cpu_s) / engine_s
        torch_cpu = statistics.median(baseline.cpu_s) / torch_s
        print(f"{name:11s} {tokens / engine_s:12.0f} {tokens / torch_s:11.0f} {ratio:6.2f} "
              f"{min(paired):6.2f}-{max(paired):<6.2f} {engine_s:9.4f} {torch_s:8.4f} "
              f"{engine_cpu:6.2f},{torch_cpu:5.2f}  "
              f"{'met' if ratio >= TARGET_RATIO else 'NOT met'}")
        figures.update({
            f"{name}_engine_tokens_per_s": tokens / engine_s,
            f"{name}_torch_tokens_per_s": tokens / torch_s,
            f"{name}_ratio_vs_torch": ratio,
            f"{name}_ratio_vs_torch_paired_min": min(paired),
            f"{name}_ratio_vs_torch_paired_max": max(paired),
            f"{name}_engine_step_s": engine_s,
            f"{name}_torch_step_s": torch_s,
            f"{name}_engine_cpu_per_wall": engine_cpu,
            f"{name}_torch_cpu_per_wall": torch_cpu,
            f"{name}_tokens_per_step": tokens,
            f"{name}_first_loss_engine": engine.first_loss,
            f"{name}_first_loss_torch": baseline.first_loss,
            f"target_met_{name}": ratio >= TARGET_RATIO,
        })
    figures.update({"target_ratio_min": TARGET_RATIO,
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                    "rounds": rounds, "sample_s": sample_s,
                    "quick": args.quick, "cores": cores, "torch_threads": torch.get_num_threads(),
                    "load_average_start": load0, "load_average_end": os.getloadavg()[0],
                    "wall_s": time.perf_counter() - started})
    print(json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v
                      for k, v in figures.items()}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
