"""Training curves of the runs behind a table: one panel per column, one colour per row, each
seed a thin line and the mean over seeds a thick one.

Curves are long-form records like the tables' (`report.table`), with a step:

    {"row": "identity: Pretrained", "column": "pcfg_swap", "seed": 0, "step": 50, "value": 0.61}

`read_curve` turns one run's metrics.jsonl (the lines `train.metrics.MetricsWriter` wrote)
into such records; `curves_figure` draws them. The mean is taken at the steps every seed of
the row has (runs of one row share their schedule; a run stopped early by a threshold ends
its mean there). A panel may carry a threshold (Wu et al.'s stop-at accuracy of the
pre-training sources), drawn as a dashed line. Figures follow `figures` (Agg canvas, no
pyplot state, atomic PNG, same data -> same bytes).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

from pipeline_lib.report.figures import _new_figure, _save_png
from pipeline_lib.report.table import TableError


def read_curve(
    path: str | Path,
    *,
    row: Hashable,
    column: Hashable,
    seed: Hashable,
    metric: str = "accuracy",
    split: str = "eval",
) -> list[dict]:
    """The (step, value) records of `metric` on the `split` lines of one metrics.jsonl; lines
    without a finite value of it (a NaN became null) are left out, a line cut short too."""
    from pipeline_lib.files import read_jsonl

    out = []
    for record in read_jsonl(path, skip_broken=True):
        value = record.get(metric)
        if record.get("split") != split or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out.append({"row": row, "column": column, "seed": seed, "step": int(record["step"]),
                        "value": float(value)})
    return out


def mean_curve(by_seed: Mapping[Hashable, Mapping[int, float]]) -> tuple[list[int], list[float]]:
    """Steps every seed has, and the mean over seeds at each."""
    if not by_seed:
        return [], []
    common = sorted(set.intersection(*(set(c) for c in by_seed.values())))
    return common, [sum(c[s] for c in by_seed.values()) / len(by_seed) for s in common]


def _group(records: Sequence[Mapping]) -> dict:
    """{column: {row: {seed: {step: value}}}} in first-seen order."""
    out: dict = {}
    for r in records:
        for key in ("row", "column", "seed", "step", "value"):
            if key not in r:
                raise TableError(f"curve record {dict(r)} has no {key!r}")
        seeds = out.setdefault(r["column"], {}).setdefault(r["row"], {})
        seeds.setdefault(r["seed"], {})[int(r["step"])] = float(r["value"])
    return out


def curves_figure(
    records: Sequence[Mapping],
    path: str | Path,
    title: str,
    *,
    ylabel: str | Mapping[Hashable, str] = "",
    thresholds: Mapping[Hashable, tuple[float, str]] | None = None,
    columns: Sequence[Hashable] | None = None,
    xlabel: str = "step",
) -> Path:
    """One panel per column (`columns` order, default first seen), lines per row and seed.

    ylabel: one label, or one per column. thresholds: {column: (value, label)}, a dashed
    horizontal line in that panel.
    """
    grouped = _group(records)
    if not grouped:
        raise TableError(f"curves_figure: no curve records for {path}")
    columns = list(grouped) if columns is None else [c for c in columns if c in grouped]
    rows = list(dict.fromkeys(row for c in columns for row in grouped[c]))
    colour = {row: f"C{i % 10}" for i, row in enumerate(rows)}
    per_line = min(3, len(columns))
    lines = math.ceil(len(columns) / per_line)
    figure = _new_figure(4.0 * per_line + 2.5, 3.0 * lines + 0.6)
    for k, column in enumerate(columns):
        axes = figure.add_subplot(lines, per_line, k + 1)
        for row, by_seed in grouped[column].items():
            many = len(by_seed) > 1
            for seed_curve in by_seed.values():
                steps = sorted(seed_curve)
                axes.plot(steps, [seed_curve[s] for s in steps], color=colour[row],
                          linewidth=0.7 if many else 1.6, alpha=0.35 if many else 1.0)
            if many:
                steps, mean = mean_curve(by_seed)
                axes.plot(steps, mean, color=colour[row], linewidth=2.0)
        threshold = (thresholds or {}).get(column)
        if threshold is not None:
            axes.axhline(threshold[0], color="black", linestyle="--", linewidth=1.0)
            axes.annotate(threshold[1], (0.01, threshold[0]), xycoords=("axes fraction", "data"),
                          fontsize="x-small", xytext=(0, 2), textcoords="offset points")
        axes.set_title(str(column), fontsize="medium")
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel.get(column, "") if isinstance(ylabel, Mapping) else ylabel)
        axes.grid(alpha=0.3)
    # one legend for the figure (colours are the same in every panel), right of the panels
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour[r], linewidth=2.0, label=str(r)) for r in rows]
    handles.append(Line2D([], [], color="grey", linewidth=0.7, alpha=0.6,
                          label="thin: one seed; thick: mean"))
    right = 1.0 - 2.5 / (4.0 * per_line + 2.5)
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout(rect=(0, 0, right, 0.97))
    figure.legend(handles=handles, loc="center left", bbox_to_anchor=(right, 0.5),
                  fontsize="x-small", frameon=False)
    return _save_png(figure, path, tight=False)
