"""Wu et al.'s claims for Tables 1-3, measured on this run's tables (`report.findings`).

* Table 1: each synthetic pre-training source beats random init on the task Average.
* Table 2: a source's Pretrained row beats random init; Per-Param Mean/SD (parameter
  statistics only) recovers > 70 % of that source's benefit (Fig. 4's caption; the reference
  marks the number unverified against the PDF).
* Table 3: random init with the pre-attention LayerNorm scales set to a constant beats plain
  random init (the direction of the paper's Table 3; which values help is not stated in the
  reference, so each value of the sweep is one claim).

The claims take the table's long-form records (`report.findings.claim_*`); intervals are paired
by seed (every row of a table is run with the same seeds); see `report.findings` for the
verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline_lib import report
from pipeline_lib.report.findings import Finding, claim_greater, claim_share_of_benefit

RANDOM_ROW = "Random init"
MEAN_SD = "Per Param Mean/SD"
PAPER_SHARE = 70.0
PRETRAINED = ": Pretrained (all weights)"


def table_findings(
    which: str, table: report.ResultTable, records: Sequence[dict] | None = None
) -> list[Finding]:
    """The claims of table `which` on its long-form records (`tables.long_records`; default:
    the per-seed values of the table's task columns), rows in the table's order. Every claim
    is on the task Average (each seed's mean over the tasks)."""
    rows = table.rows
    if records is None:
        records = [
            {"row": r, "column": c, "seed": seed, "value": value}
            for r in rows for c in table.data_columns if (cell := table.cell(r, c)) is not None
            for seed, value in cell.by_seed().items()
        ]
    present = {r["row"] for r in records}
    if RANDOM_ROW not in present:
        return []
    out: list[Finding] = []
    if which == "table2":
        for row in rows:
            if not str(row).endswith(PRETRAINED):
                continue
            source = str(row).removesuffix(PRETRAINED)
            out.append(claim_greater(
                records, f"{source}: Pretrained beats Random init (Average)",
                "pre-training helps", row, RANDOM_ROW, unit=" points",
            ))
            if f"{source}: {MEAN_SD}" in present:
                out.append(claim_share_of_benefit(
                    records, f"{source}: {MEAN_SD} recovers >= {PAPER_SHARE:.0f} % of the benefit",
                    f"> {PAPER_SHARE:.0f} % (Fig. 4)", f"{source}: {MEAN_SD}", RANDOM_ROW, row,
                    at_least=PAPER_SHARE,
                ))
        return out
    paper = "synthetic pre-training helps" if which == "table1" else "the Table 3 direction"
    return [
        claim_greater(records, f"{row} beats Random init (Average)", paper, row, RANDOM_ROW,
                      unit=" points")
        for row in rows if row != RANDOM_ROW and row in present
    ]


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
