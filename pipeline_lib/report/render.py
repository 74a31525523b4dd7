"""Renderings: CSV is machine-facing and long-form (row, column, mean, std, n, low, high; full
float precision, empty std for one seed, low/high the 95 % interval of an interval cell such as
"% of benefit"); Markdown and LaTeX are human-facing ("81.2 ± 0.4", "47.0 [12.1, 80.3]", "n/m"
for a share whose benefit is not distinguishable from 0, optional
bold best per column, higher is better unless the column is listed in `lower_is_better`).
LaTeX uses booktabs rules (\\toprule/\\midrule/\\bottomrule) and escapes every label and the
caption (captions are plain text). `write_table` renders all three before writing any, then
writes each through a temporary sibling + `os.replace`, so a failure never leaves a half-written
file (each file is atomic, not the set: a crash between two renames leaves one new and one old
rendering, which Snakemake's incomplete-job marker already reruns).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection, Hashable
from pathlib import Path

from pipeline_lib.files import atomic_write_text
from pipeline_lib.report.table import Cell, ResultTable

MISSING = "--"  # a cell with no records
UNDEFINED = "n/a"  # a cell whose value is NaN (e.g. benefit with reference == baseline)
# an interval cell whose interval is unbounded: a share of a benefit not distinguishable from 0
NOT_MEANINGFUL = "n/m"


def _format_cell(cell: Cell | None, digits: int, plus_minus: str) -> str:
    if cell is None:
        return MISSING
    mean, std = cell.mean, cell.std
    if math.isnan(mean):
        return UNDEFINED
    if cell.interval is not None:
        if not cell.meaningful:
            return NOT_MEANINGFUL
        low, high = cell.interval
        return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
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
    """Long form `row_label,column,mean,std,n,low,high`, full precision; empty std with one
    seed, empty low/high except for interval cells."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([table.row_label, "column", "mean", "std", "n", "low", "high"])
    for r in table.rows:
        for c in table.columns:
            cell = table.cell(r, c)
            if cell is None:
                continue
            std = cell.std
            low, high = ("", "") if cell.interval is None else map(repr, cell.interval)
            writer.writerow(
                [r, c, repr(cell.mean), "" if std is None else repr(std), cell.n, low, high]
            )
    return buffer.getvalue()


def _note_line(note: str) -> str:
    """A footer line; findings and warnings carry their own label."""
    return note if note.startswith(("Finding:", "WARNING:")) else f"Note: {note}"


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
        lines.extend(_note_line(note) for note in table.notes)
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
