"""Result tables: aggregation and derived columns by hand, exact renderings, atomic writes, PNGs."""

from __future__ import annotations

import math
import os
import statistics

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from pipeline_lib import report
from pipeline_lib.report import TableError


def _records(rows):
    return [{"row": r, "column": c, "seed": s, "value": v} for r, c, s, v in rows]


#: Table-1 shape: baseline (random), reference (t5), one synthetic row; 2 tasks x 2 seeds.
THREE_ROWS = _records(
    [
        ("random", "A", 0, 10.0),
        ("random", "A", 1, 12.0),
        ("random", "B", 0, 20.0),
        ("random", "B", 1, 22.0),
        ("t5", "A", 0, 50.0),
        ("t5", "A", 1, 54.0),
        ("t5", "B", 0, 60.0),
        ("t5", "B", 1, 62.0),
        ("set", "A", 1, 33.0),
        ("set", "A", 0, 30.0),
        ("set", "B", 0, 40.0),
        ("set", "B", 1, 41.0),
    ]
)

#: The 2x2 table whose renderings are checked character by character.
TWO_BY_TWO = _records(
    [
        ("set", "task_A", 0, 80.0),
        ("set", "task_A", 1, 82.0),
        ("set", "task_B", 0, 70.0),
        ("set", "task_B", 1, 71.0),
        ("lime_x", "task_A", 0, 85.0),
        ("lime_x", "task_B", 0, 60.0),
    ]
)


# --- aggregation -------------------------------------------------------------------------------


def test_aggregate_means_sample_stds_and_counts_by_hand():
    table = report.aggregate(THREE_ROWS)
    assert table.rows == ("random", "t5", "set") and table.columns == ("A", "B")
    cell = table.cell("t5", "A")
    assert (cell.mean, cell.n) == (52.0, 2)
    assert cell.std == pytest.approx(math.sqrt(((50 - 52) ** 2 + (54 - 52) ** 2) / 1))  # ddof=1
    assert table.cell("set", "A").by_seed() == {1: 33.0, 0: 30.0}  # first-seen seed order
    five = report.aggregate(
        _records([("r", "c", s, v) for s, v in enumerate([1.0, 2.0, 4.0, 8.0, 10.0])])
    )
    assert five.cell("r", "c").mean == pytest.approx(5.0)
    assert five.cell("r", "c").std == pytest.approx(math.sqrt((16 + 9 + 1 + 9 + 25) / 4))


def test_single_seed_has_no_std():
    cell = report.aggregate(_records([("r", "c", 7, 3.5)])).cell("r", "c")
    assert (cell.mean, cell.std, cell.n) == (3.5, None, 1)


def test_given_orders_and_custom_keys():
    records = [{"init": i, "task": t, "run": 0, "em": 1.0} for i in ("x", "y") for t in ("p", "q")]
    table = report.aggregate(
        records,
        row="init",
        column="task",
        value="em",
        seed="run",
        rows=["y", "x"],
        columns=["q", "p"],
    )
    assert (table.row_label, table.rows, table.columns) == ("init", ("y", "x"), ("q", "p"))
    with pytest.raises(TableError, match=r"row\(s\) \['x'\] that are not in rows=\['y'\]"):
        report.aggregate(_records([("x", "c", 0, 1.0)]), rows=["y"])
    with pytest.raises(TableError, match=r"columns= names column\(s\) \['z'\] that no record has"):
        report.aggregate(_records([("x", "c", 0, 1.0)]), columns=["c", "z"])


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"row": "a", "column": "b", "value": 1.0}], r"record 0 .*missing key 'seed'"),
        (
            _records([("a", "b", 0, 1.0), ("a", "b", 0, 2.0)]),
            r"record 1: duplicate value for row='a', column='b', seed=0",
        ),
        (_records([("a", "b", 0, float("nan"))]), r"record 0 .*'value' is not finite"),
        (_records([("a", "b", 0, True)]), r"record 0 .*'value' must be a number"),
        (_records([("a", "b", 0, "81.2")]), r"record 0 .*'value' must be a number"),
        ([], "no records"),
    ],
)
def test_bad_records_are_named(records, message):
    with pytest.raises(TableError, match=message):
        report.aggregate(records)


# --- derived columns ---------------------------------------------------------------------------


def test_average_is_mean_over_tasks_per_seed_then_over_seeds():
    table = report.with_average(report.aggregate(THREE_ROWS))
    assert table.columns[-1] == report.AVERAGE_COLUMN and table.derived == (report.AVERAGE_COLUMN,)
    avg = table.cell("set", "Average")
    # seed 1: (33 + 41) / 2 = 37; seed 0: (30 + 40) / 2 = 35 (seeds in the first column's order)
    assert avg.by_seed() == {1: 37.0, 0: 35.0}
    assert avg.mean == 36.0 and avg.std == pytest.approx(statistics.stdev([37.0, 35.0]))
    with pytest.raises(TableError, match="already has a column 'Average'"):
        report.with_average(table)


def test_average_is_missing_for_a_row_without_every_task_and_refuses_mixed_seeds():
    gap = report.with_average(report.aggregate(THREE_ROWS + _records([("off", "A", 0, 1.0)])))
    assert gap.cell("off", "Average") is None and gap.cell("set", "Average") is not None
    assert "| off | 1.0 | -- | -- |" in report.to_markdown(gap, "")
    mixed = report.aggregate(
        _records([("r", "A", 0, 1.0), ("r", "A", 1, 2.0), ("r", "B", 0, 3.0), ("r", "B", 2, 4.0)])
    )
    with pytest.raises(
        TableError,
        match=r"row 'r': column 'B' has seeds \['0', '2'\] but column 'A' has \['0', '1'\]",
    ):
        report.with_average(mixed)


def test_percent_of_benefit_by_hand():
    table = report.percent_of_benefit(report.aggregate(THREE_ROWS), "random", "t5")
    assert table.columns == ("A", "B", "Average", "% of benefit")
    # averages: random 16, t5 56.5, set 36 -> 100 * (36 - 16) / (56.5 - 16) = 49.382...
    assert table.cell("set", "% of benefit").mean == pytest.approx(100 * 20 / 40.5)
    assert table.cell("random", "% of benefit").mean == pytest.approx(0.0)
    assert table.cell("t5", "% of benefit").mean == pytest.approx(100.0)
    # two seeds shared by all three rows: a Fieller 95 % interval paired by seed, no std;
    # per seed (seed 0, 1): set - random = 20, 20; t5 - random = 40, 41
    cell = table.cell("set", "% of benefit")
    assert cell.std is None and cell.meaningful
    from pipeline_lib.report.findings import fieller_ratio_interval

    _, low, high, bounded = fieller_ratio_interval([20.0, 20.0], [40.0, 41.0])
    assert bounded and cell.interval == pytest.approx((100 * low, 100 * high))
    assert cell.interval[0] < cell.mean < cell.interval[1]
    md = report.to_markdown(table, "")
    assert f"| {cell.mean:.1f} [{cell.interval[0]:.1f}, {cell.interval[1]:.1f}] |" in md
    with pytest.raises(TableError, match="reference row 'bert' is not in the table"):
        report.percent_of_benefit(report.aggregate(THREE_ROWS), "random", "bert")


def test_percent_of_benefit_by_group_uses_each_groups_reference():
    """Wu Table 2: an init scheme recovers a share of its own source checkpoint's benefit."""
    records = _records(
        [("random", "A", 0, 10.0), ("lime", "A", 0, 30.0), ("lime stats", "A", 0, 25.0)]
        + [("set", "A", 0, 50.0), ("set stats", "A", 0, 20.0), ("set stats", "A", 1, 22.0)]
    )
    groups = {"lime": ["lime", "lime stats"], "set": ["set", "set stats"]}
    table = report.percent_of_benefit_by_group(report.aggregate(records), "random", groups)
    assert table.cell("lime stats", "% of benefit").mean == pytest.approx(100 * 15 / 20)
    assert table.cell("set stats", "% of benefit").mean == pytest.approx(100 * 11 / 40)
    assert table.cell("set", "% of benefit").mean == pytest.approx(100.0)
    assert table.cell("random", "% of benefit") is None  # in no group
    with pytest.raises(TableError, match="row 'set' is in the groups of both 'lime' and 'set'"):
        report.percent_of_benefit_by_group(
            report.aggregate(records), "random", {"lime": ["set"], "set": ["set"]}
        )


def test_percent_of_benefit_undefined_when_reference_equals_baseline():
    flat = _records([("random", "A", 0, 0.0), ("t5", "A", 0, 0.0), ("set", "A", 0, 3.0)])
    with pytest.warns(UserWarning, match="undefined for the rows measured against 't5'"):
        table = report.percent_of_benefit(report.aggregate(flat), "random", "t5")
    assert all(math.isnan(table.cell(r, "% of benefit").mean) for r in table.rows)
    text = report.to_markdown(table, "cap", bold_best=True)
    assert "| set | **3.0** | **3.0** | n/a |" in text
    assert text.rstrip().endswith("equals that of the baseline row 'random' (0).")
    assert r"\par\footnotesize \% of benefit: undefined" in report.to_latex(table, "cap", "tab:x")


# --- exact renderings --------------------------------------------------------------------------

EXPECTED_MARKDOWN = """Table X.

| row | task_A | task_B |
|---|---:|---:|
| set | 81.0 ± 1.4 | **70.5 ± 0.7** |
| lime_x | **85.0** | 60.0 |
"""

EXPECTED_LATEX = r"""\begin{table}[t]
\centering
\caption{Table X: 50\% of \$n\$}
\label{tab:x}
\begin{tabular}{lrr}
\toprule
row & task\_A & task\_B \\
\midrule
set & 81.0 $\pm$ 1.4 & \textbf{70.5 $\pm$ 0.7} \\
lime\_x & \textbf{85.0} & 60.0 \\
\bottomrule
\end{tabular}
\end{table}
"""

EXPECTED_CSV = """row,column,mean,std,n,low,high
set,task_A,81.0,1.4142135623730951,2,,
set,task_B,70.5,0.7071067811865476,2,,
lime_x,task_A,85.0,,1,,
lime_x,task_B,60.0,,1,,
"""


def test_markdown_latex_csv_exact_text():
    table = report.aggregate(TWO_BY_TWO)
    assert report.to_markdown(table, "Table X.", bold_best=True) == EXPECTED_MARKDOWN
    assert report.to_latex(table, "Table X: 50% of $n$", "tab:x", bold_best=True) == EXPECTED_LATEX
    assert report.to_csv(table) == EXPECTED_CSV
    # without bolding, and lower-is-better columns (losses) pick the minimum
    assert "| set | 81.0 ± 1.4 | 70.5 ± 0.7 |" in report.to_markdown(table, "")
    low = report.to_markdown(table, "", bold_best=True, lower_is_better={"task_A", "task_B"})
    assert "| set | **81.0 ± 1.4** | 70.5 ± 0.7 |" in low
    assert "| lime_x | 85.0 | **60.0** |" in low


def test_write_table_writes_three_renderings(tmp_path):
    table = report.aggregate(TWO_BY_TWO)
    paths = report.write_table(table, tmp_path / "out" / "table1", "Table X.", bold_best=True)
    assert [p.name for p in paths] == ["table1.csv", "table1.md", "table1.tex"]
    assert paths[0].read_text() == EXPECTED_CSV
    assert paths[1].read_text() == EXPECTED_MARKDOWN
    assert r"\label{tab:table1}" in paths[2].read_text()


def test_failed_write_leaves_previous_files_intact(tmp_path, monkeypatch):
    old = report.aggregate(TWO_BY_TWO)
    paths = report.write_table(old, tmp_path / "t", "old")
    before = {p: p.read_bytes() for p in paths}
    new = report.aggregate(THREE_ROWS)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # fails after the temp file got its bytes
    with pytest.raises(OSError, match="No space left"):
        report.write_table(new, tmp_path / "t", "new")
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in paths} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.md", "t.tex"]  # no temp files

    def broken_latex(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(report.render, "to_latex", broken_latex)
    with pytest.raises(RuntimeError, match="render failed"):
        report.write_table(new, tmp_path / "t", "new")
    assert {p: p.read_bytes() for p in paths} == before  # rendered first: not even the CSV moved


# --- figures -----------------------------------------------------------------------------------


def _png_pixels(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    return image


def test_bar_chart_png(tmp_path):
    table = report.percent_of_benefit(report.aggregate(THREE_ROWS), "random", "t5")
    path = report.bar_chart(table, tmp_path / "figs" / "table1.png", "Table 1", ylabel="EM")
    image = _png_pixels(path)
    assert image[..., :3].std() > 0  # something was drawn
    first = path.read_bytes()
    report.bar_chart(table, path, "Table 1", ylabel="EM")
    assert path.read_bytes() == first  # same data, same bytes
    with pytest.raises(TableError, match=r"columns \['Z'\] are not in the table"):
        report.bar_chart(table, tmp_path / "x.png", "t", columns=["Z"])


def test_spearman_against_scipy_and_a_hand_case(tmp_path):
    # ranks (1,2,3,4) vs (1,3,2,4): sum d^2 = 2 -> rho = 1 - 6*2 / (4*(16-1)) = 0.8
    rho = report.scatter_with_spearman(
        [1, 2, 3, 4],
        [1, 3, 2, 4],
        ["a", "b", "c", "d"],
        tmp_path / "s.png",
        "loss",
        "accuracy",
        "fig",
    )
    assert rho == pytest.approx(0.8)
    _png_pixels(tmp_path / "s.png")
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=12), rng.normal(size=12)
    y[:4] = y[4]  # ties use average ranks
    assert report.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert report.spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert math.isnan(
        report.scatter_with_spearman([1, 2], [5, 5], None, tmp_path / "c.png", "x", "y", "t")
    )
    with pytest.raises(TableError, match="x has 3 points but y has 2"):
        report.scatter_with_spearman([1, 2, 3], [1, 2], None, tmp_path / "e.png", "x", "y", "t")
    with pytest.raises(TableError, match="2 labels for 3 points"):
        report.scatter_with_spearman(
            [1, 2, 3], [1, 2, 3], ["a", "b"], tmp_path / "e.png", "x", "y", "t"
        )
