"""The curves behind Tables 1-3: validation token accuracy vs step of every fine-tuning run of
the table (one panel per downstream task, one colour per row, seeds thin + mean) and of the
pre-training sources its rows start from (accuracy vs step with the stop-at-accuracy
threshold drawn: a source that never reached it is visible at a glance).

The runs are found by their paths, which the workflow lays out as
`.../transfer/finetune/<downstream>/<source>/<init>/<seed>/metrics.jsonl` and
`.../transfer/pretrain/<task>/metrics.jsonl`; rows are the table's row labels.
"""

from __future__ import annotations

from pathlib import Path

SOURCES_PANEL = "pre-training sources"


def curve_records(table: str, runs: list[Path], sources: list[Path]) -> list[dict]:
    from pipeline_lib.experiments.transfer.tables import row_label
    from pipeline_lib.report.curves import read_curve

    records = []
    for path in sources:
        records += read_curve(path, row=f"source {Path(path).parent.name}",
                              column=SOURCES_PANEL, seed=0)
    for path in runs:
        downstream, source, init, seed = Path(path).parts[-5:-1]
        label = row_label(table, {"source": source, "init": init})
        records += read_curve(path, row=label, column=downstream, seed=int(seed))
    return records


def write_curves(table: str, cfg: dict, runs: list[Path], sources: list[Path], out: Path) -> None:
    """`out` (PNG): the validation curves of the table's runs and sources."""
    from pipeline_lib.report.curves import curves_figure

    threshold = cfg["transfer"]["pretrain"]["stop_at_accuracy"]
    ft = cfg["transfer"]["finetune"]
    curves_figure(
        curve_records(table, runs, sources),
        out,
        f"{table.capitalize()}: validation token accuracy (teacher-forced) of the runs behind "
        f"it; {len(ft['seeds'])} seed(s) per row",
        ylabel="validation token accuracy",
        thresholds=None if threshold is None else {
            SOURCES_PANEL: (threshold, f"stop at {100 * threshold:.0f} %")},
        columns=[SOURCES_PANEL, *ft["tasks"]],
    )
