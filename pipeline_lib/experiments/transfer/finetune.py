"""Fine-tuning T5 on one downstream task from one initialisation (Wu et al. 2022, sections 4-5).

One run = (downstream task, pre-training source, init scheme, seed). One job trains all seeds
of a (downstream, source, init) together (`train.many`: one vmapped step for the group, which
removes most of a separate job's fixed cost), and each run writes its own outputs. Glue only:
the init schemes are `init_schemes`, data `data.downstream`, training `train.many`, decoding
`evaluate.decode`, metrics `evaluate.metrics`.

Checkpoints live under `ckpt_root/<hash of the run spec>/` (`train.checkpoint.run_directory`):
the config slice, the data set's and the source checkpoint's digests and the seeds. A changed
learning rate or source therefore trains afresh instead of resuming a stale run.

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
import dataclasses
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


def make_decoder(graphdef, rest, spec: dict):
    """A jitted beam-search (or greedy) decoder, compiled once per process and shape."""
    import jax

    from pipeline_lib.evaluate import decode

    return jax.jit(
        lambda p, x: decode.decode(
            graphdef, p, rest, x, spec["max_decode_length"],
            beam_size=spec["beam_size"], alpha=spec["length_penalty"],
        )
    )


def decode_split(decoder, params, inputs, spec: dict) -> list[list[int]]:
    """Decode every row of a Ragged `inputs` with `make_decoder`'s function; ids up to EOS."""
    import jax

    from pipeline_lib.evaluate import decode
    from pipeline_lib.train.data import pad_rows, trim_with_eos

    b, length = spec["decode_batch_size"], spec["inputs_length"]
    out: list[list[int]] = []
    for start in range(0, inputs.n, b):
        rows = np.arange(start, min(start + b, inputs.n))
        batch = pad_rows(trim_with_eos(inputs, rows, length)[0], b)
        tokens = np.asarray(jax.device_get(decoder(params, batch)))[: rows.size]
        out.extend(decode.strip_after_eos(tokens))
    return out


def finetune_t5(
    cfg: dict,
    downstream: str,
    data_dir: Path,
    source: str,
    init: str,
    init_params: Path | None,
    seeds: list[int],
    out_root: Path,
    ckpt_root: Path,
) -> list[dict]:
    """Fine-tune and evaluate the runs (downstream, `source`, `init`, seed) for every seed.

    `source` is the pre-training corpus whose checkpoint `init_params` is (or "none"). Run
    `seed` writes metrics.json, predictions.jsonl and metrics.jsonl (its training log) into
    `out_root/<seed>/`; returns the metrics records in the order of `seeds`.
    """
    import flax.nnx as nnx

    from pipeline_lib.data import downstream as ds
    from pipeline_lib.data.corpus import load_corpus
    from pipeline_lib.data.store import read_meta, sha256_file, verify_checksums
    from pipeline_lib.evaluate.metrics import compute_metrics
    from pipeline_lib.experiments.transfer import init_schemes
    from pipeline_lib.files import copy_atomic, write_json_atomic
    from pipeline_lib.models import t5
    from pipeline_lib.models.configs import t5_config
    from pipeline_lib.train import checkpoint, data, loop, many, optim

    logging.getLogger("absl").setLevel(logging.WARNING)
    started = time.time()
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: give distinct run seeds, got {seeds}")
    spec = run_spec(cfg, downstream)
    run_seed_streams = [run_seeds(int(cfg["seed"]), s, "finetune", FINETUNE_STREAMS)
                        for s in seeds]
    adapter = ds.ADAPTERS[cfg["downstream"][downstream]["adapter"]]
    meta = read_meta(data_dir)
    pretrain_model = cfg["transfer"]["pretrain"]["model"]
    model_cfg = t5_config(
        pretrain_model["preset"],
        prefix="transfer.pretrain.model",
        vocab_size=meta["vocab"]["model_vocab_size"],
        **{**pretrain_model.get("overrides", {}), "dropout_rate": spec["dropout_rate"]},
    )
    pretrained = None
    if init_schemes.needs_checkpoint(init):
        if init_params is None:
            raise ValueError(f"init scheme {init!r} needs pre-trained parameters (--init-params)")
        pretrained = checkpoint.load_params(init_params)
    params, graphdef, rest = [], None, None
    for run in run_seed_streams:
        model = t5.T5(model_cfg, rngs=nnx.Rngs(params=run["model"]))
        graphdef, fresh, rest = t5.split_model(model)
        flat = init_schemes.apply_init_scheme(
            init, checkpoint.flatten_params(fresh), pretrained, run["init"]
        )
        params.append(checkpoint.unflatten_like(flat, fresh, where=f"init {init}"))

    forward = t5.t5_batch_forward(graphdef, rest)
    tx, schedule = optim.optimizer_from_config(spec["optimizer"], spec["steps"])
    lengths = {"inputs": spec["inputs_length"], "targets": spec["targets_length"]}
    # corrupt data never gets into training: checksums, then structure and id range
    verify_checksums(data_dir)
    train_sources = load_corpus(data_dir, "train", model_cfg.vocab_size)
    valid_sources = load_corpus(data_dir, "validation", model_cfg.vocab_size)
    ckpt_dir = checkpoint.run_directory(
        Path(ckpt_root).resolve(),
        {
            "finetune": spec,
            "model": dataclasses.asdict(model_cfg),
            "downstream": downstream,
            "data": meta["checksums"],
            "source": source,
            "init": init,
            "init_params": None if init_params is None else sha256_file(Path(init_params)),
            "seeds": run_seed_streams,
        },
    )
    out_dirs = [Path(out_root) / str(s) for s in seeds]
    results = many.train_many(
        loop.TrainConfig(
            num_steps=spec["steps"], log_every=spec["log_every"],
            eval_every=spec["eval_every"], save_every=spec["save_every"],
            loss_normalizing="sum",
            flops_per_step=3 * t5.t5_matmul_flops(
                model_cfg, spec["batch_size"], spec["inputs_length"], spec["targets_length"]
            ),
        ),
        loss_fn=loop.make_token_loss_fn(forward, z_loss=spec["z_loss"]),
        params=params,
        seeds=[run["dropout"] for run in run_seed_streams],
        optimizer=tx,
        schedule=schedule,
        train_data=[
            data.Seq2SeqPipeline(
                train_sources, spec["batch_size"], lengths, run["data"], pack=spec["pack"]
            )
            for run in run_seed_streams
        ],
        ckpt_dir=ckpt_dir,
        metrics_paths=[ckpt_dir / f"metrics.{s}.jsonl" for s in seeds],
        eval_batches=lambda: data.seq2seq_eval_batches(
            valid_sources, spec["batch_size"], lengths, spec["eval_batches"]
        ),
    )
    split = EVAL_SPLIT.get(adapter.name, "test")
    (inputs, _), = load_corpus(data_dir, split).values()
    examples = ds.load_examples(data_dir, split)
    # the laptop layout's word vocabulary is stored with the data; the paper layout's
    # SentencePiece model comes from the config (vocab.spm_model)
    layout = None
    if cfg["vocab"]["layout"] == "paper":
        from pipeline_lib.data.layout_config import layout_from_config

        layout = layout_from_config(cfg)
    decoder = make_decoder(graphdef, rest, spec)
    records = []
    for seed, result, out_dir in zip(seeds, results, out_dirs):
        if result.best_params is None:
            raise ValueError(
                f"seed {seed}: no finite validation accuracy was recorded, so there is no best "
                "checkpoint to evaluate (the run diverged)"
            )
        predicted_ids = decode_split(decoder, result.best_params, inputs, spec)
        predictions = [ds.detokenize(data_dir, ids, layout) for ids in predicted_ids]
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
            "runs_in_group": len(seeds),
            "seconds": round(time.time() - started, 1),
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_predictions(out_dir / "predictions.jsonl", examples, predictions)
        copy_atomic(ckpt_dir / f"metrics.{seed}.jsonl", out_dir / "metrics.jsonl")
        write_json_atomic(out_dir / "metrics.json", record)
        log.info("fine-tuned %s from %s/%s seed %d: %s = %.2f", downstream, source, init, seed,
                 adapter.primary_metric, record["score"])
        records.append(record)
    return records


def _write_predictions(path: Path, examples, predictions) -> None:
    from pipeline_lib.files import atomic_write_text

    atomic_write_text(path, "".join(
        json.dumps({"inputs": ex.inputs, "targets": ex.targets, "prediction": pred}) + "\n"
        for ex, pred in zip(examples, predictions)
    ))
