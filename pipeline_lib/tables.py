"""Result tables and figures: long-form records -> mean ± std cells -> CSV/Markdown/LaTeX/PNG.

Every metric a job writes becomes one *record*, a flat mapping such as

    {"row": "set", "column": "pcfg_A", "seed": 0, "value": 81.2}

and the `table*` rules turn a list of them into a `ResultTable`:

* `aggregate` groups records into cells keyed by (row, column). A cell keeps its per-seed values
  (in first-seen seed order), so derived columns can be computed per seed. Cell statistics: the
  mean and the **sample** standard deviation (ddof=1, the usual "± std over seeds" of papers).
  With a single seed the std is **None** (not 0: one run says nothing about the spread) and the
  cell renders as a bare mean.
* `with_average` adds "Average": for each seed, the mean over the row's data columns; then the
  mean/std of those per-seed averages: the spread of the task average across seeds (usually
  smaller than the per-task stds, as independent task noise averages out). A row that lacks a column
  entirely gets no Average (rendered "--", like the paper's "--" entries); a row whose columns
  were run with *different* seed sets is an error, because the per-seed average would silently
  mix runs.
* `percent_of_benefit` adds "% of benefit" = 100 * (avg(row) - avg(baseline)) /
  (avg(reference) - avg(baseline)) over the task Average (Wu et al. 2022: baseline = random init,
  reference = natural pre-training; our reference notes flag the formula as unverified against
  the PDF, and "averaged over the 6 tasks" could also mean the mean of per-task ratios; we take
  the ratio of averages, which does not blow up on a task where baseline ≈ reference). The
  baseline and reference averages enter as constants (their seed means); the row's per-seed
  averages carry the spread, so the cell's std is the row's seed-to-seed spread in benefit units.
  When reference == baseline (likely at laptop scale: both 0 EM), the ratio is undefined: the
  cells become NaN, render "n/a", and the table carries a note saying why (no exception, so the
  other tables of the run are still written). `percent_of_benefit_by_group` measures each group
  of rows against its own reference (Wu et al.'s Table 2: an init scheme against the checkpoint
  whose statistics it uses).

Renderings: CSV is machine-facing and long-form (row, column, mean, std, n; full float
precision, empty std for one seed); Markdown and LaTeX are human-facing ("81.2 ± 0.4", optional
bold best per column, higher is better unless the column is listed in `lower_is_better`).
LaTeX uses booktabs rules (\\toprule/\\midrule/\\bottomrule) and escapes every label and the
caption (captions are plain text). `write_table` renders all three before writing any, then
writes each through a temporary sibling + `os.replace`, so a failure never leaves a half-written
file (each file is atomic, not the set: a crash between two renames leaves one new and one old
rendering, which Snakemake's incomplete-job marker already reruns). Figures use matplotlib's object API with the Agg canvas (no pyplot global state, no
display needed) and are written atomically the same way.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import numbers
import statistics
import warnings
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from pathlib import Path

from pipeline_lib.pcfg.atomic import atomic_open, atomic_write_text

AVERAGE_COLUMN = "Average"
BENEFIT_COLUMN = "% of benefit"
MISSING = "--"  # a cell with no records
UNDEFINED = "n/a"  # a cell whose value is NaN (e.g. benefit with reference == baseline)


class TableError(ValueError):
    """Malformed records or an impossible table operation; the message names the culprit."""


# --- the table -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cell:
    """The values of one (row, column) over seeds, in first-seen seed order."""

    seeds: tuple[Hashable, ...]
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample std (ddof=1); None with a single seed (no estimate of the spread)."""
        if self.n < 2:
            return None
        return statistics.stdev(self.values)

    def by_seed(self) -> dict[Hashable, float]:
        return dict(zip(self.seeds, self.values))


@dataclasses.dataclass(frozen=True)
class ResultTable:
    """Rows x columns of `Cell`s (a missing cell is simply absent from `cells`)."""

    row_label: str  # header of the first column, e.g. "task" or "init"
    rows: tuple[Hashable, ...]
    columns: tuple[Hashable, ...]
    cells: Mapping[tuple[Hashable, Hashable], Cell]
    derived: tuple[Hashable, ...] = ()  # columns computed from the others (Average, % of benefit)
    notes: tuple[str, ...] = ()  # footnotes shown under the rendered table

    def cell(self, row: Hashable, column: Hashable) -> Cell | None:
        return self.cells.get((row, column))

    @property
    def data_columns(self) -> tuple[Hashable, ...]:
        return tuple(c for c in self.columns if c not in self.derived)


def _check_order(
    param: str, kind: str, given: Sequence[Hashable] | None, seen: list[Hashable]
) -> tuple:
    """The given order of `param` (values of record key `kind`), or the first-seen order."""
    if given is None:
        return tuple(seen)
    given = tuple(given)
    if len(set(given)) != len(given):
        raise TableError(f"{param}= lists a {kind} twice: {list(given)}")
    unknown = [v for v in seen if v not in given]
    if unknown:
        raise TableError(f"records have {kind}(s) {unknown} that are not in {param}={list(given)}")
    empty = [v for v in given if v not in seen]
    if empty:
        raise TableError(f"{param}= names {kind}(s) {empty} that no record has")
    return given


def aggregate(
    records: Iterable[Mapping],
    row: str = "row",
    column: str = "column",
    value: str = "value",
    *,
    seed: str = "seed",
    rows: Sequence[Hashable] | None = None,
    columns: Sequence[Hashable] | None = None,
) -> ResultTable:
    """Group long-form records into a table of mean/std/n cells.

    `row`, `column`, `value` and `seed` name the record keys. Rows and columns appear in the
    given order, else in first-seen order; a given order must list exactly the values present.
    Values must be finite real numbers; the same (row, column, seed) twice is an error.
    """
    values: dict[tuple, dict[Hashable, float]] = {}
    rows_seen: list[Hashable] = []
    columns_seen: list[Hashable] = []
    count = 0
    for index, record in enumerate(records):
        count += 1
        if not isinstance(record, Mapping):
            raise TableError(f"record {index}: expected a mapping, got {type(record).__name__}")
        for key in (row, column, seed, value):
            if key not in record:
                raise TableError(f"record {index} ({dict(record)}): missing key {key!r}")
        r, c, s, v = record[row], record[column], record[seed], record[value]
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TableError(
                f"record {index} ({dict(record)}): {value!r} must be a number, got {v!r}"
            )
        v = float(v)
        if not math.isfinite(v):
            raise TableError(f"record {index} ({dict(record)}): {value!r} is not finite ({v})")
        cell = values.setdefault((r, c), {})
        if s in cell:
            raise TableError(
                f"record {index}: duplicate value for {row}={r!r}, {column}={c!r}, {seed}={s!r}"
            )
        cell[s] = v
        if r not in rows_seen:
            rows_seen.append(r)
        if c not in columns_seen:
            columns_seen.append(c)
    if count == 0:
        raise TableError("no records to aggregate")
    return ResultTable(
        row_label=row,
        rows=_check_order("rows", row, rows, rows_seen),
        columns=_check_order("columns", column, columns, columns_seen),
        cells={k: Cell(tuple(d), tuple(d.values())) for k, d in values.items()},
    )


def with_average(table: ResultTable, name: str = AVERAGE_COLUMN) -> ResultTable:
    """Add `name`: per seed, the mean over the row's data columns; then mean/std over seeds."""
    if name in table.columns:
        raise TableError(f"table already has a column {name!r}")
    data_columns = table.data_columns
    cells = dict(table.cells)
    for r in table.rows:
        row_cells = [table.cell(r, c) for c in data_columns]
        if not data_columns or any(cell is None for cell in row_cells):
            continue  # a missing task: the average is undefined, rendered as MISSING
        seeds = row_cells[0].seeds
        for c, cell in zip(data_columns, row_cells):
            if set(cell.seeds) != set(seeds):
                raise TableError(
                    f"row {r!r}: column {c!r} has seeds {sorted(map(repr, cell.seeds))} but column "
                    f"{data_columns[0]!r} has {sorted(map(repr, seeds))}; the per-seed average "
                    "needs the same seeds in every column"
                )
        per_seed = tuple(statistics.fmean(cell.by_seed()[s] for cell in row_cells) for s in seeds)
        cells[(r, name)] = Cell(seeds, per_seed)
    return dataclasses.replace(
        table,
        columns=table.columns + (name,),
        cells=cells,
        derived=table.derived + (name,),
    )


def percent_of_benefit(
    table: ResultTable,
    baseline_row: Hashable,
    reference_row: Hashable,
    name: str = BENEFIT_COLUMN,
) -> ResultTable:
    """Add `name` = 100 (avg(row) - avg(baseline)) / (avg(reference) - avg(baseline)), every row.

    avg is the task Average (added first if absent). NaN cells and a table note when the
    reference and baseline averages are equal.
    """
    return percent_of_benefit_by_group(table, baseline_row, {reference_row: table.rows}, name)


def percent_of_benefit_by_group(
    table: ResultTable,
    baseline_row: Hashable,
    groups: Mapping[Hashable, Sequence[Hashable]],
    name: str = BENEFIT_COLUMN,
) -> ResultTable:
    """`percent_of_benefit` with one reference per group of rows: {reference_row: rows}.

    E.g. Wu et al.'s Table 2, where each init scheme recovers a share of the benefit of the
    checkpoint its statistics come from. Rows in no group get no cell ("--").
    """
    if AVERAGE_COLUMN not in table.columns:
        table = with_average(table)
    if name in table.columns:
        raise TableError(f"table already has a column {name!r}")

    def average_of(role: str, r: Hashable) -> float:
        if r not in table.rows:
            raise TableError(f"{role} row {r!r} is not in the table (rows: {list(table.rows)})")
        cell = table.cell(r, AVERAGE_COLUMN)
        if cell is None:
            raise TableError(f"{role} row {r!r} has no {AVERAGE_COLUMN} (a task result is missing)")
        return cell.mean

    baseline = average_of("baseline", baseline_row)
    cells, notes, reference_of = dict(table.cells), list(table.notes), {}
    for reference_row, members in groups.items():
        span = average_of("reference", reference_row) - baseline
        if span == 0.0:
            note = (
                f"{name}: undefined for the rows measured against {reference_row!r}, whose "
                f"{AVERAGE_COLUMN} equals that of the baseline row {baseline_row!r} ({baseline:g})."
            )
            warnings.warn(note, stacklevel=3)
            notes.append(note)
        for r in members:
            if r not in table.rows:
                raise TableError(f"row {r!r} of the group of {reference_row!r} is not in the table")
            if r in reference_of:
                raise TableError(
                    f"row {r!r} is in the groups of both {reference_of[r]!r} and {reference_row!r}"
                )
            reference_of[r] = reference_row
            avg = table.cell(r, AVERAGE_COLUMN)
            if avg is None:
                continue
            per_seed = tuple(
                math.nan if span == 0.0 else 100.0 * (v - baseline) / span for v in avg.values
            )
            cells[(r, name)] = Cell(avg.seeds, per_seed)
    return dataclasses.replace(
        table,
        columns=table.columns + (name,),
        cells=cells,
        derived=table.derived + (name,),
        notes=tuple(notes),
    )


# --- text renderings -------------------------------------------------------------------------


def _format_cell(cell: Cell | None, digits: int, plus_minus: str) -> str:
    if cell is None:
        return MISSING
    mean, std = cell.mean, cell.std
    if math.isnan(mean):
        return UNDEFINED
    text = f"{mean:.{digits}f}"
    if std is not None:
        text += f"{plus_minus}{std:.{digits}f}"
    return text


def _best_rows(table: ResultTable, lower_is_better: Collection[Hashable]) -> dict[Hashable, set]:
    """column -> the rows whose mean is best (ties all count as best)."""
    best: dict[Hashable, set] = {}
    for c in table.columns:
        means = {r: cell.mean for r in table.rows if (cell := table.cell(r, c)) is not None}
        means = {r: m for r, m in means.items() if not math.isnan(m)}
        if not means:
            continue
        target = (min if c in lower_is_better else max)(means.values())
        best[c] = {r for r, m in means.items() if m == target}
    return best


def to_csv(table: ResultTable) -> str:
    """Long form `row_label,column,mean,std,n`, full precision; empty std with one seed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([table.row_label, "column", "mean", "std", "n"])
    for r in table.rows:
        for c in table.columns:
            cell = table.cell(r, c)
            if cell is None:
                continue
            std = cell.std
            writer.writerow([r, c, repr(cell.mean), "" if std is None else repr(std), cell.n])
    return buffer.getvalue()


def _markdown_escape(text: Hashable) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(
    table: ResultTable,
    caption: str,
    *,
    digits: int = 1,
    bold_best: bool = False,
    lower_is_better: Collection[Hashable] = (),
) -> str:
    """A caption line, a GitHub pipe table (numbers right-aligned), then the notes."""
    best = _best_rows(table, lower_is_better) if bold_best else {}
    header = [table.row_label, *table.columns]
    lines = [caption, ""] if caption else []
    lines.append("| " + " | ".join(_markdown_escape(h) for h in header) + " |")
    lines.append("|" + "---|" + "---:|" * len(table.columns))
    for r in table.rows:
        cells = []
        for c in table.columns:
            text = _format_cell(table.cell(r, c), digits, " ± ")
            cells.append(f"**{text}**" if r in best.get(c, ()) else text)
        lines.append("| " + " | ".join([_markdown_escape(r), *cells]) + " |")
    if table.notes:
        lines.append("")
        lines.extend(f"Note: {note}" for note in table.notes)
    return "\n".join(lines) + "\n"


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: Hashable) -> str:
    """Plain text -> LaTeX source that typesets it verbatim (± becomes $\\pm$)."""
    escaped = "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))
    return escaped.replace("±", r"$\pm$")


def to_latex(
    table: ResultTable,
    caption: str,
    label: str,
    *,
    digits: int = 1,
    bold_best: bool = False,
    lower_is_better: Collection[Hashable] = (),
) -> str:
    """A booktabs `table` environment; caption and labels escaped, notes under the tabular."""
    best = _best_rows(table, lower_is_better) if bold_best else {}
    header = [table.row_label, *table.columns]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{l" + "r" * len(table.columns) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    for r in table.rows:
        cells = []
        for c in table.columns:
            text = _format_cell(table.cell(r, c), digits, r" $\pm$ ")
            cells.append(rf"\textbf{{{text}}}" if r in best.get(c, ()) else text)
        lines.append(" & ".join([latex_escape(r), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [rf"\par\footnotesize {latex_escape(note)}" for note in table.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(
    table: ResultTable,
    out_prefix: str | Path,
    caption: str,
    *,
    label: str | None = None,
    digits: int = 1,
    bold_best: bool = False,
    lower_is_better: Collection[Hashable] = (),
) -> list[Path]:
    """Write `<prefix>.csv`, `.md`, `.tex`, each atomically; returns the three paths.

    All three texts are rendered before any file is touched, so a rendering error leaves the
    previous outputs intact. The LaTeX label defaults to `tab:<prefix basename>`.
    """
    out_prefix = Path(out_prefix)
    style = dict(digits=digits, bold_best=bold_best, lower_is_better=lower_is_better)
    texts = {
        ".csv": to_csv(table),
        ".md": to_markdown(table, caption, **style),
        ".tex": to_latex(table, caption, label or f"tab:{out_prefix.name}", **style),
    }
    paths = []
    for suffix, text in texts.items():
        path = out_prefix.with_name(out_prefix.name + suffix)
        atomic_write_text(path, text)
        paths.append(path)
    return paths


# --- figures ---------------------------------------------------------------------------------


def _new_figure(width: float, height: float):
    # Figure + Agg canvas directly: no pyplot state machine, works headless and in threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save_png(figure, path: str | Path) -> Path:
    path = Path(path)
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


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (scipy; average ranks for ties); NaN for constant input."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input -> NaN, reported in the title instead
        return float(stats.spearmanr(x, y).statistic)


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


__all__ = [
    "AVERAGE_COLUMN",
    "BENEFIT_COLUMN",
    "Cell",
    "ResultTable",
    "TableError",
    "aggregate",
    "bar_chart",
    "latex_escape",
    "percent_of_benefit",
    "percent_of_benefit_by_group",
    "scatter_with_spearman",
    "spearman",
    "to_csv",
    "to_latex",
    "to_markdown",
    "with_average",
    "write_table",
]
