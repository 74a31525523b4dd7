"""The table model: long-form records -> mean ± std cells, Average and "% of benefit" columns.

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

Renderings are in `report.render`, figures in `report.figures`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import statistics
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence

AVERAGE_COLUMN = "Average"
BENEFIT_COLUMN = "% of benefit"


class TableError(ValueError):
    """Malformed records or an impossible table operation; the message names the culprit."""


# --- the table -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cell:
    """The values of one (row, column) over seeds, in first-seen seed order."""

    seeds: tuple[Hashable, ...]
    values: tuple[float, ...]
    # A derived cell may carry a point estimate and a 95 % interval instead of a spread (the
    # "% of benefit" ratio: Fieller's interval, paired by seed). `interval` (-inf, inf) means
    # "not meaningful at this scale" (its denominator is not distinguishable from 0).
    estimate: float | None = None
    interval: tuple[float, float] | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return self.estimate if self.estimate is not None else statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample std (ddof=1); None with a single seed (no estimate of the spread) or for an
        interval cell."""
        if self.n < 2 or self.interval is not None:
            return None
        if not all(math.isfinite(v) for v in self.values):
            return None  # an undefined cell (NaN) has no spread either
        return statistics.stdev(self.values)

    @property
    def meaningful(self) -> bool:
        return self.interval is None or all(math.isfinite(x) for x in self.interval)

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


def _benefit_cell(row: Cell, baseline: Cell, reference: Cell, per_seed: tuple) -> Cell:
    """The row's share of the reference's benefit over the baseline, with Fieller's 95 %
    interval paired by seed when all three rows share at least two seeds; else per-seed values
    with the baseline and reference as constants (one seed: a bare number)."""
    from pipeline_lib.report.findings import fieller_ratio_interval

    common = [s for s in row.seeds if s in baseline.by_seed() and s in reference.by_seed()]
    if len(common) < 2 or len(common) != row.n or row.by_seed() == reference.by_seed():
        return Cell(row.seeds, per_seed)  # (the reference row itself: exactly 100)
    b, ref, r = baseline.by_seed(), reference.by_seed(), row.by_seed()
    ratio, low, high, _ = fieller_ratio_interval(
        [r[s] - b[s] for s in common], [ref[s] - b[s] for s in common]
    )
    return Cell(row.seeds, per_seed, estimate=100.0 * ratio, interval=(100.0 * low, 100.0 * high))


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
            cells[(r, name)] = _benefit_cell(
                avg, table.cell(baseline_row, AVERAGE_COLUMN),
                table.cell(reference_row, AVERAGE_COLUMN), per_seed,
            )
    return dataclasses.replace(
        table,
        columns=table.columns + (name,),
        cells=cells,
        derived=table.derived + (name,),
        notes=tuple(notes),
    )
