"""BERT MLM pre-training on the PCFG corpus (Liu, Xie, Li & Ma 2023), as the `implicit_bias_pretrain` rule runs it.

One run = (model size, optimizer, seed). The instances are the PCFG stage's BERT-masked arrays
(`pcfg/<grammar>/pretrain`: input_ids, input_mask, masked_lm_positions, masked_lm_ids,
masked_lm_weights), or with `implicit_bias.masking: single` (the default) the same sentences
with one [MASK] each, the paper's loss L (`masking.py`); the last `eval_instances` rows are held
out for validation. The loss is
the mean cross-entropy over the masked tokens (BERT's), predicted sparsely at the masked
positions only (academic-budget-bert). AdamW as academic-budget-bert (betas 0.9/0.98, eps 1e-6,
decay 0.01 except biases, norms and the pooler) or SGD (the paper's Fig. 3 runs), each with
the configured schedule; the reference's runs that "continue training after convergence" use
a warmup then a constant learning rate, and `checkpoints` exports the parameters at chosen
steps along the way (`step<N>.npz`), which the evaluation rules read.

Resume: orbax state in `ckpt_dir` (outside the declared outputs); exported steps are written
there first (atomically) and copied into the outputs at the end, so a killed run that resumes
past an exported step still delivers it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline_lib.experiments.implicit_bias.model import bert_for_size
from pipeline_lib.experiments.implicit_bias.masking import training_instances
from pipeline_lib.pcfg.readers import vocab_size
from pipeline_lib.seeds import derive_seed, run_seeds

log = logging.getLogger(__name__)

def mlm_logits_fn(graphdef):
    """(params, batch, rng) -> logits at the masked positions [b, p, vocab]."""
    from pipeline_lib.models.bert import bert_mlm_logits

    def forward(params, batch, rng):
        return bert_mlm_logits(
            graphdef, params, batch["input_ids"], batch["input_mask"],
            masked_positions=batch["masked_lm_positions"],
            dropout_rng=rng, deterministic=rng is None,
        )

    return forward


def pretrain_bert_mlm(
    cfg: dict, size: str, optimizer: str, seed: int, data_dir: Path, out_dir: Path, ckpt_dir: Path
) -> dict:
    import flax.nnx as nnx

    from pipeline_lib.files import copy_atomic, write_json_atomic
    from pipeline_lib.models.bert import Bert, bert_matmul_flops
    from pipeline_lib.train import checkpoint, data, loop, optim

    logging.getLogger("absl").setLevel(logging.WARNING)
    liu = cfg["implicit_bias"]
    seeds = run_seeds(int(cfg["seed"]), seed, f"mlm/{size}/{optimizer}")
    # the masking seed is the data seed of the run's root, shared by all runs (same instances)
    arrays = training_instances(liu, data_dir, derive_seed(int(cfg["seed"]), "mlm-masking"))
    n = len(arrays["input_ids"])
    held = min(liu["eval_instances"], n // 10)
    if held < 1:
        raise ValueError(f"{data_dir}: {n} MLM instances are too few to hold out a validation set")
    train_arrays = {k: v[: n - held] for k, v in arrays.items()}
    valid_arrays = {k: np.asarray(v[n - held:]) for k, v in arrays.items()}
    model_cfg = bert_for_size(liu, size, vocab_size(data_dir))
    model = Bert(model_cfg, rngs=nnx.Rngs(params=seeds["model"]))
    graphdef, params = nnx.split(model)
    steps = int(liu["steps"])
    tx, schedule = optim.optimizer_from_config(liu["optimizers"][optimizer], steps)
    batch = int(liu["batch_size"])

    def transform(b):
        return {**b, "masked_lm_weights": b["masked_lm_weights"].astype(np.float32)}

    forward = mlm_logits_fn(graphdef)
    ckpt_dir = Path(ckpt_dir).resolve()
    exports = ckpt_dir / "exports"
    wanted = sorted(set(int(s) for s in liu["checkpoints"]))

    def export(params, step):
        if step in wanted:
            checkpoint.export_params(params, exports / f"step{step}.npz")
        return {}

    width = arrays["input_ids"].shape[1]
    predictions = arrays["masked_lm_positions"].shape[1]
    result = loop.train(
        loop.TrainConfig(
            num_steps=steps, seed=seeds["dropout"], log_every=liu["log_every"],
            eval_every=_gcd_period(wanted), save_every=liu["save_every"],
            loss_normalizing="mean",
            flops_per_step=3 * bert_matmul_flops(model_cfg, batch, width, predictions),
            select_metric="accuracy",
        ),
        loss_fn=loop.make_token_loss_fn(
            forward, targets_key="masked_lm_ids", weights_key="masked_lm_weights"
        ),
        params=params,
        optimizer=tx,
        schedule=schedule,
        train_data=data.ArrayPipeline(
            train_arrays, batch, seeds["data"], transform=transform, name="mlm"
        ),
        ckpt_dir=ckpt_dir,
        metrics_path=ckpt_dir / "metrics.jsonl",
        eval_batches=lambda: data.padded_batches(transform(valid_arrays), batch),
        eval_fn=export,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for step in wanted:
        copy_atomic(exports / f"step{step}.npz", out_dir / f"step{step}.npz")
    copy_atomic(ckpt_dir / "metrics.jsonl", out_dir / "metrics.jsonl")
    summary = {
        "size": size, "optimizer": optimizer, "seed": seed, "steps": result.step,
        "checkpoints": wanted, "last_eval": result.last_eval, "resumed_from": result.resumed_from,
        "model": {k: getattr(model_cfg, k) for k in ("hidden_size", "num_layers", "num_heads",
                                                       "intermediate_size", "vocab_size")},
    }
    write_json_atomic(out_dir / "summary.json", summary)
    log.info("MLM pre-training %s/%s/%d done: %s", size, optimizer, seed, result.last_eval)
    return summary


def _gcd_period(steps: list[int]) -> int:
    """An eval period that hits every export step (their gcd)."""
    import math

    return math.gcd(*steps) if steps else 0
