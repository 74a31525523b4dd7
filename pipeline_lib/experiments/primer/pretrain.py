"""One Primer run: a decoder-LM variant x seed trained on the fixed LM windows, with a curve.

The `primer_pretrain` rule's glue. The run trains `loop.train` on `primer_corpus`'s windows
(t5 LM semantics, `windows`) with the gins' optimiser (`primer.optimizer`: Adafactor t5x and
the rsqrt schedule by default) for its budget (`budget.steps_for`), evaluating the token-
weighted mean NLL over *all* validation windows every `eval_every` steps and at the end. Each
evaluation adds one curve point (step, cumulative training FLOPs, wall seconds, loss).

Seeds: run seed s gives the same init seed, data order and dropout stream to every variant
(`seeds.run_seeds(root, s, "primer")`, one stream each).

Wall seconds count training only: evaluation is excluded (the clock stops when the loop asks
for the validation batches and restarts when its eval record is complete), and the first step
of a process, which includes the XLA compilation, is counted at the mean step time the loop
measured for the other steps of its segment (`_segment_seconds`).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from pipeline_lib.experiments.primer import windows as win
from pipeline_lib.experiments.primer.budget import steps_for
from pipeline_lib.experiments.primer.corpus import load_corpus
from pipeline_lib.files import read_jsonl
from pipeline_lib.seeds import run_seeds

log = logging.getLogger(__name__)


def model_config(section: dict, variant: str, vocab_size: int):
    from pipeline_lib.models import decoder_lm as dlm
    from pipeline_lib.models.bert import padded_vocab_size

    return dlm.decoder_lm_config(
        section["model"]["preset"], prefix="primer.model.overrides",
        **{"vocab_size": padded_vocab_size(vocab_size), "variant": variant,
           "fidelity": section["fidelity"], **section["model"].get("overrides", {})},
    )


def eval_batches(valid: np.ndarray, batch: int):
    """All validation windows in batches of one shape: the last batch is filled with copies of
    window 0 at weight 0, so the token-weighted mean is over the real windows only."""
    def batches():
        for start in range(0, len(valid), batch):
            rows = valid[start:start + batch]
            real = len(rows)
            if real < batch:
                rows = np.concatenate([rows, np.repeat(valid[:1], batch - real, axis=0)])
            out = win.lm_inputs(rows)
            out["weights"][real:] = 0.0
            yield out
    return batches


def _segment_seconds(metrics_path: Path, start: int, stop: int, raw: float) -> float:
    """Training seconds of steps (start, stop] of the process's first segment: the loop's own
    step timing (its train records' steps_per_s, which exclude the first, compiling step),
    scaled to every step of the segment; `raw` if the loop timed no step."""
    timed_steps, seconds, previous = 0, 0.0, start
    for r in read_jsonl(metrics_path, skip_broken=True):
        if r.get("split") == "train" and start < r["step"] <= stop and r.get("steps_per_s"):
            n = r["step"] - previous - (1 if previous == start else 0)
            timed_steps, seconds, previous = timed_steps + n, seconds + n / r["steps_per_s"], r["step"]
    return seconds * (stop - start) / timed_steps if timed_steps > 0 else raw


class WallClock:
    """Cumulative training seconds at each evaluation (an `eval_fn` closure for loop.train)."""

    def __init__(self, metrics_path: Path, flops_per_step: float):
        self.metrics_path, self.flops_per_step = metrics_path, flops_per_step
        self.resume_from: tuple[int, float] | None = None  # (step, seconds) of the last record
        self.mark = time.perf_counter()
        self.eval_started = self.mark
        self.total = 0.0
        self.first = True
        self.last_step = 0

    def start_eval(self) -> None:
        self.eval_started = time.perf_counter()

    def __call__(self, params, step: int) -> dict:
        raw = self.eval_started - self.mark
        if self.first:  # the restored curve, kept by the loop, gives the offset on resume
            kept = [r for r in read_jsonl(self.metrics_path, skip_broken=True)
                    if r.get("split") == "eval" and r["step"] < step and "wall_seconds" in r]
            start = kept[-1]["step"] if kept else 0
            self.total = kept[-1]["wall_seconds"] if kept else 0.0
            raw = _segment_seconds(self.metrics_path, start, step, raw)
            self.first = False
        self.total += raw
        self.mark = time.perf_counter()
        return {"wall_seconds": self.total, "flops": step * self.flops_per_step}


def pretrain_primer(cfg: dict, variant: str, seed: int, corpus_dir: Path, out_dir: Path,
                    ckpt_root: Path) -> dict:
    import flax.nnx as nnx
    import jax

    from pipeline_lib.files import copy_atomic, write_json_atomic
    from pipeline_lib.models import decoder_lm as dlm
    from pipeline_lib.train import data, loop, optim
    from pipeline_lib.train.checkpoint import run_directory

    logging.getLogger("absl").setLevel(logging.WARNING)
    section = cfg["primer"]
    train, valid, meta = load_corpus(corpus_dir)
    length, batch = int(meta["length"]), int(section["batch_size"])
    model_cfg = model_config(section, variant, meta["vocab_size"])
    flops_per_step = dlm.decoder_lm_train_flops(model_cfg, batch, length)
    steps = steps_for(section["budget"], flops_per_step, section["eval_every"])
    seeds = run_seeds(int(cfg["seed"]), seed, "primer")
    model = dlm.DecoderLM(model_cfg, rngs=nnx.Rngs(params=seeds["model"]))
    graphdef, params = nnx.split(model)

    def forward(p, b, rng):
        return dlm.decoder_lm_logits(graphdef, p, b["tokens"], dropout_rng=rng,
                                     deterministic=rng is None)

    tx, schedule = optim.optimizer_from_config(section["optimizer"], steps)
    spec = {  # what the run's result depends on: a changed key trains afresh, never resumes
        "variant": variant, "seed": seed, "root_seed": cfg["seed"], "steps": steps,
        "model": dict(vars(model_cfg)), "optimizer": section["optimizer"], "batch_size": batch,
        "eval_every": section["eval_every"], "corpus": {k: meta[k] for k in (
            "validation_sha256", "vocab_sha256", "counts", "length", "data")},
    }
    ckpt_dir = run_directory(Path(ckpt_root).resolve(), spec)
    metrics_path = ckpt_dir / "metrics.jsonl"
    clock = WallClock(metrics_path, flops_per_step)
    batches = eval_batches(valid, batch)

    def timed_batches():
        clock.start_eval()
        return batches()

    result = loop.train(
        loop.TrainConfig(
            num_steps=steps, seed=seeds["dropout"], log_every=section["log_every"],
            eval_every=section["eval_every"], save_every=section["save_every"],
            loss_normalizing="mean", flops_per_step=flops_per_step, select_metric="accuracy",
        ),
        loss_fn=loop.make_token_loss_fn(forward, targets_key="targets", weights_key="weights"),
        params=params, optimizer=tx, schedule=schedule,
        train_data=data.ArrayPipeline({"windows": train}, batch, seeds["data"],
                                      transform=lambda b: win.lm_inputs(b["windows"]),
                                      name="primer"),
        ckpt_dir=ckpt_dir, metrics_path=metrics_path,
        eval_batches=timed_batches, eval_fn=clock,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_atomic(metrics_path, out_dir / "metrics.jsonl")
    curve = [{k: r[k] for k in ("step", "flops", "wall_seconds", "loss")}
             for r in read_jsonl(metrics_path) if r.get("split") == "eval"]
    last = result.last_eval["metrics"]
    rates = [r["steps_per_s"] for r in read_jsonl(metrics_path)
             if r.get("split") == "train" and r.get("steps_per_s")]
    summary = {
        "variant": variant,
        "seed": seed,
        "fidelity": section["fidelity"],
        "steps": result.step,
        "flops_per_step": flops_per_step,
        "train_flops": result.step * flops_per_step,
        "parameters": int(sum(np.size(x) for x in jax.tree.leaves(params))),
        "validation_loss": last["loss"],
        "validation_perplexity": math.exp(last["loss"]),
        "validation_accuracy": last.get("accuracy"),
        "validation_tokens": last.get("num_tokens"),
        "validation_sha256": meta["validation_sha256"],
        "vocab_sha256": meta["vocab_sha256"],
        "vocab_size": meta["vocab_size"],
        "wall_seconds": curve[-1]["wall_seconds"],
        "steps_per_s": float(np.median(rates)) if rates else None,
        "curve": curve,
        "resumed_from": result.resumed_from,
    }
    write_json_atomic(out_dir / "summary.json", summary)
    log.info("primer %s seed %d: loss %.4f after %d steps", variant, seed, last["loss"],
             result.step)
    return summary
