"""Wu et al.'s claims for Tables 1-3, measured on this run's tables (`report.findings`).

* Table 1: each synthetic pre-training source beats random init on the task Average.
* Table 2: a source's Pretrained row beats random init; Per-Param Mean/SD (parameter
  statistics only) recovers > 70 % of that source's benefit (Fig. 4's caption; the reference
  marks the number unverified against the PDF).
* Table 3: random init with the pre-attention LayerNorm scales set to a constant beats plain
  random init (the direction of the paper's Table 3; which values help is not stated in the
  reference, so each value of the sweep is one claim).

Intervals are paired by seed (every row of a table is run with the same seeds); see
`report.findings` for the verdicts.
"""

from __future__ import annotations

from pipeline_lib import report
from pipeline_lib.report.findings import Finding, check_greater, check_share_of_benefit

RANDOM_ROW = "Random init"
MEAN_SD = "Per Param Mean/SD"
PAPER_SHARE = 70.0


def _average(table: report.ResultTable, row: str) -> dict | None:
    cell = table.cell(row, report.AVERAGE_COLUMN)
    return None if cell is None else cell.by_seed()


def table_findings(which: str, table: report.ResultTable) -> list[Finding]:
    random = _average(table, RANDOM_ROW)
    if random is None:
        return []
    out: list[Finding] = []
    if which == "table1":
        for row in table.rows:
            if row != RANDOM_ROW and (avg := _average(table, row)) is not None:
                out.append(check_greater(
                    f"{row} beats Random init (Average)", "synthetic pre-training helps",
                    avg, random, unit=" points",
                ))
    elif which == "table2":
        for row in table.rows:
            if not str(row).endswith(": Pretrained (all weights)"):
                continue
            source = str(row).split(":", 1)[0]
            pretrained = _average(table, row)
            if pretrained is None:
                continue
            out.append(check_greater(
                f"{source}: Pretrained beats Random init (Average)", "pre-training helps",
                pretrained, random, unit=" points",
            ))
            mean_sd = _average(table, f"{source}: {MEAN_SD}")
            if mean_sd is not None:
                out.append(check_share_of_benefit(
                    f"{source}: {MEAN_SD} recovers >= {PAPER_SHARE:.0f} % of the benefit",
                    f"> {PAPER_SHARE:.0f} % (Fig. 4)", mean_sd, random, pretrained,
                    at_least=PAPER_SHARE,
                ))
    else:
        for row in table.rows:
            if row != RANDOM_ROW and (avg := _average(table, row)) is not None:
                out.append(check_greater(
                    f"{row} beats Random init (Average)", "the Table 3 direction",
                    avg, random, unit=" points",
                ))
    return out


def source_notes(summaries: list[dict], threshold: float | None) -> tuple[list[str], list[str]]:
    """(caption notes, warnings) on how far each pre-training source got: a table built on a
    source that never learned its task says so loudly."""
    notes, warnings = [], []
    for summary in summaries:
        best = (summary.get("best") or {}).get("metrics", {}).get("accuracy")
        task = summary.get("task", "?")
        step = (summary.get("best") or {}).get("step")
        if best is None:
            warnings.append(f"source {task}: no validation accuracy recorded")
            continue
        text = f"source {task}: {100 * best:.1f} % validation token accuracy (step {step})"
        if threshold is not None and best < threshold:
            warnings.append(
                f"WARNING: {text}, below the {100 * threshold:.0f} % threshold: it did not learn "
                "its task, so this is not the paper's setting (raise transfer.pretrain.steps)"
            )
        else:
            notes.append(text + (f", threshold {100 * threshold:.0f} %" if threshold else ""))
    return notes, warnings
