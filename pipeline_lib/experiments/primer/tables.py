"""The primer family's table: the decoder-LM variants side by side at equal steps."""

from __future__ import annotations

from pathlib import Path

from pipeline_lib import report


def write_primer_table(cfg: dict, summaries: list[dict], out_prefix: Path) -> None:
    """`results/tables/lm_variants.{csv,md,tex}`: the variants side by side at equal steps."""
    columns = (("validation_loss", "Validation loss (nats/token)"),
               ("validation_perplexity", "Perplexity"),
               ("validation_accuracy", "Next-token accuracy"),
               ("parameters", "Parameters"))
    records = [
        {"row": s["variant"], "column": title, "seed": 0, "value": float(s[key])}
        for s in summaries for key, title in columns if s.get(key) is not None
    ]
    lm = cfg["primer"]
    report.write_table(
        report.aggregate(records), out_prefix,
        f"Decoder-only LMs on the PCFG sentences (So et al. 2021 variants): {lm['steps']} steps "
        f"of batch {lm['batch_size']}, preset {lm['model']['preset']}, equal data and seed.",
        digits=3,
    )
