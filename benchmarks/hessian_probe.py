"""Benchmark: one Hutchinson probe (a Hessian-vector product) against one training step.

    python benchmarks/hessian_probe.py [--quick] [--rounds N] [--batch B] [--config PATH]

Target (issue): one Hutchinson probe costs <= 3x one training step of the same batch.

Both sides run the laptop BERT (`bert_laptop`, vocabulary = 5 specials + pcfg.generate.n_terminals
padded to 8) on one batch of MLM instances shaped as config.yaml's ``pcfg.mlm``
(max_seq_length x max_predictions_per_seq masked positions; batch 128 by default). The ids are
synthetic random tokens: cost does not depend on their values.

* probe: `evaluate.hessian.make_hutchinson_sample` -- one Rademacher probe, one
  forward-over-reverse HVP of the mean MLM loss over the trace's parameters (all but the pooler
  and the MLM output bias), dropout off, jitted, result fetched to the host (as the estimator's
  stopping rule does after every sample);
* training step: the engine's `train.loop.make_train_step` + `jit_train_step` (state donated),
  AdamW from `train.optim.make_optimizer` (linear schedule), ``loss_normalizing="mean"``,
  dropout 0.1 as pre-training runs it, all parameters;
* also reported: one Fisher sample (`make_fisher_sample`: 128 per-example gradients) against the
  same step.

The two CPU cores are shared with other jobs, so the cases run interleaved round-robin (one call
of each per round, after a compile + warm-up call) and the headline figures are medians of wall
time; ``*_cpu_ratio`` compares medians of this process's CPU time (insensitive to how much CPU
the other jobs take). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from pipeline_lib.evaluate import hessian  # noqa: E402
from pipeline_lib.models import bert  # noqa: E402
from pipeline_lib.pcfg.mlm import SPECIAL_TOKENS  # noqa: E402
from pipeline_lib.train import loop, optim  # noqa: E402

TARGET_RATIO = 3.0


def mlm_settings(config_path: Path) -> dict:
    """Vocabulary and MLM shapes of the workflow config (schema defaults filled in)."""
    from pipeline_lib.config import load_config

    pcfg = load_config(config_path)["pcfg"]
    return {
        "vocab": bert.padded_vocab_size(len(SPECIAL_TOKENS) + int(pcfg["generate"]["n_terminals"])),
        "length": int(pcfg["mlm"]["max_seq_length"]),
        "predictions": int(pcfg["mlm"]["max_predictions_per_seq"]),
    }


def mlm_batch(batch: int, length: int, predictions: int, vocab: int, seed: int = 0) -> dict:
    """Random MLM instances: [CLS] ids.. [SEP], `predictions` distinct masked positions each."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(len(SPECIAL_TOKENS), vocab, (batch, length)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS], [SEP] of the compact vocabulary
    positions = np.sort(np.stack([
        rng.choice(np.arange(1, length - 1), predictions, replace=False) for _ in range(batch)
    ]), axis=1).astype(np.int32)
    return {
        "input_ids": ids,
        "input_mask": np.ones((batch, length), np.int32),
        "masked_lm_positions": positions,
        "masked_lm_ids": rng.integers(
            len(SPECIAL_TOKENS), vocab, (batch, predictions)
        ).astype(np.int32),
        "masked_lm_weights": np.ones((batch, predictions), np.float32),
    }


class Timed:
    """A zero-argument call that blocks until its result is ready; wall and CPU per call."""

    def __init__(self, name: str, call: Callable[[], object]):
        self.name, self.call = name, call
        self.wall: list[float] = []
        self.cpu: list[float] = []
        t0 = time.perf_counter()
        jax.block_until_ready(call())  # compile
        self.compile_s = time.perf_counter() - t0
        jax.block_until_ready(call())  # warm-up: first execution allocates

    def run(self) -> None:
        c0, w0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(self.call())
        self.wall.append(time.perf_counter() - w0)
        self.cpu.append(time.process_time() - c0)

    @property
    def median_s(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpu)


def build(batch_size: int, settings: dict) -> list[Timed]:
    cfg = bert.bert_config("bert_laptop", vocab_size=settings["vocab"])
    batch = jax.device_put(
        mlm_batch(batch_size, settings["length"], settings["predictions"], settings["vocab"])
    )
    print(f"model: bert_laptop d{cfg.hidden_size} {cfg.num_layers}L {cfg.num_heads}x"
          f"{cfg.head_dim} ff{cfg.intermediate_size} V{cfg.vocab_size}; batch {batch_size} x "
          f"{settings['length']}, {settings['predictions']} masked positions")

    # Hessian side: the trace's parameters, dropout off.
    model = bert.Bert(cfg, rngs=nnx.Rngs(params=0))
    graphdef, params, rest = hessian.split_hessian_params(model)
    loss_fn, logits_fn = hessian.bert_mlm_loss_and_logits(graphdef, rest)
    probe = hessian.make_hutchinson_sample(loss_fn, "rademacher")
    fisher = hessian.make_fisher_sample(logits_fn)
    key = jax.random.key(0)
    n_trace = sum(int(np.size(x)) for x in jax.tree.leaves(params))

    # Training side: the engine's step over all parameters, as pre-training runs it.
    train_graphdef, train_params = nnx.split(bert.Bert(cfg, rngs=nnx.Rngs(params=0)))

    def forward(params, batch, rng):
        return bert.bert_mlm_logits(
            train_graphdef, params, batch["input_ids"], batch["input_mask"],
            masked_positions=batch["masked_lm_positions"], dropout_rng=rng,
            deterministic=rng is None,
        )

    tx, schedule = optim.make_optimizer(optim.OptimizerConfig(
        name="adamw", schedule="linear", learning_rate=1e-3, warmup_steps=100, total_steps=10_000,
    ))
    step_fn = loop.make_train_step(
        loop.make_token_loss_fn(forward, targets_key="masked_lm_ids",
                                weights_key="masked_lm_weights"),
        tx, schedule=schedule, loss_normalizing="mean",
    )
    holder = {"state": loop.init_train_state(train_params, tx)}
    step = loop.jit_train_step(step_fn, holder["state"])

    def train_call():
        holder["state"], metrics = step(holder["state"], batch, key)
        return holder["state"], metrics

    n_train = sum(int(np.size(x)) for x in jax.tree.leaves(train_params))
    print(f"parameters: {n_train} trained, {n_trace} in the trace "
          f"(pooler and mlm_head/bias excluded)")
    # float(): the estimator reads every sample on the host for its stopping rule
    return [
        Timed("train_step", train_call),
        Timed("probe", lambda: float(probe(params, batch, key))),
        Timed("fisher_sample", lambda: float(fisher(params, batch, key))),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 15")
    parser.add_argument("--rounds", type=int, help="round-robin rounds (default 15, quick 5)")
    parser.add_argument("--batch", type=int, default=128, help="MLM instances per batch")
    parser.add_argument("--config", type=Path, default=ROOT / "config.yaml",
                        help="workflow config giving the PCFG vocabulary and MLM shapes")
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 15)
    if rounds < 1 or args.batch < 1:
        parser.error("--rounds and --batch must be positive")

    t0 = time.perf_counter()
    settings = mlm_settings(args.config)
    cases = build(args.batch, settings)
    for case in cases:
        print(f"compile + first call: {case.name} {case.compile_s:.2f} s")
    for _ in range(rounds):
        for case in cases:
            case.run()
    by_name = {case.name: case for case in cases}
    train, probe, fisher = by_name["train_step"], by_name["probe"], by_name["fisher_sample"]
    for case in cases:
        print(f"{case.name:>13}: median {case.median_s * 1e3:8.1f} ms wall, "
              f"{case.median_cpu_s * 1e3:8.1f} ms CPU  (min {min(case.wall) * 1e3:.1f}, "
              f"max {max(case.wall) * 1e3:.1f} ms wall; {rounds} rounds)")
    ratio = probe.median_s / train.median_s
    print(f"probe / train step = {ratio:.2f} (target <= {TARGET_RATIO:g}): "
          f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}")
    figures = {
        "probe_s": probe.median_s,
        "train_step_s": train.median_s,
        "ratio": ratio,
        "target_ratio_max": TARGET_RATIO,
        "target_met": ratio <= TARGET_RATIO,
        "probe_cpu_ratio": probe.median_cpu_s / train.median_cpu_s,
        "fisher_sample_s": fisher.median_s,
        "fisher_ratio": fisher.median_s / train.median_s,
        "batch": args.batch,
        "rounds": rounds,
        "total_s": time.perf_counter() - t0,
    }
    print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
