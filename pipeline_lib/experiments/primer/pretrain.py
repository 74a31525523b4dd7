"""Decoder-only LM training (Primer-EZ vs Transformer++ vs vanilla) on the PCFG sentences.

The `primer_pretrain` rule's glue: a small comparison in the spirit of So et al. (2021) that runs
offline at laptop scale. Sentences come from the PCFG stage (`pcfg/<grammar>/pretrain/
sentences.txt`, words of the compact vocabulary in `vocab.txt`); each is `[CLS] w1 .. wn [SEP]`
padded with 0, trained with the next-token loss on every non-padding target (mean over
tokens). The last `eval_sentences` sentences are held out; the reported metric is validation
loss per token and its perplexity, at equal steps and batch for every variant.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from pipeline_lib.seeds import spawn_seeds

log = logging.getLogger(__name__)

PAD, CLS, SEP = "[PAD]", "[CLS]", "[SEP]"


def encode_sentences(data_dir: Path, length: int) -> tuple[np.ndarray, int]:
    """[n, length + 1] int32 rows `[CLS] w.. [SEP] 0..` and the vocabulary size."""
    tokens = Path(data_dir, "vocab.txt").read_text().splitlines()
    ids = {t: i for i, t in enumerate(tokens)}
    lines = Path(data_dir, "sentences.txt").read_text().splitlines()
    out = np.zeros((len(lines), length + 1), np.int32)
    for row, line in enumerate(lines):
        words = line.split()
        if len(words) + 2 > length + 1:
            raise ValueError(
                f"{data_dir}/sentences.txt line {row + 1}: {len(words)} words do not fit "
                f"primer.length {length} (needs >= {len(words) + 1})"
            )
        try:
            seq = [ids[CLS], *(ids[w] for w in words), ids[SEP]]
        except KeyError as e:
            raise ValueError(f"{data_dir}/sentences.txt line {row + 1}: word {e} not in vocab.txt")
        out[row, : len(seq)] = seq
    return out, len(tokens)


def lm_batch(rows: dict) -> dict:
    seq = rows["tokens"]
    return {
        "tokens": seq[:, :-1],
        "targets": seq[:, 1:],
        "weights": (seq[:, 1:] != 0).astype(np.float32),
    }


def pretrain_lm(cfg: dict, variant: str, data_dir: Path, out_dir: Path, ckpt_dir: Path) -> dict:
    import flax.nnx as nnx
    import jax

    from pipeline_lib.files import copy_atomic, write_json_atomic
    from pipeline_lib.models import decoder_lm as dlm
    from pipeline_lib.models.bert import padded_vocab_size
    from pipeline_lib.train import data, loop, optim

    logging.getLogger("absl").setLevel(logging.WARNING)
    lm = cfg["primer"]
    length = int(lm["length"])
    seqs, vocab = encode_sentences(data_dir, length)
    held = min(int(lm["eval_sentences"]), len(seqs) // 10)
    seeds = spawn_seeds(("model", "data", "dropout"), int(cfg["seed"]), "lm")
    seed_model, seed_data, seed_drop = seeds["model"], seeds["data"], seeds["dropout"]
    model_cfg = dlm.decoder_lm_config(
        lm["model"]["preset"], prefix="primer.model",
        **{"vocab_size": padded_vocab_size(vocab), "variant": variant,
           **lm["model"].get("overrides", {})},
    )
    model = dlm.DecoderLM(model_cfg, rngs=nnx.Rngs(params=seed_model))  # same seed: same draws
    graphdef, params = nnx.split(model)

    def forward(p, batch, rng):
        return dlm.decoder_lm_logits(graphdef, p, batch["tokens"], dropout_rng=rng,
                                     deterministic=rng is None)

    tx, schedule = optim.optimizer_from_config(lm["optimizer"], lm["steps"])
    batch = int(lm["batch_size"])
    valid = seqs[len(seqs) - held:]
    eval_batch = min(batch, held)  # full batches only: one eval shape
    ckpt_dir = Path(ckpt_dir).resolve()
    result = loop.train(
        loop.TrainConfig(
            num_steps=lm["steps"], seed=seed_drop, log_every=lm["log_every"],
            eval_every=lm["eval_every"], save_every=lm["save_every"], loss_normalizing="mean",
            flops_per_step=3 * dlm.decoder_lm_matmul_flops(model_cfg, batch, length),
        ),
        loss_fn=loop.make_token_loss_fn(forward, targets_key="targets", weights_key="weights"),
        params=params,
        optimizer=tx,
        schedule=schedule,
        train_data=data.ArrayPipeline(
            {"tokens": seqs[: len(seqs) - held]}, batch, seed_data, transform=lm_batch, name="lm"
        ),
        ckpt_dir=ckpt_dir,
        metrics_path=ckpt_dir / "metrics.jsonl",
        eval_batches=lambda: (
            lm_batch({"tokens": valid[i: i + eval_batch]})
            for i in range(0, held - eval_batch + 1, eval_batch)
        ),
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_atomic(ckpt_dir / "metrics.jsonl", out_dir / "metrics.jsonl")
    last = result.last_eval["metrics"]
    summary = {
        "variant": variant,
        "steps": result.step,
        "validation_loss": last["loss"],
        "validation_perplexity": math.exp(last["loss"]),
        "validation_accuracy": last.get("accuracy"),
        "parameters": int(sum(np.size(x) for x in jax.tree.leaves(params))),
        "resumed_from": result.resumed_from,
    }
    write_json_atomic(out_dir / "summary.json", summary)
    log.info("LM %s: %s", variant, summary)
    return summary
