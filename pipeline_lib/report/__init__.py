"""Tables, figures, curves and findings: everything a run's results become for a reader.

`table` is the model (records -> cells with mean ± std, Average, "% of benefit"), `render`
writes CSV / Markdown / LaTeX, `figures` draws PNGs, `curves` the validation curves of the
runs behind a table, `stats` holds the shared statistics, `findings` checks a paper's claims
on a table's records (value, 95 % interval, verdict) and `findings_page` collects every
table's findings on one page.
"""

from pipeline_lib.report.figures import bar_chart, scatter_with_spearman
from pipeline_lib.report.render import latex_escape, to_csv, to_latex, to_markdown, write_table
from pipeline_lib.report.stats import spearman
from pipeline_lib.report.table import (
    AVERAGE_COLUMN,
    BENEFIT_COLUMN,
    Cell,
    ResultTable,
    TableError,
    aggregate,
    percent_of_benefit,
    percent_of_benefit_by_group,
    with_average,
)

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
