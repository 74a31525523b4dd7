"""Liu et al. (2023)'s claims checked on the per-checkpoint evaluations, and the loss-matched pairs.

The paper's claim is about models at the SAME pre-training loss: among them, the flatter one
(smaller tr(H)) transfers better. So the headline finding is Spearman's rho between the trace
and the mean linear-probe accuracy over tasks, taken only over the checkpoints whose exact MLM
loss lies within `implicit_bias.matched.tolerance` nats of each other (the largest such set,
`report.findings.matched_loss_window`), bootstrapped over seeds. Beside it, the two mechanisms
the laptop regime uses to create models of equal loss but different implicit bias:

* training on after the loss saturates (paper Fig. 1 and 3): per (size, optimizer), between
  its first and last step with a checkpoint in the matched window, tr(H) falls and probe
  accuracy rises, paired by seed (the note says how much the loss still fell in between);
* width, with every model embedded into one architecture (Fig. 5): at the last step, the
  widest size (by hidden size) has the smaller trace and the better probe than the narrowest,
  paired by seed (the note says whether the two are loss-matched).

A source whose gap to the optimal loss exceeds `matched.max_gap` is not converged: the caption
says so (the comparison is then not the paper's).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from pipeline_lib.report.findings import (
    Finding,
    check_greater,
    claim_correlation_at_matched_loss,
    matched_loss_window,
)

PAPER_RHO = "< 0 (Fig. 5: tr(H) 19.8 -> 12.6 while task-B probe 40.4 -> 50.5 %; Table 2)"
PAPER_LONGER = "tr(H) falls, accuracy +1.6 % (Fig. 3, PCFG task C)"
PAPER_WIDER = "tr(H) 19.8 -> 12.6, probe +6.9 % (Fig. 5, PCFG)"


def _number(record: dict, key: str) -> float | None:
    v = record.get(key)
    if isinstance(v, dict):  # accuracies: the mean over the run's probe / fine-tune seeds
        v = v.get("mean")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def flat_records(cfg: dict, records: Sequence[dict]) -> list[dict]:
    """One flat record per checkpoint: loss, gap, trace (the first estimator), mean accuracies."""
    liu = cfg["implicit_bias"]
    tasks = cfg["pcfg"]["downstream"]["tasks"]
    estimator = liu["trace"]["estimators"][0] if liu["trace"]["estimators"] else None
    out = []
    for r in records:
        flat = {k: r[k] for k in ("size", "optimizer", "seed", "step")}
        flat["loss"] = _number(r, "model_loss")
        flat["gap"] = _number(r, "gap")
        flat["trace"] = _number(r, f"trace_{estimator}") if estimator else None
        for kind in ("probe", "finetune"):
            values = [_number(r, f"{kind}_{t}") for t in tasks]
            flat[kind] = float(np.mean(values)) if values and None not in values else None
        out.append({k: v for k, v in flat.items() if v is not None})
    return out


def matched_records(cfg: dict, flat: Sequence[dict]) -> list[dict]:
    """The checkpoints inside the matched-loss window (the set the headline rho is over)."""
    usable = [r for r in flat if "loss" in r]
    if not usable:
        return []
    _, _, keep = matched_loss_window([r["loss"] for r in usable],
                                     cfg["implicit_bias"]["matched"]["tolerance"])
    return [usable[i] for i in keep]


def sizes_by_width(liu: dict) -> list[str]:
    """The size keys narrowest first (the config's key order is not kept: specs are sorted)."""
    from pipeline_lib.experiments.implicit_bias.model import bert_for_size

    def width(size):
        c = bert_for_size(liu, size, 8)  # the vocabulary does not change the shape's order
        return c.hidden_size, c.num_layers

    return sorted(liu["sizes"], key=width)


def _by_seed(flat: Sequence[dict], key: str, **where) -> dict:
    return {r["seed"]: r[key] for r in flat
            if key in r and all(r[k] == v for k, v in where.items())}


def implicit_bias_findings(cfg: dict, flat: Sequence[dict]) -> list[Finding]:
    liu = cfg["implicit_bias"]
    tol = liu["matched"]["tolerance"]
    findings = [claim_correlation_at_matched_loss(
        flat, "rho(tr(H), mean probe accuracy) < 0 at matched loss", PAPER_RHO,
        x="trace", y="probe", loss="loss", tolerance=tol)]
    if any("finetune" in r for r in flat):
        findings.append(claim_correlation_at_matched_loss(
            flat, "rho(tr(H), mean fine-tune accuracy) < 0 at matched loss", "< 0 (Table 2)",
            x="trace", y="finetune", loss="loss", tolerance=tol))
    matched = matched_records(cfg, flat)
    for size in liu["sizes"]:
        for opt in liu["optimizers"]:
            steps = sorted({r["step"] for r in matched if r["size"] == size
                            and r["optimizer"] == opt})
            if len(steps) < 2:
                continue
            first, last = steps[0], steps[-1]
            where = dict(size=size, optimizer=opt)
            early, late = (_by_seed(flat, "loss", step=st, **where) for st in (first, last))
            drop = float(np.mean(list(early.values())) - np.mean(list(late.values())))
            note = f"loss falls {drop:.3f} nats from step {first} to {last}"
            found = (
                check_greater(
                    f"{size}/{opt}: tr(H) falls from step {first} to {last} (both in the window)",
                    PAPER_LONGER, _by_seed(flat, "trace", step=first, **where),
                    _by_seed(flat, "trace", step=last, **where)),
                check_greater(
                    f"{size}/{opt}: probe accuracy rises from step {first} to {last}",
                    PAPER_LONGER, _by_seed(flat, "probe", step=last, **where),
                    _by_seed(flat, "probe", step=first, **where), unit=" pp"),
            )
            findings += [dataclasses.replace(f, note=note) for f in found]
    sizes = sizes_by_width(liu)
    if len(sizes) >= 2:
        small, wide, last = sizes[0], sizes[-1], max(liu["checkpoints"])
        for opt in liu["optimizers"]:
            note = _loss_note(flat, matched, opt, last, small, wide)
            found = (
                check_greater(
                    f"{opt}, step {last}: {wide} (embedded) is flatter than {small}", PAPER_WIDER,
                    _by_seed(flat, "trace", size=small, optimizer=opt, step=last),
                    _by_seed(flat, "trace", size=wide, optimizer=opt, step=last)),
                check_greater(
                    f"{opt}, step {last}: {wide} probes better than {small}", PAPER_WIDER,
                    _by_seed(flat, "probe", size=wide, optimizer=opt, step=last),
                    _by_seed(flat, "probe", size=small, optimizer=opt, step=last), unit=" pp"),
            )
            findings += [dataclasses.replace(f, note=note) for f in found]
    return findings


def _loss_note(flat, matched, opt, step, small, wide) -> str:
    """Whether the two sizes' checkpoints are loss-matched (the paper's comparison) or not."""
    loss = {size: _by_seed(flat, "loss", size=size, optimizer=opt, step=step)
            for size in (small, wide)}
    if not loss[small] or not loss[wide]:
        return ""
    diff = float(np.mean(list(loss[small].values())) - np.mean(list(loss[wide].values())))
    inside = {(r["size"], r["seed"]) for r in matched if r["optimizer"] == opt
              and r["step"] == step}
    both = all((size, s) in inside for size in (small, wide) for s in loss[size])
    return (f"loss {small} - {wide} = {diff:+.3f} nats; "
            + ("both in the matched window" if both else "NOT loss-matched"))


def convergence_notes(cfg: dict, flat: Sequence[dict]) -> list[str]:
    """Warnings for sources whose exact loss is not (yet) near the optimal loss."""
    max_gap = cfg["implicit_bias"]["matched"]["max_gap"]
    far = [r for r in flat if r.get("gap", math.inf) > max_gap]
    if not far:
        return [f"Every checkpoint is within {max_gap:g} nats of the optimal loss (converged)."]
    worst = max(far, key=lambda r: r.get("gap", math.inf))
    return [f"NOT CONVERGED: {len(far)} of {len(flat)} checkpoints are more than {max_gap:g} "
            f"nats above the optimal loss (worst {worst['size']}/{worst['optimizer']}/seed "
            f"{worst['seed']}/step {worst['step']}: gap {worst.get('gap', math.nan):.3f})."]


def pair_records(cfg: dict, flat: Sequence[dict]) -> list[dict]:
    """Long-form records of the loss-matched pairs table.

    Groups = (size, optimizer, step) whose every seed lies in the matched window; for each pair
    of groups, per seed: the two losses, traces and probe accuracies, the flatter group (smaller
    mean trace) as A, and the probe difference A - B (> 0: the flatter one transfers better).
    """
    matched = matched_records(cfg, flat)
    inside = {(r["size"], r["optimizer"], r["step"], r["seed"]) for r in matched}
    groups: dict[tuple, dict] = {}
    for r in flat:
        groups.setdefault((r["size"], r["optimizer"], r["step"]), {})[r["seed"]] = r
    complete = {g: by for g, by in groups.items()
                if all((*g, s) in inside and "trace" in r and "probe" in r for s, r in by.items())}
    order = sizes_by_width(cfg["implicit_bias"])
    names = sorted(complete, key=lambda g: (order.index(g[0]), g[1], g[2]))
    out = []
    def mean_trace(group):
        return float(np.mean([r["trace"] for r in complete[group].values()]))

    for i, first in enumerate(names):
        for second in names[i + 1:]:
            ga, gb = sorted((first, second), key=mean_trace)  # A: the flatter
            a, b = complete[ga], complete[gb]
            row = f"{'/'.join(map(str, ga))} vs {'/'.join(map(str, gb))}"
            for seed in sorted(set(a) & set(b)):
                ra, rb = a[seed], b[seed]
                for column, value in (
                    ("Loss A", ra["loss"]), ("Loss B", rb["loss"]),
                    ("tr(H) A", ra["trace"]), ("tr(H) B", rb["trace"]),
                    ("probe A (%)", ra["probe"]), ("probe B (%)", rb["probe"]),
                    ("probe A - B (pp)", ra["probe"] - rb["probe"]),
                ):
                    out.append({"row": row, "column": column, "seed": seed, "value": value})
    return out
