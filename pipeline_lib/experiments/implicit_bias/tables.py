"""`pcfg_tables`: Liu et al. (2023)'s evidence from the per-checkpoint evaluations.

Outputs (prefix `results/tables/implicit_bias_`):

* `checkpoints.{csv,md,tex}`: one row per (size, optimizer, step), mean +- std over seeds of
  the exact MLM loss, its gap to the optimal loss, the Hessian trace (each estimator), and
  linear-probe / fine-tuning accuracy per task (%); the lookup-table model's probe row last.
* `correlations.{csv,md,tex}`: Spearman's rho over checkpoints between each transfer accuracy
  and the loss / the traces (the paper's claim: at equal loss, flatter = better transfer, so
  rho(accuracy, trace) < 0 among models of similar loss).
* `accuracy_vs_loss.png`, `accuracy_vs_trace.png`: mean probe accuracy over the tasks against
  the exact loss and the (first) trace estimator, one point per checkpoint and seed, with rho
  in the title.
* `matched_pairs.{csv,md,tex}`: the pairs of (size, optimizer, step) whose checkpoints all lie
  in the matched-loss window, flatter one as A (`findings.pair_records`); its footer and the
  checkpoint table's list the claims checked (`findings.implicit_bias_findings`), which
  `implicit_bias.findings.json` (next to the tables) holds for the findings page.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pipeline_lib import report
from pipeline_lib.experiments.implicit_bias import findings as fnd
from pipeline_lib.files import write_json_atomic
from pipeline_lib.report.findings import findings_json


def row_label(r: dict) -> str:
    return f"{r['size']} / {r['optimizer']} / step {r['step']}"


def metric_columns(cfg: dict) -> list[tuple[str, str]]:
    """(record key, column title) pairs, in table order."""
    cols = [("model_loss", "Exact loss"), ("gap", "Gap to optimal")]
    cols += [(f"trace_{e}", f"tr(H) {e}") for e in cfg["implicit_bias"]["trace"]["estimators"]]
    for kind in ("probe", "finetune"):
        cols += [(f"{kind}_{t}", f"{kind} {t} (%)") for t in cfg["pcfg"]["downstream"]["tasks"]]
    return cols


def _value(record: dict, key: str) -> float | None:
    v = record.get(key)
    if isinstance(v, dict):  # accuracies: mean over the probe / fine-tune seeds of the run
        v = v["mean"]
    return None if v is None or not np.isfinite(v) else float(v)


def build_checkpoint_table(cfg: dict, records: list[dict], lookup: dict | None):
    cols = metric_columns(cfg)
    long = []
    for r in records:
        for key, title in cols:
            v = _value(r, key)
            if v is not None:
                long.append({"row": row_label(r), "column": title, "seed": r["seed"], "value": v})
    if lookup is not None:
        for key, title in cols:
            v = _value(lookup, key)
            if v is not None:
                long.append({"row": "Lookup table (exact conditionals)", "column": title,
                             "seed": 0, "value": v})
    return report.aggregate(long, columns=[t for _, t in cols if any(x["column"] == t for x in long)])


def correlations(cfg: dict, records: list[dict]):
    """Spearman rho of each accuracy column against loss and traces, over all records."""
    xs = [("model_loss", "Exact loss")] + [
        (f"trace_{e}", f"tr(H) {e}") for e in cfg["implicit_bias"]["trace"]["estimators"]
    ]
    ys = [(k, t) for k, t in metric_columns(cfg) if k.startswith(("probe_", "finetune_"))]
    long = []
    for ykey, ytitle in ys:
        for xkey, xtitle in xs:
            pairs = [(_value(r, xkey), _value(r, ykey)) for r in records]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            if len(pairs) >= 3:
                rho = report.spearman(*zip(*pairs))
                if np.isfinite(rho):
                    long.append({"row": ytitle, "column": f"rho vs {xtitle}", "seed": 0,
                                 "value": rho})
    return report.aggregate(long) if long else None


def mean_probe(r: dict, cfg: dict) -> float | None:
    values = [_value(r, f"probe_{t}") for t in cfg["pcfg"]["downstream"]["tasks"]]
    return None if any(v is None for v in values) else float(np.mean(values))


def write_implicit_bias_tables(cfg: dict, records: list[dict], lookup: dict | None, prefix: Path) -> None:
    liu = cfg["implicit_bias"]
    scale = (
        f"Sizes {', '.join(liu['sizes'])}; optimizers {', '.join(liu['optimizers'])}; "
        f"{liu['steps']} steps of batch {liu['batch_size']}; checkpoints at steps "
        f"{', '.join(map(str, liu['checkpoints']))}; seeds {', '.join(map(str, liu['seeds']))}; "
        f"grammar: {cfg['pcfg']['grammar'] or 'generated'}"
    )
    flat = fnd.flat_records(cfg, records)
    claims = fnd.implicit_bias_findings(cfg, flat)
    notes = tuple(fnd.convergence_notes(cfg, flat)) + tuple(
        f"Finding: {f.summary()}" for f in claims)
    table = build_checkpoint_table(cfg, records, lookup)
    table = dataclasses.replace(table, notes=table.notes + notes)
    report.write_table(
        table, f"{prefix}checkpoints",
        "Liu et al. (2023) per checkpoint: exact MLM loss (nats/token) and gap to the optimal "
        "loss, Hessian trace of the MLM loss (enlarged to one architecture), probe and "
        f"fine-tuning accuracy on PCFG tasks (mean ± std over seeds). {scale}.",
        digits=3,
    )
    corr = correlations(cfg, records)
    caption = (f"Spearman correlation over checkpoints between transfer accuracy and exact loss "
               f"/ Hessian trace. {scale}.")
    if corr is None:  # fewer than 3 checkpoints: nothing to correlate, say so in the files
        corr = report.aggregate([{"row": "(fewer than 3 checkpoints)", "column": "rho",
                                  "seed": 0, "value": 0.0}])
        caption += " Not enough checkpoints for a correlation."
    report.write_table(corr, f"{prefix}correlations", caption, digits=2)
    pairs = fnd.pair_records(cfg, flat)
    tol = liu["matched"]["tolerance"]
    pair_caption = (
        f"Liu et al. (2023) loss-matched pairs: (size / optimizer / step) groups whose "
        f"checkpoints (every seed) have exact MLM losses within {tol:g} nats of each other; A is "
        f"the flatter (smaller mean tr(H)); the paper's claim: probe A - B > 0. {scale}.")
    pair_table = (report.aggregate(pairs) if pairs else report.aggregate(
        [{"row": "(no group has every seed in the matched window)", "column": "probe A - B (pp)",
          "seed": 0, "value": 0.0}]))
    report.write_table(dataclasses.replace(pair_table, notes=pair_table.notes + notes),
                       f"{prefix}matched_pairs", pair_caption, digits=3)
    write_json_atomic(Path(f"{str(prefix).rstrip('_')}.findings.json"), findings_json(
        claims, table="implicit_bias", caption=pair_caption, notes=list(notes), scale=scale,
        matched_tolerance=tol, optimal_loss=next(
            (r["optimal_loss"] for r in records if "optimal_loss" in r), None)))
    labels = [f"{r['size']}/{r['optimizer']}/{r['step']}" for r in records]
    y = [mean_probe(r, cfg) for r in records]
    first_trace = f"trace_{liu['trace']['estimators'][0]}" if liu["trace"]["estimators"] else None
    for xkey, xlabel, name in (
        ("model_loss", "exact MLM loss (nats/token)", "accuracy_vs_loss"),
        (first_trace, f"Hessian trace ({liu['trace']['estimators'][0]})" if first_trace else "",
         "accuracy_vs_trace"),
    ):
        points = [(_value(r, xkey) if xkey else None, yy, lab)
                  for r, yy, lab in zip(records, y, labels)]
        points = [p for p in points if p[0] is not None and p[1] is not None]
        xs, ys, ls = (list(v) for v in zip(*points)) if points else ([], [], [])
        report.scatter_with_spearman(
            xs, ys, ls, Path(f"{prefix}{name}.png"), xlabel,
            "mean linear-probe accuracy over tasks (%)", f"PCFG: probe accuracy vs {xlabel}",
        )
