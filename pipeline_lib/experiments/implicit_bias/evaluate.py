"""Liu, Xie, Li & Ma (2023) evaluations of one pre-trained BERT checkpoint, as the rules run them.

Per checkpoint (size, optimizer, seed, step) the `liu_evaluate` rule computes:

* the exact single-mask MLM loss against the PCFG's true conditionals, the optimal loss and
  their gap (`evaluate.exact_loss`);
* the trace of the Hessian of the MLM pre-training loss with the configured estimators
  (`evaluate.hessian`: Hutchinson, Fisher), after embedding the model into the
  `implicit_bias.trace.enlarge_to` architecture without changing its function (`evaluate.enlarge`), so
  that traces of different sizes are taken in one parameterisation;
* linear-probe accuracy on tasks A/B/C (frozen encoder, concatenated token features,
  `evaluate.probe`; mean +- std over `implicit_bias.probe.seeds`);
* fine-tuning accuracy on tasks A/B/C ([CLS] -> new pooler -> classifier, all weights
  trained; AdamW, warmup then linear decay; mean +- std over `implicit_bias.finetune.seeds`).

The `liu_lookup_table` rule probes the "lookup table" model, whose features are the exact
conditionals themselves (`exact_loss.lookup_table_features`), and `pcfg_tables` aggregates.

Decisions (the reference leaves them open): probe features are computed once with dropout
off (the released probe keeps the frozen encoder's dropout on while training the head);
fine-tuning reports the validation accuracy after the last epoch (no checkpoint selection,
as the released `run_ft.py` evaluates periodically but reports the final model).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from pipeline_lib.experiments.implicit_bias.masking import training_instances
from pipeline_lib.experiments.implicit_bias.model import bert_for_size
from pipeline_lib.pcfg.readers import (
    SPLITS,
    load_task,
    sentences_as_terminals,
    vocab_size,
)
from pipeline_lib.seeds import derive_seed

log = logging.getLogger(__name__)

def _batched(fn, arrays: tuple[np.ndarray, ...], batch: int) -> np.ndarray:
    """fn over fixed-size batches (last one padded with zero rows), results concatenated."""
    from pipeline_lib.train.data import padded_batches

    n = len(arrays[0])
    outs = [np.asarray(fn(*b.values())) for b in padded_batches(dict(enumerate(arrays)), batch)]
    return np.concatenate(outs)[:n]


# --- exact loss, trace ---------------------------------------------------------------------


def exact_loss(graphdef, params, optimal_loss_dir: Path, batch_size: int) -> dict:
    from pipeline_lib.evaluate.exact_loss import bert_masked_logits_fn, exact_mlm_loss

    return exact_mlm_loss(
        bert_masked_logits_fn(graphdef), params, optimal_loss_dir, batch_size=batch_size
    )


def _trace_model(liu: dict, size: str, flat: dict, vocab: int):
    """(model config, flat params) in the trace's parameterisation (enlarged if configured)."""
    from pipeline_lib.evaluate.enlarge import enlarge_params

    cfg = bert_for_size(liu, size, vocab)
    target = liu["trace"]["enlarge_to"]
    if target is None or target == size:
        return cfg, flat
    large = bert_for_size(liu, target, vocab)
    return large, enlarge_params(flat, cfg, large)


def hessian_traces(liu: dict, size: str, flat: dict, vocab: int, data_dir: Path, seed: int,
                   root_seed: int = 0) -> dict:
    import flax.nnx as nnx
    import jax

    from pipeline_lib.evaluate import hessian
    from pipeline_lib.models.bert import Bert
    from pipeline_lib.models.layers import load_flat_params
    from pipeline_lib.train.data import ArrayPipeline

    trace = liu["trace"]
    cfg, flat = _trace_model(liu, size, flat, vocab)
    model = Bert(cfg, rngs=nnx.Rngs(params=0))
    load_flat_params(model, flat)
    graphdef, params, rest = hessian.split_hessian_params(model)
    loss_fn, logits_fn = hessian.bert_mlm_loss_and_logits(graphdef, rest)
    arrays = training_instances(liu, data_dir, derive_seed(root_seed, "mlm-masking"))

    def batches(stream: str):
        return ArrayPipeline(
            arrays, trace["batch_size"], derive_seed(seed, "trace", stream),
            transform=lambda b: {**b, "masked_lm_weights": b["masked_lm_weights"].astype(np.float32)},
            name=f"trace-{stream}",
        )

    out = {"trace_model": {"hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
                           "enlarged_from": size if trace["enlarge_to"] not in (None, size) else None}}
    stop = {k: trace[k] for k in ("min_samples", "max_samples", "rel_tol")}
    for estimator in trace["estimators"]:
        key = jax.random.key(derive_seed(seed, "trace", estimator))
        started = time.perf_counter()
        if estimator == "hutchinson":
            est = hessian.hutchinson_trace(
                loss_fn, params, batches(estimator), key, probe=trace["probe"], **stop
            )
        else:
            est = hessian.fisher_trace(logits_fn, params, batches(estimator), key, **stop)
        out[f"trace_{estimator}"] = est.mean
        out[f"trace_{estimator}_stderr"] = est.stderr
        out[f"trace_{estimator}_samples"] = est.num_samples
        log.info("trace (%s): %.4g +- %.2g from %d samples in %.1fs", estimator, est.mean,
                 est.stderr, est.num_samples, time.perf_counter() - started)
    return out


# --- transfer: linear probe and fine-tuning ------------------------------------------------


def _classifier_model(liu: dict, size: str, vocab: int, num_labels: int, width: int, flat: dict,
                      seed: int):
    """A BERT with fresh heads for `num_labels` and the pre-trained embeddings + encoder."""
    import flax.nnx as nnx

    from pipeline_lib.models.bert import Bert, load_pretrained_encoder

    cfg = bert_for_size(liu, size, vocab, num_labels=num_labels, probe_length=width)
    model = Bert(cfg, rngs=nnx.Rngs(params=seed))
    load_pretrained_encoder(model, flat)
    return model


def probe_accuracy(liu: dict, size: str, vocab: int, flat: dict, task: dict, seed: int) -> dict:
    import flax.nnx as nnx
    import jax

    from pipeline_lib.models.bert import bert_features

    ids, _, _ = task["splits"]["train"]
    model = _classifier_model(liu, size, vocab, task["num_classes"], ids.shape[1], flat, 0)
    graphdef, state = nnx.split(model)
    feats = jax.jit(lambda i, m: bert_features(graphdef, state, i, m))
    x = {s: _batched(feats, task["splits"][s][:2], 256) for s in SPLITS}
    return probe_on_features(liu, x, task, seed)


def probe_on_features(liu: dict, x: dict, task: dict, seed: int) -> dict:
    from pipeline_lib.evaluate.probe import train_linear_probe

    p = liu["probe"]
    accs = []
    for s in p["seeds"]:
        result = train_linear_probe(
            x["train"], task["splits"]["train"][2], x["validation"],
            task["splits"]["validation"][2], num_classes=task["num_classes"],
            learning_rate=p["learning_rate"], weight_decay=p["weight_decay"],
            epochs=p["epochs"], batch_size=p["batch_size"],
            warmup_steps=min(p["warmup_steps"], _updates(len(x["train"]), p) - 1),
            seed=derive_seed(seed, "probe", s),
        )
        accs.append(100.0 * result.valid_accuracy)
    return _mean_std(accs)


def _updates(n: int, p: dict) -> int:
    return p["epochs"] * math.ceil(n / p["batch_size"])


def _mean_std(values: list[float]) -> dict:
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        "values": [float(v) for v in values],
    }


def finetune_accuracy(liu: dict, size: str, vocab: int, flat: dict, task: dict, seed: int) -> dict:
    """[CLS] fine-tuning: every parameter trained, AdamW with warmup + linear decay."""
    import flax.nnx as nnx
    import jax
    import jax.numpy as jnp

    from pipeline_lib.models.bert import bert_classify
    from pipeline_lib.train import loop, optim
    from pipeline_lib.train.data import ArrayPipeline

    f = liu["finetune"]
    ids, mask, labels = task["splits"]["train"]
    accs = []
    for s in f["seeds"]:
        run = derive_seed(seed, "finetune", s)
        model = _classifier_model(liu, size, vocab, task["num_classes"], ids.shape[1], flat, run)
        graphdef, params = nnx.split(model)
        steps = f["epochs"] * math.ceil(len(ids) / f["batch_size"])
        tx, schedule = optim.make_optimizer(optim.OptimizerConfig(
            name="adamw", schedule="linear", learning_rate=f["learning_rate"],
            warmup_steps=min(f["warmup_steps"], steps - 1), total_steps=steps,
            weight_decay=f["weight_decay"], grad_clip_norm=1.0,
        ))

        def loss_fn(p, batch, rng):
            logits = bert_classify(graphdef, p, batch["input_ids"], batch["input_mask"],
                                   dropout_rng=rng, deterministic=rng is None)
            return optim.token_cross_entropy(
                logits[:, None, :], batch["labels"][:, None],
                jnp.ones_like(batch["labels"], jnp.float32)[:, None],
            )

        state = loop.init_train_state(params, tx)
        step_fn = jax.jit(loop.make_train_step(loss_fn, tx, schedule=schedule,
                                               loss_normalizing="mean"), donate_argnums=(0,))
        data = ArrayPipeline({"input_ids": ids, "input_mask": mask, "labels": labels},
                             f["batch_size"], run, name="finetune")
        key = jax.random.key(run)
        for _ in range(steps):
            state, _ = step_fn(state, next(data), key)
        predict = jax.jit(lambda i, m: jnp.argmax(
            bert_classify(graphdef, state.params, i, m), axis=-1))
        v_ids, v_mask, v_labels = task["splits"]["validation"]
        pred = _batched(predict, (v_ids, v_mask), 256)
        accs.append(100.0 * float(np.mean(pred == v_labels)))
    return _mean_std(accs)


# --- the rules' entry points ---------------------------------------------------------------


def evaluate_checkpoint(
    cfg: dict, size: str, optimizer: str, seed: int, step: int, params_path: Path,
    pcfg_dir: Path, out_path: Path,
) -> dict:
    import flax.nnx as nnx

    from pipeline_lib.files import write_json_atomic
    from pipeline_lib.models.bert import Bert
    from pipeline_lib.train.checkpoint import load_params, unflatten_like

    logging.getLogger("absl").setLevel(logging.WARNING)
    liu = cfg["implicit_bias"]
    started = time.perf_counter()
    pretrain_dir = Path(pcfg_dir) / "pretrain"
    vocab = vocab_size(pretrain_dir)
    flat = load_params(params_path)
    model = Bert(bert_for_size(liu, size, vocab), rngs=nnx.Rngs(params=0))
    graphdef, state = nnx.split(model)
    state = unflatten_like(flat, state, where=str(params_path))  # read the file once
    record: dict = {"size": size, "optimizer": optimizer, "seed": seed, "step": step}
    record.update(exact_loss(graphdef, state, Path(pcfg_dir) / "optimal_loss", 256))
    record.update(hessian_traces(liu, size, flat, vocab, pretrain_dir, seed, int(cfg["seed"])))
    for task in cfg["pcfg"]["downstream"]["tasks"]:
        data = load_task(Path(pcfg_dir) / "downstream" / task)
        record[f"probe_{task}"] = probe_accuracy(liu, size, vocab, flat, data, seed)
        log.info("task %s: probe %.1f", task, record[f"probe_{task}"]["mean"])
        if liu["finetune"]["seeds"]:  # none: fine-tuning is off (the laptop default)
            record[f"finetune_{task}"] = finetune_accuracy(liu, size, vocab, flat, data, seed)
            log.info("task %s: fine-tune %.1f", task, record[f"finetune_{task}"]["mean"])
    record["seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(Path(out_path), record)
    return record


def lookup_table_probe(cfg: dict, pcfg_dir: Path, out_path: Path) -> dict:
    """Linear probe on the exact conditionals (the paper's "lookup table" model)."""
    from pipeline_lib.files import write_json_atomic
    from pipeline_lib.evaluate.exact_loss import lookup_table_features
    from pipeline_lib.pcfg.conditionals import exact_conditionals
    from pipeline_lib.pcfg.dataset import load_grammar_dir

    grammar, _ = load_grammar_dir(Path(pcfg_dir) / "grammar")
    if cfg["pcfg"]["optimal_loss"].get("renormalize", True):
        grammar = grammar.renormalized()
    record: dict = {"model": "lookup_table"}
    for task in cfg["pcfg"]["downstream"]["tasks"]:
        task_dir = Path(pcfg_dir) / "downstream" / task
        data = load_task(task_dir)
        width = data["splits"]["train"][0].shape[1] - 2
        x = {}
        for split in SPLITS:
            sentences = sentences_as_terminals(task_dir, split, grammar)
            tables = exact_conditionals(grammar, sentences,
                                        batch_size=cfg["pcfg"]["chart"]["batch_size"])
            if any(t is None for t in tables):
                raise ValueError(f"{task_dir}/{split}: a sentence has probability zero")
            offsets = np.concatenate([[0], np.cumsum([len(s) for s in sentences])])
            x[split] = lookup_table_features(np.concatenate(tables), offsets, width)
        record[f"probe_{task}"] = probe_on_features(cfg["implicit_bias"], x, data, int(cfg["seed"]))
        log.info("lookup table, task %s: probe %.1f", task, record[f"probe_{task}"]["mean"])
    write_json_atomic(Path(out_path), record)
    return record
