"""Fine-tuning T5 on one downstream task from one initialisation (Wu et al. 2022, sections 4-5).

One run = (downstream task, pre-training source, init scheme, seed), as the `finetune` rule
keys it. Glue only: the init schemes are `init_schemes`, data `data.downstream`, training
`train.loop`, decoding `evaluate.decode`, metrics `evaluate.metrics`.

Protocol (reference section 4): T5X Adafactor with a constant learning rate, dropout 0.1,
z-loss 1e-4, summed token loss; every `eval_every` steps the teacher-forced token accuracy on
the validation split is measured and the best step's parameters are kept (the
max_valid_acc_metric.py selection); at the end those parameters decode the evaluation split
with beam search (beam 4, T5X length penalty) and the paper's metrics are computed on the
detokenised strings.

Seeds. The run seed `s` and the config's root seed give one SeedSequence from which the fresh
model, the data order, the dropout stream and the init-scheme draws are spawned. The fresh
model therefore does not depend on the init scheme: for a given seed every scheme starts from
the same random tensors wherever it keeps the default init (common random numbers make the
rows of Tables 2 and 3 differ only by what the scheme changes).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import numpy as np

from pipeline_lib.seeds import RUN_STREAMS, run_seeds

log = logging.getLogger(__name__)

# keys of the finetune section a per-task override may set
OVERRIDABLE = (
    "steps", "batch_size", "inputs_length", "targets_length", "max_decode_length", "beam_size",
    "length_penalty", "decode_batch_size", "pack", "dropout_rate", "z_loss", "log_every",
    "eval_every", "eval_batches", "save_every", "optimizer",
)


# the split the final metric is reported on (reference section 4: SQuAD on validation)
EVAL_SPLIT = {"squad": "validation"}


def run_spec(cfg: dict, downstream: str) -> dict:
    """The finetune section with the task's overrides applied (what one run depends on)."""
    spec = copy.deepcopy({k: v for k, v in cfg["transfer"]["finetune"].items() if k in OVERRIDABLE})
    for key, value in cfg["transfer"]["finetune"].get("overrides", {}).get(downstream, {}).items():
        if key == "optimizer":
            spec["optimizer"] = {**spec["optimizer"], **value}
        else:
            spec[key] = value
    return spec


# The fine-tuning run's seed streams: the init scheme draws from its own.
FINETUNE_STREAMS = (*RUN_STREAMS, "init")


def decode_split(graphdef, params, rest, inputs, spec: dict) -> list[list[int]]:
    """Beam-search (or greedy) decode every row of a Ragged `inputs`; ids up to EOS per row."""
    import jax

    from pipeline_lib.evaluate import decode
    from pipeline_lib.train.data import pad_rows, trim_with_eos

    b, length = spec["decode_batch_size"], spec["inputs_length"]
    fn = jax.jit(
        lambda p, x: decode.decode(
            graphdef, p, rest, x, spec["max_decode_length"],
            beam_size=spec["beam_size"], alpha=spec["length_penalty"],
        )
    )
    out: list[list[int]] = []
    for start in range(0, inputs.n, b):
        rows = np.arange(start, min(start + b, inputs.n))
        batch = pad_rows(trim_with_eos(inputs, rows, length)[0], b)
        tokens = np.asarray(jax.device_get(fn(params, batch)))[: rows.size]
        out.extend(decode.strip_after_eos(tokens))
    return out


def finetune_t5(
    cfg: dict,
    downstream: str,
    data_dir: Path,
    source: str,
    init: str,
    init_params: Path | None,
    seed: int,
    out_dir: Path,
    ckpt_dir: Path,
) -> dict:
    """Fine-tune and evaluate one run (`source`: the pre-training corpus whose checkpoint
    `init_params` is, or "none"); writes metrics.json, predictions.jsonl, metrics.jsonl
    (training log) into `out_dir` and returns the metrics record."""
    import flax.nnx as nnx

    from pipeline_lib.experiments.transfer import init_schemes
    from pipeline_lib.data import downstream as ds
    from pipeline_lib.data.corpus import load_corpus
    from pipeline_lib.data.store import read_meta
    from pipeline_lib.files import copy_atomic, write_json_atomic
    from pipeline_lib.evaluate.metrics import compute_metrics
    from pipeline_lib.models import t5
    from pipeline_lib.models.configs import t5_config
    from pipeline_lib.train import checkpoint, data, loop, optim

    logging.getLogger("absl").setLevel(logging.WARNING)
    started = time.time()
    spec = run_spec(cfg, downstream)
    seeds = run_seeds(int(cfg["seed"]), seed, "finetune", FINETUNE_STREAMS)
    adapter = ds.ADAPTERS[cfg["downstream"][downstream]["adapter"]]
    meta = read_meta(data_dir)
    model_cfg = t5_config(
        cfg["transfer"]["pretrain"]["model"]["preset"],
        prefix="transfer.pretrain.model",
        vocab_size=meta["vocab"]["model_vocab_size"],
        **{**cfg["transfer"]["pretrain"]["model"].get("overrides", {}), "dropout_rate": spec["dropout_rate"]},
    )
    model = t5.T5(model_cfg, rngs=nnx.Rngs(params=seeds["model"]))
    graphdef, params, rest = t5.split_model(model)
    pretrained = None
    if init_schemes.needs_checkpoint(init):
        if init_params is None:
            raise ValueError(f"init scheme {init!r} needs pre-trained parameters (--init-params)")
        pretrained = checkpoint.load_params(init_params)
    flat = init_schemes.apply_init_scheme(
        init, checkpoint.flatten_params(params), pretrained, seeds["init"]
    )
    params = checkpoint.unflatten_like(flat, params, where=f"init {init}")

    forward = t5.t5_batch_forward(graphdef, rest)

    tx, schedule = optim.optimizer_from_config(spec["optimizer"], spec["steps"])
    lengths = {"inputs": spec["inputs_length"], "targets": spec["targets_length"]}
    train_sources = load_corpus(data_dir, "train")
    valid_sources = load_corpus(data_dir, "validation")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = Path(ckpt_dir).resolve()
    result = loop.train(
        loop.TrainConfig(
            num_steps=spec["steps"], seed=seeds["dropout"], log_every=spec["log_every"],
            eval_every=spec["eval_every"], save_every=spec["save_every"],
            loss_normalizing="sum",
            flops_per_step=3 * t5.t5_matmul_flops(
                model_cfg, spec["batch_size"], spec["inputs_length"], spec["targets_length"]
            ),
        ),
        loss_fn=loop.make_token_loss_fn(forward, z_loss=spec["z_loss"]),
        params=params,
        optimizer=tx,
        schedule=schedule,
        train_data=data.Seq2SeqPipeline(
            train_sources, spec["batch_size"], lengths, seeds["data"], pack=spec["pack"]
        ),
        ckpt_dir=ckpt_dir,
        metrics_path=ckpt_dir / "metrics.jsonl",
        eval_batches=lambda: data.seq2seq_eval_batches(
            valid_sources, spec["batch_size"], lengths, spec["eval_batches"]
        ),
        best_params_out=ckpt_dir / "best_params.npz",
    )
    best = checkpoint.load_params(ckpt_dir / "best_params.npz", like=result.params)
    split = EVAL_SPLIT.get(adapter.name, "test")
    (inputs, _), = load_corpus(data_dir, split).values()
    predicted_ids = decode_split(graphdef, best, rest, inputs, spec)
    # the laptop layout's word vocabulary is stored with the data; the paper layout's
    # SentencePiece model comes from the config (vocab.spm_model)
    layout = None
    if cfg["vocab"]["layout"] == "paper":
        from pipeline_lib.data.layout_config import layout_from_config

        layout = layout_from_config(cfg)
    predictions = [ds.detokenize(data_dir, ids, layout) for ids in predicted_ids]
    examples = ds.load_examples(data_dir, split)
    scores = compute_metrics(adapter.metrics, predictions, examples)
    record = {
        "downstream": downstream,
        "source": source,
        "init": init,
        "seed": seed,
        "eval_split": split,
        "num_examples": len(examples),
        "metrics": scores,
        "primary_metric": adapter.primary_metric,
        "score": scores[adapter.primary_metric],
        "best_step": result.best["step"],
        "best_validation": result.best["metrics"],
        "steps": result.step,
        "resumed_from": result.resumed_from,
        "seconds": round(time.time() - started, 1),
    }
    _write_predictions(out_dir / "predictions.jsonl", examples, predictions)
    copy_atomic(ckpt_dir / "metrics.jsonl", out_dir / "metrics.jsonl")
    write_json_atomic(out_dir / "metrics.json", record)
    log.info("fine-tuned %s from %s: %s = %.2f", downstream, init, adapter.primary_metric,
             record["score"])
    return record


def _write_predictions(path: Path, examples, predictions) -> None:
    from pipeline_lib.files import atomic_write_text

    atomic_write_text(path, "".join(
        json.dumps({"inputs": ex.inputs, "targets": ex.targets, "prediction": pred}) + "\n"
        for ex, pred in zip(examples, predictions)
    ))
