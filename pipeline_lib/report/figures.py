"""Figures for the tables: matplotlib's object API with the Agg canvas (no pyplot global state,
no display needed), written atomically; PNGs carry no version tag, so same data -> same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from pathlib import Path

from pipeline_lib.files import atomic_open
from pipeline_lib.report.stats import spearman
from pipeline_lib.report.table import BENEFIT_COLUMN, ResultTable, TableError


def _new_figure(width: float, height: float):
    # Figure + Agg canvas directly: no pyplot state machine, works headless and in threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save_png(figure, path: str | Path, *, tight: bool = True) -> Path:
    path = Path(path)
    if tight:  # False: the caller laid the figure out itself
        figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        # No "Software" tag with the matplotlib version: same data -> same bytes.
        figure.savefig(handle, format="png", metadata={"Software": None})
    return path


def bar_chart(
    table: ResultTable,
    path: str | Path,
    title: str,
    *,
    columns: Sequence[Hashable] | None = None,
    ylabel: str = "",
) -> Path:
    """Grouped bars (one group per column, one bar per row), error bars = std over seeds.

    Columns default to every column except "% of benefit" (a different unit). Missing cells
    are gaps; a single-seed cell has no error bar.
    """
    import numpy as np

    columns = (
        tuple(c for c in table.columns if c != BENEFIT_COLUMN)
        if columns is None
        else tuple(columns)
    )
    unknown = [c for c in columns if c not in table.columns]
    if unknown:
        raise TableError(f"bar_chart: columns {unknown} are not in the table {list(table.columns)}")
    if not columns:
        raise TableError("bar_chart: no columns to plot")
    figure = _new_figure(
        1.5 + max(3.0, 0.3 * len(columns) * max(1, len(table.rows))), 3.5
    )  # +legend
    axes = figure.add_subplot()
    positions = np.arange(len(columns), dtype=float)
    width = 0.8 / max(1, len(table.rows))
    for i, r in enumerate(table.rows):
        cells = [table.cell(r, c) for c in columns]
        means = [math.nan if cell is None else cell.mean for cell in cells]
        stds = [0.0 if cell is None or cell.std is None else cell.std for cell in cells]
        offsets = positions - 0.4 + width * (i + 0.5)
        axes.bar(offsets, means, width, yerr=stds, capsize=2, label=str(r))
    axes.set_xticks(positions, [str(c) for c in columns], rotation=30, ha="right")
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    # outside the axes, so it never hides a bar; tight_layout makes room for it
    axes.legend(
        fontsize="small", title=table.row_label, loc="upper left", bbox_to_anchor=(1.0, 1.0)
    )
    return _save_png(figure, path)


def scatter_with_spearman(
    x: Sequence[float],
    y: Sequence[float],
    labels: Sequence[str] | None,
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str,
) -> float:
    """Scatter y against x (points annotated with `labels`), Spearman rho in the title; returns rho.

    Liu et al.'s figures: downstream accuracy against pre-training loss across models.
    """
    x, y = list(map(float, x)), list(map(float, y))
    if len(x) != len(y):
        raise TableError(f"scatter_with_spearman: x has {len(x)} points but y has {len(y)}")
    if len(x) < 2:
        raise TableError(f"scatter_with_spearman: need at least 2 points, got {len(x)}")
    if labels is not None and len(labels) != len(x):
        raise TableError(f"scatter_with_spearman: {len(labels)} labels for {len(x)} points")
    rho = spearman(x, y)
    figure = _new_figure(4.5, 3.5)
    axes = figure.add_subplot()
    axes.scatter(x, y)
    for i, text in enumerate(labels or ()):
        axes.annotate(
            str(text), (x[i], y[i]), fontsize="x-small", xytext=(3, 3), textcoords="offset points"
        )
    rho_text = "undefined (constant input)" if math.isnan(rho) else f"{rho:.3f}"
    axes.set_title(f"{title} (Spearman ρ = {rho_text})")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    _save_png(figure, path)
    return rho
