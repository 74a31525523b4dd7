"""Benchmark: the cost of Primer-EZ's changes on CPU, and its speed-ups on the wall clock vs FLOPs.

    python benchmarks/primer.py [--quick] [--rounds N] [--results DIR]

1. **Step time per variant** (vanilla, primer_ez, transformer_pp; gins fidelity) at the laptop
   shape (config.yaml's primer: d 64, 2 layers, batch x length) and the bench shape (d 256,
   4 layers, 32 x 128): the engine's jitted train step (`loop.make_train_step` +
   `jit_train_step`, Adafactor t5x + rsqrt as the runs), sampled round-robin (one timed burst
   of steps per variant per round, so load from other jobs hits every variant alike), medians.
   Target: primer_ez / vanilla step-time ratio <= 1.15 (the dconv and squared-ReLU overhead).
2. **dconv**: the model's three shifted multiply-adds (`causal_depthwise_conv`) against the
   baseline `lax.conv_general_dilated` (depthwise, feature_group_count = channels, causal
   padding (2, 0)), forward + backward at the bench shape's Q/K/V size. Target >= 1.0x.
3. **Wall vs FLOPs speed-ups**: read from the finished runs under `--results` (default
   results/): primer_ez's speed-up over each baseline per seed on the FLOPs axis and on the
   wall-clock axis of the same runs, side by side (`experiments.primer.speedup`).

The last line is one JSON object of figures.
"""

from __future__ import annotations

import argparse
import json
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

from pipeline_lib.config import load_config  # noqa: E402
from pipeline_lib.experiments.primer import windows as win  # noqa: E402
from pipeline_lib.experiments.primer.speedup import speedup  # noqa: E402
from pipeline_lib.files import read_json  # noqa: E402
from pipeline_lib.models import decoder_lm as dlm  # noqa: E402
from pipeline_lib.train import loop, optim  # noqa: E402

VARIANTS = ("vanilla", "primer_ez", "transformer_pp")


def make_step(cfg, batch: int, length: int):
    graphdef, params = nnx.split(dlm.DecoderLM(cfg, rngs=nnx.Rngs(params=0)))

    def forward(p, b, rng):
        return dlm.decoder_lm_logits(graphdef, p, b["tokens"])

    tx, schedule = optim.make_optimizer(optim.OptimizerConfig(warmup_steps=100))
    step = loop.make_train_step(loop.make_token_loss_fn(forward, targets_key="targets", weights_key="weights"), tx,
                                schedule=schedule, loss_normalizing="mean")
    state = loop.init_train_state(params, tx)
    jitted = jax.jit(step, donate_argnums=(0,))
    rng = np.random.default_rng(0)
    data = win.lm_inputs(rng.integers(1, cfg.vocab_size, (batch, length)).astype(np.int32))
    data = {k: jnp.asarray(v) for k, v in data.items()}
    key = jax.random.key(0)
    state, metrics = jitted(state, data, key)  # compile
    jax.block_until_ready(metrics)
    return {"fn": jitted, "state": state, "batch": data, "key": key}


def time_burst(case, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        case["state"], metrics = case["fn"](case["state"], case["batch"], case["key"])
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps


def step_times(shape: str, batch: int, length: int, vocab: int, rounds: int, burst: int):
    cases = {v: make_step(dlm.decoder_lm_config(shape, variant=v, fidelity="gins",
                                                vocab_size=vocab), batch, length)
             for v in VARIANTS}
    samples = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for v in VARIANTS:
            samples[v].append(time_burst(cases[v], burst))
    return {v: statistics.median(s) for v, s in samples.items()}


def lax_dconv(x, kernel):
    rhs = kernel[::-1].T[:, None, :]
    y = jax.lax.conv_general_dilated(x.transpose(0, 2, 1), rhs, (1,), [(2, 0)],
                                     feature_group_count=x.shape[-1])
    return y.transpose(0, 2, 1)


def dconv_times(rounds: int, burst: int, batch: int = 32, length: int = 128, channels: int = 256):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, length, channels)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, channels)), jnp.float32)
    fns = {name: jax.jit(jax.value_and_grad(lambda x, k, f=f: jnp.sum(f(x, k) ** 2), (0, 1)))
           for name, f in (("shifted", dlm.causal_depthwise_conv), ("lax_conv", lax_dconv))}
    for f in fns.values():
        jax.block_until_ready(f(x, k))
    samples = {n: [] for n in fns}
    for _ in range(rounds):
        for n, f in fns.items():
            start = time.perf_counter()
            for _ in range(burst):
                out = f(x, k)
            jax.block_until_ready(out)
            samples[n].append((time.perf_counter() - start) / burst)
    return {n: statistics.median(s) for n, s in samples.items()}


def run_speedups(results: Path) -> dict:
    runs = {}
    for path in sorted(results.glob("primer/*/*/summary.json")):
        s = read_json(path)
        runs[(s["variant"], int(s["seed"]))] = s
    out = {}
    for (variant, seed), cand in sorted(runs.items()):
        if variant != "primer_ez":
            continue
        for base in ("vanilla", "transformer_pp"):
            b = runs.get((base, seed))
            if b is None:
                continue
            pick = lambda s, axis: ([p[axis] for p in s["curve"]], [p["loss"] for p in s["curve"]])
            out.setdefault(base, []).append({
                "seed": seed,
                "flops": speedup(pick(b, "flops"), pick(cand, "flops")).factor,
                "wall": speedup(pick(b, "wall_seconds"), pick(cand, "wall_seconds")).factor,
            })
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, laptop shape only")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--results", default=str(REPO / "results"))
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    burst = 5 if args.quick else 10
    primer = load_config(REPO / "config.yaml")["primer"]
    figures: dict = {}
    shapes = [("laptop", primer["batch_size"], primer["length"], 56)]
    if not args.quick:
        shapes.append(("bench", 32, 128, 1336))
    for shape, batch, length, vocab in shapes:
        times = step_times(shape, batch, length, vocab, rounds, burst)
        for v, t in times.items():
            print(f"{shape:7s} {v:15s} {1e3 * t:8.2f} ms/step ({batch} x {length}, V {vocab})")
            figures[f"{shape}_{v}_step_ms"] = round(1e3 * t, 3)
        ratio = times["primer_ez"] / times["vanilla"]
        figures[f"{shape}_primer_ez_over_vanilla_step_time_ratio"] = round(ratio, 4)
        print(f"{shape:7s} primer_ez / vanilla step time: {ratio:.3f} (target <= 1.15: "
              f"{'met' if ratio <= 1.15 else 'missed'})")
    d = dconv_times(rounds, burst)
    figures["dconv_shifted_ms"] = round(1e3 * d["shifted"], 4)
    figures["dconv_lax_conv_ms"] = round(1e3 * d["lax_conv"], 4)
    figures["dconv_shifted_speedup_vs_lax_conv"] = round(d["lax_conv"] / d["shifted"], 3)
    print(f"dconv fwd+bwd 32x128x256: shifted {1e3 * d['shifted']:.3f} ms, lax conv "
          f"{1e3 * d['lax_conv']:.3f} ms: {d['lax_conv'] / d['shifted']:.2f}x (target >= 1.0)")
    runs = run_speedups(Path(args.results))
    if not runs:
        print(f"no finished primer runs under {args.results}: run `snakemake primer_models` "
              "for the wall vs FLOPs speed-ups")
    for base, rows in runs.items():
        for r in rows:
            print(f"primer_ez vs {base} seed {r['seed']}: FLOPs speed-up {r['flops']:.3f}, "
                  f"wall-clock speed-up {r['wall']:.3f}")
        figures[f"speedup_vs_{base}_flops_mean"] = round(statistics.fmean(r["flops"] for r in rows), 4)
        figures[f"speedup_vs_{base}_wall_mean"] = round(statistics.fmean(r["wall"] for r in rows), 4)
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
