"""Tables 1-3 of Wu, Li & Liang (2022) from the fine-tuning runs' metrics.json files.

Rows and columns (the reference's inferred layouts, section 6):

* table1: random init, then one row per pre-training corpus (fine-tuned from its checkpoint,
  `transfer.finetune.pretrained_init`), then the off-the-shelf checkpoint when configured. Columns:
  downstream tasks, their average, and "% of benefit" = 100 * (avg(row) - avg(random)) /
  (avg(reference) - avg(random)) with the reference row `transfer.tables.table1.reference_row` (the paper:
  off-the-shelf T5; default: the last row).
* table2: per source checkpoint, "Pretrained" (every weight loaded) and each init scheme; plus
  random init. "% of benefit" is measured against the same source's Pretrained row (Fig. 4's
  "recovered > 70% of the benefit of normally fine-tuning a synthetic pre-trained model").
* table3: random init and random init with every pre-attention LayerNorm scale set to a value.
  "% of benefit" is omitted (no reference row); the average column is kept.

Cells are mean +- sample std over `transfer.finetune.seeds` of each run's primary metric (x100 scale
as the paper: ROUGE-1, exact match, SQuAD EM).
"""

from __future__ import annotations

from pathlib import Path

from pipeline_lib import report

RANDOM_ROW = "Random init"


def row_label(table: str, record: dict) -> str:
    from pipeline_lib.experiments.transfer.init_schemes import scheme_label

    source, init = record["source"], record["init"]
    if init == "random":
        return RANDOM_ROW
    if table == "table1":
        return "Off-the-shelf T5" if source == OFF_THE_SHELF else source
    if table == "table2":
        name = "Pretrained (all weights)" if init == "pretrained" else scheme_label(init)
        return f"{source}: {name}"
    return scheme_label(init)


def caption(table: str, cfg: dict) -> str:
    ft, model = cfg["transfer"]["finetune"], cfg["transfer"]["pretrain"]["model"]
    what = {
        "table1": "Fine-tuning from each synthetic pre-training corpus vs random init",
        "table2": "Initialising from pre-trained parameter statistics only (init schemes)",
        "table3": "Random init with the pre-attention LayerNorm scales set to a constant",
    }[table]
    return (
        f"{what}. Scale: T5 preset {model['preset']}"
        f"{' + overrides' if model.get('overrides') else ''}, vocab layout "
        f"{cfg['vocab']['layout']}, {ft['steps']} fine-tuning steps of batch "
        f"{ft['batch_size']}, beam {ft['beam_size']}; mean ± std over seeds "
        f"{', '.join(map(str, ft['seeds']))}; columns: {', '.join(ft['tasks'])} (primary metric "
        "of each, x100)"
        + ("; % of benefit: estimate [95 % interval, Fieller, paired by seed], n/m where the "
           "benefit itself is not distinguishable from 0." if table != "table3" else ".")
    )


NO_SOURCE = "none"  # runs that start from no checkpoint
OFF_THE_SHELF = "off_the_shelf"


def table_runs(table: str, cfg: dict) -> list[tuple[str, str]]:
    """(source, init) of every row of a table, in the config's order; the `finetune` jobs of
    the DAG (workflow/rules/common.smk) and the rows of the written table both come from here."""
    from pipeline_lib.experiments.transfer.init_schemes import preattn_ln_scheme

    tables, pretrained_init = cfg["transfer"]["tables"], cfg["transfer"]["finetune"]["pretrained_init"]
    runs = [(NO_SOURCE, "random")]
    if table == "table1":
        rows = tables["table1"]["rows"] or cfg["transfer"]["pretrain"]["tasks"]
        runs += [(task, pretrained_init) for task in rows]
        if tables["table1"]["off_the_shelf"]:
            runs.append((OFF_THE_SHELF, pretrained_init))
    elif table == "table2":
        for source in tables["table2"]["sources"] or cfg["transfer"]["pretrain"]["tasks"]:
            runs += [(source, "pretrained")] + [(source, x) for x in tables["table2"]["schemes"]]
    else:
        runs += [(NO_SOURCE, preattn_ln_scheme(float(v))) for v in tables["table3"]["ln_values"]]
    return runs


def long_records(table: str, records: list[dict]) -> list[dict]:
    """The table's long-form records ({"row", "column", "seed", "value"}) of the runs'
    metrics.json records: what the table and its findings are computed from."""
    return [
        {
            "row": row_label(table, r),
            "column": r["downstream"],
            "seed": r["seed"],
            "value": float(r["score"]),
        }
        for r in records
    ]


def build_table(table: str, cfg: dict, records: list[dict]) -> report.ResultTable:
    long = long_records(table, records)
    seen = list(dict.fromkeys([RANDOM_ROW] + [x["row"] for x in long]))
    order = [row_label(table, {"source": src, "init": init}) for src, init in table_runs(table, cfg)]
    rows = [r for r in order if r in seen] + [r for r in seen if r not in order]
    result = report.aggregate(long, rows=rows, columns=list(cfg["transfer"]["finetune"]["tasks"]))
    result = report.with_average(result)
    if table == "table1":
        reference = cfg["transfer"]["tables"]["table1"]["reference_row"] or rows[-1]
        if reference not in rows:
            raise ValueError(f"transfer.tables.table1.reference_row: {reference!r} is not a row; "
                             f"rows: {', '.join(rows)}")
        if reference != RANDOM_ROW:
            result = report.percent_of_benefit(result, RANDOM_ROW, reference)
    elif table == "table2":
        sources = sorted({r["source"] for r in records if r["init"] == "pretrained"})
        result = report.percent_of_benefit_by_group(
            result,
            RANDOM_ROW,
            {f"{s}: Pretrained (all weights)": [x for x in rows if x.startswith(f"{s}: ")]
             for s in sources},
        )
    return result


def write_wu_table(
    table: str,
    cfg: dict,
    metrics: list[Path],
    out_prefix: Path,
    source_summaries: list[Path] = (),
) -> None:
    """`<prefix>.{csv,md,tex,png}` and `<prefix>.findings.json`: the table, its claims checked
    (captions list them with the paper's value) and how far each pre-training source got."""
    import dataclasses
    import logging

    from pipeline_lib.experiments.transfer.findings import source_notes, table_findings
    from pipeline_lib.files import read_json, write_json_atomic
    from pipeline_lib.report.findings import findings_json

    runs = [read_json(p) for p in metrics]
    result = build_table(table, cfg, runs)
    findings = table_findings(table, result, long_records(table, runs))
    summaries = [read_json(p) for p in source_summaries]
    threshold = cfg["transfer"]["pretrain"]["stop_at_accuracy"]
    notes, warnings = source_notes(summaries, threshold)
    for warning in warnings:
        logging.getLogger(__name__).warning("%s: %s", table, warning)
    result = dataclasses.replace(
        result,
        notes=result.notes + tuple(warnings) + tuple(notes)
        + tuple(f"Finding: {f.summary()}" for f in findings),
    )
    report.write_table(result, out_prefix, caption(table, cfg))
    write_json_atomic(
        Path(f"{out_prefix}.findings.json"),
        findings_json(findings, table=table, caption=caption(table, cfg), sources=notes,
                      warnings=warnings),
    )
    ft = cfg["transfer"]["finetune"]
    title = (f"{table.capitalize()} (T5 {cfg['transfer']['pretrain']['model']['preset']}, "
             f"{ft['steps']} fine-tuning steps, {len(ft['seeds'])} seed(s); primary metric x100)")
    report.bar_chart(result, Path(f"{out_prefix}.png"), title)
