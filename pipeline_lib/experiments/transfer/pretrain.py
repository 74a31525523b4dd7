"""T5 pre-training on one synthetic corpus (Wu et al. 2022 protocol), as the `transfer_pretrain` rule runs it.

Glue only: the model is `models.t5`, the optimiser, input pipeline, checkpoints, resume and
metrics are `train.*`. The resumable orbax state lives in `ckpt_dir/<hash of the run spec>/`,
outside the rule's declared outputs (Snakemake deletes those before a job runs), so a killed job
resumes where it stopped, and a changed spec (learning rate, corpus, ...) trains afresh instead
of resuming a stale run; the declared outputs (final and best parameters, metrics, summary) are
written atomically at the end. The summary records the validation accuracy the source reached
and whether it met `stop_at_accuracy` (a source that never learned its task is flagged loudly:
transfer from it is not the paper's setting).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def pretrain_t5(cfg: dict, corpus_dir: Path, out_dir: Path, ckpt_dir: Path) -> dict:
    """Train the configured T5 on `corpus_dir`; write params.npz, best_params.npz,
    metrics.jsonl and summary.json into `out_dir`. Returns the summary."""
    import flax.nnx as nnx

    from pipeline_lib.data.corpus import load_corpus
    from pipeline_lib import files
    from pipeline_lib.data.store import read_meta, verify_checksums
    from pipeline_lib.models import t5
    from pipeline_lib.models.configs import t5_config
    from pipeline_lib.train import checkpoint, data, loop, optim

    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
    p = cfg["transfer"]["pretrain"]
    meta = read_meta(corpus_dir)
    model_cfg = t5_config(
        p["model"]["preset"],
        prefix="transfer.pretrain.model",
        vocab_size=meta["vocab"]["model_vocab_size"],
        **p["model"].get("overrides", {}),
    )
    seed = int(cfg["seed"])
    model = t5.T5(model_cfg, rngs=nnx.Rngs(params=seed))
    graphdef, params, rest = t5.split_model(model)

    forward = t5.t5_batch_forward(graphdef, rest)

    tx, schedule = optim.optimizer_from_config(p["optimizer"], p["steps"])
    lengths = {"inputs": p["inputs_length"], "targets": p["targets_length"]}
    # corrupt data never gets into training: checksums, then structure and id range
    verify_checksums(corpus_dir)
    train_sources = load_corpus(corpus_dir, "train", model_cfg.vocab_size)
    valid_sources = load_corpus(corpus_dir, "valid", model_cfg.vocab_size)
    train_data = data.Seq2SeqPipeline(train_sources, p["batch_size"], lengths, seed)
    flops = 3 * t5.t5_matmul_flops(
        model_cfg, p["batch_size"], p["inputs_length"], p["targets_length"]
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = checkpoint.run_directory(
        Path(ckpt_dir).resolve(),
        {"pretrain": p, "seed": seed, "model": dataclasses.asdict(model_cfg),
         "corpus": meta["checksums"]},
    )
    result = loop.train(
        loop.TrainConfig(
            num_steps=p["steps"], seed=seed, log_every=p["log_every"],
            eval_every=p["eval_every"], save_every=p["save_every"],
            loss_normalizing="sum", flops_per_step=flops, stop_at=p["stop_at_accuracy"],
        ),
        loss_fn=loop.make_token_loss_fn(forward, z_loss=p["z_loss"]),
        params=params,
        optimizer=tx,
        schedule=schedule,
        train_data=train_data,
        ckpt_dir=ckpt_dir,
        # the running metrics log lives with the checkpoints (it must survive a rerun, which
        # deletes declared outputs); it is copied into the outputs at the end
        metrics_path=Path(ckpt_dir) / "metrics.jsonl",
        eval_batches=lambda: data.seq2seq_eval_batches(
            valid_sources, p["batch_size"], lengths, p["eval_batches"]
        ),
        params_out=out_dir / "params.npz",
        best_params_out=out_dir / "best_params.npz",
    )
    files.copy_atomic(ckpt_dir / "metrics.jsonl", out_dir / "metrics.jsonl")
    reached = (result.best or {}).get("metrics", {}).get("accuracy")
    threshold = p["stop_at_accuracy"]
    summary = {
        "task": meta["task"],
        "step": int(result.step),
        "best": result.best,
        "last_eval": result.last_eval,
        "resumed_from": result.resumed_from,
        "parameters": int(sum(np.size(x) for x in _leaves(params))),
        "accuracy_reached": reached,
        "stop_at_accuracy": threshold,
        "converged": None if threshold is None or reached is None else reached >= threshold,
    }
    files.write_json_atomic(out_dir / "summary.json", summary)
    if summary["converged"] is False:
        log.warning(
            "pretrained %s reached %.1f %% validation token accuracy in %d steps, below the "
            "%.0f %% of transfer.pretrain.stop_at_accuracy: it did not learn its task (raise "
            "transfer.pretrain.steps or the learning rate)",
            meta["task"], 100 * reached, result.step, 100 * threshold,
        )
    log.info("pretrained %s: %s", meta["task"], summary)
    return summary


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)
