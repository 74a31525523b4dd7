"""Benchmark: HINT inference with a per-task cache against T0-style concatenation.

    python benchmarks/hint.py [--quick] [--rounds N] [--vocab V] [--out FILE]

One underlying model (the laptop T5 v1.1 of `hint.hyper_laptop`: d 128, 4 x 32 heads, 2+2
layers, gated d_ff 512; a 8, P 4; vocabulary 2100 = the T0 laptop SentencePiece 2000 + 100
extra ids), random weights, batch 32 of one task, I = 256 instruction tokens, X = 64 input
tokens, Y = 8 target tokens. Three jitted, deterministic forwards to teacher-forced logits:

* **concat**: the T5 on the instruction and the input joined (I + X = 320 tokens), T0's way;
* **hint_cached**: `hint_cached_logits` over a per-task cache built once (`hint_task_cache`:
  hyperencoder, generated adapters/prefixes, the instruction's cross-attention keys/values);
* **hint_uncached**: `hint_forward`, the released behaviour (the hypernetwork per example).

Timing is round-robin (one burst of calls per path per round, so other load hits every path
alike); medians per batch, reported per instance. Also: the cache build time, the analytic
(`models.hint_flops`) and XLA (``cost_analysis``) FLOPs ratios, and the break-even number of
instances per task, analytic and measured. Target: hint_cached >= 2.0x faster than concat.

The last line is one JSON object of figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline_lib.files import write_json_atomic  # noqa: E402
from pipeline_lib.models import (  # noqa: E402
    T5,
    flat_params,
    load_flat_params,
    split_model,
    t5_forward,
)
from pipeline_lib.models.configs import T5Config  # noqa: E402
from pipeline_lib.models.hint import (  # noqa: E402
    HyperT5,
    hint_cached_logits,
    hint_config,
    hint_forward,
    hint_task_cache,
    split_hint,
)
from pipeline_lib.models.hint_flops import hint_flops  # noqa: E402

BATCH, INSTRUCTION, INPUTS, TARGETS = 32, 256, 64, 8
TARGET_SPEEDUP = 2.0


def build_models(vocab: int, seed: int = 0):
    """A HINT model with numpy-random weights, and the T5 holding the same T5 weights."""
    cfg = hint_config("hyper_laptop", vocab_size=vocab)
    hint = nnx.eval_shape(lambda: HyperT5(cfg, rngs=nnx.Rngs(params=0)))
    rng = np.random.default_rng(seed)
    flat = {k: rng.normal(0, 0.05, v.shape).astype(np.float32)
            for k, v in flat_params(hint).items()}
    load_flat_params(hint, flat)
    t5_cfg = T5Config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(T5Config)})
    t5 = nnx.eval_shape(lambda: T5(t5_cfg, rngs=nnx.Rngs(params=0)))
    load_flat_params(t5, {k: v for k, v in flat.items() if not k.startswith("hyper/")})
    return cfg, split_hint(hint), split_model(t5)


def make_cases(vocab: int):
    cfg, (hdef, hparams), (tdef, tparams, trest) = build_models(vocab)
    rng = np.random.default_rng(1)
    ids = lambda *shape: jnp.asarray(rng.integers(2, vocab, shape, dtype=np.int32))
    instruction = ids(1, INSTRUCTION)
    inputs, targets = ids(BATCH, INPUTS), ids(BATCH, TARGETS)
    dec_in = jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]
    joined = jnp.concatenate([jnp.repeat(instruction, BATCH, 0), inputs], axis=1)

    concat = jax.jit(lambda p, enc, dec: t5_forward(tdef, p, trest, enc, dec))
    cached = jax.jit(lambda p, c, x, dec: hint_cached_logits(hdef, p, c, x, dec))
    uncached = jax.jit(lambda p, h, x, dec: hint_forward(hdef, p, h, x, dec))
    build_cache = jax.jit(lambda p, h: hint_task_cache(hdef, p, h))

    cache = jax.block_until_ready(build_cache(hparams, instruction))
    instructions = jnp.repeat(instruction, BATCH, 0)
    cases = {
        "concat": (concat, (tparams, joined, dec_in)),
        "hint_cached": (cached, (hparams, cache, inputs, dec_in)),
        "hint_uncached": (uncached, (hparams, instructions, inputs, dec_in)),
        "cache_build": (build_cache, (hparams, instruction)),
    }
    xla = {name: fn.lower(*args).cost_analysis()["flops"] for name, (fn, args) in cases.items()}
    for fn, args in cases.values():  # compile
        jax.block_until_ready(fn(*args))
    return cfg, cases, xla


def time_burst(fn, args, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of short bursts")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=2100)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    burst = 3 if args.quick else 10

    cfg, cases, xla = make_cases(args.vocab)
    samples = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (fn, fn_args) in cases.items():
            samples[name].append(time_burst(fn, fn_args, burst))
    median = {name: statistics.median(v) for name, v in samples.items()}
    paths = ("concat", "hint_cached", "hint_uncached")
    per_instance = {name: median[name] / BATCH for name in paths}

    flops = hint_flops(cfg, INSTRUCTION, INPUTS, TARGETS)
    cached_speedup = median["concat"] / median["hint_cached"]
    saving = per_instance["concat"] - per_instance["hint_cached"]
    measured_break_even = math.floor(median["cache_build"] / saving) + 1 if saving > 0 else None
    figures = {
        "shape": {"batch": BATCH, "instruction": INSTRUCTION, "inputs": INPUTS,
                  "targets": TARGETS, "vocab": args.vocab, "preset": "hyper_laptop"},
        "rounds": rounds, "burst": burst,
        "ms_per_batch": {k: round(v * 1e3, 3) for k, v in median.items()},
        "us_per_instance": {k: round(v * 1e6, 2) for k, v in per_instance.items()},
        "cached_speedup_vs_concat": round(cached_speedup, 3),
        "uncached_speedup_vs_concat": round(median["concat"] / median["hint_uncached"], 3),
        "analytic_flops_ratio_cached": round(flops["F_concat"] / flops["F_inst_cached"], 3),
        "analytic_flops_ratio_uncached": round(
            flops["F_concat"] / (flops["F_hyper"] + flops["F_inst"]), 3),
        "xla_flops_ratio_cached": round(xla["concat"] / xla["hint_cached"], 3),
        "xla_flops_ratio_uncached": round(xla["concat"] / xla["hint_uncached"], 3),
        "analytic_gflops": {"F_hyper": flops["F_hyper"] / 1e9, "F_inst": flops["F_inst"] / 1e9,
                            "F_inst_cached": flops["F_inst_cached"] / 1e9,
                            "F_concat": flops["F_concat"] / 1e9},
        "break_even_n_analytic": flops["break_even_n"],
        "break_even_n_measured": measured_break_even,
        "target_speedup": TARGET_SPEEDUP,
        "target_met": cached_speedup >= TARGET_SPEEDUP,
    }
    for name in ("concat", "hint_cached", "hint_uncached", "cache_build"):
        print(f"{name:>14}: {median[name] * 1e3:8.2f} ms / batch of {BATCH}")
    print(f"cached speed-up {cached_speedup:.2f}x (target {TARGET_SPEEDUP}x: "
          f"{'met' if figures['target_met'] else 'NOT met'}); no cache "
          f"{figures['uncached_speedup_vs_concat']:.2f}x; FLOPs ratio analytic "
          f"{figures['analytic_flops_ratio_cached']}x, XLA {figures['xla_flops_ratio_cached']}x; "
          f"break-even n {figures['break_even_n_analytic']} (analytic), "
          f"{measured_break_even} (measured)")
    if args.out is not None:
        write_json_atomic(args.out, figures)
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
