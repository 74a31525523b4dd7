"""`primer.{csv,md,tex}`, `primer_curves.png` and `primer.findings.json`: the variants side by
side, with the speed-up factors over seeds and So et al.'s claim checked.

One row per variant; cells are mean ± std over seeds. Speed-ups (`speedup`) are computed per
seed against the baseline run of the same seed, on three axes: steps, training FLOPs and wall
seconds. Runs must share the validation windows and the vocabulary (their hashes), or the
table refuses them: perplexities over different data or vocabularies are not comparable.
"""

from __future__ import annotations

from pathlib import Path

from pipeline_lib import report
from pipeline_lib.errors import ConfigError
from pipeline_lib.experiments.primer.findings import CANDIDATE, speedup_finding
from pipeline_lib.experiments.primer.speedup import speedup
from pipeline_lib.files import write_json_atomic

AXES = (("steps", "step"), ("FLOPs", "flops"), ("wall", "wall_seconds"))


def check_comparable(summaries: list[dict]) -> None:
    for key, what in (("validation_sha256", "validation windows"), ("vocab_sha256", "vocabulary")):
        values = {s[key] for s in summaries}
        if len(values) > 1:
            runs = ", ".join(f"{s['variant']}/{s['seed']}: {s[key][:12]}" for s in summaries)
            raise ConfigError(f"primer table: the runs have different {what} ({key}: {runs}); "
                              "rerun them on one primer_corpus")


def _curve(summary: dict, axis: str) -> tuple[list[float], list[float]]:
    return [p[axis] for p in summary["curve"]], [p["loss"] for p in summary["curve"]]


def speedup_records(runs: dict[tuple[str, int], dict], baselines: list[str]):
    """(table records, {baseline: {seed: FLOPs factor of primer_ez}}, notes)."""
    records, flops_factors, missed = [], {}, {}
    for (variant, seed), run in runs.items():
        for b in baselines:
            base = runs.get((b, seed))
            if b == variant or base is None:
                continue
            for name, axis in AXES:
                result = speedup(_curve(base, axis), _curve(run, axis))
                records.append({"row": variant, "column": f"Speed-up vs {b} ({name})",
                                "seed": seed, "value": result.factor})
                if not result.reached:
                    missed.setdefault((variant, b), []).append(
                        f"seed {seed} {name} (reverse {result.reverse:.2f})")
                if variant == CANDIDATE and axis == "flops":
                    flops_factors.setdefault(b, {})[seed] = result.factor
    notes = [f"{variant} did not reach {b}'s final loss (not reached) in: {', '.join(where)}; "
             f"those cells hold 1 / the reverse factor ({b}'s speed-up over {variant})"
             for (variant, b), where in missed.items()]
    return records, flops_factors, notes


def write_primer_table(cfg: dict, summaries: list[dict], out_prefix: Path,
                       figure: Path | None = None) -> list:
    section = cfg["primer"]
    check_comparable(summaries)
    runs = {(s["variant"], int(s["seed"])): s for s in summaries}
    columns = (("parameters", "Parameters (k)", 1e-3), ("flops_per_step", "GFLOPs/step", 1e-9),
               ("steps", "Steps", 1), ("validation_loss", "Validation loss (nats/token)", 1),
               ("validation_perplexity", "Perplexity", 1), ("steps_per_s", "Steps/s", 1))
    records = [{"row": s["variant"], "column": title, "seed": int(s["seed"]),
                "value": float(s[key]) * scale}
               for s in summaries for key, title, scale in columns if s.get(key) is not None]
    baselines = [b for b in section["baselines"] if b in section["variants"]]
    extra, factors, notes = speedup_records(runs, baselines)
    findings = [speedup_finding(b, factors.get(b, {})) for b in baselines]
    table = report.aggregate(records + extra, rows=[v for v in section["variants"]
                                                    if any(r[0] == v for r in runs)])
    seeds = sorted({int(s["seed"]) for s in summaries})
    budget = section["budget"]
    caption = (
        f"Decoder-only LMs (So et al. 2021; fidelity {section['fidelity']}) on fixed LM windows "
        f"of {section['length']} tokens, batch {section['batch_size']}, "
        f"budget {budget['value']:g} {budget['kind']}, preset {section['model']['preset']}, "
        f"seeds {seeds} (mean ± std). Speed-up = baseline's compute to its final loss / the "
        f"row's compute to reach that loss (running minimum, log-linear interpolation).")
    table = type(table)(**{**vars(table), "notes": tuple(notes) + tuple(
        f"Finding: {f.summary()}" for f in findings)})
    report.write_table(table, out_prefix, caption, digits=3)
    from pipeline_lib.report.findings import findings_json

    write_json_atomic(Path(f"{out_prefix}.findings.json"), findings_json(
        findings, table="primer", caption=caption,
        scale={"preset": section["model"]["preset"], "length": section["length"],
               "batch_size": section["batch_size"], "budget": budget, "seeds": seeds},
        validation_sha256=summaries[0]["validation_sha256"]))
    if figure is not None:
        from pipeline_lib.experiments.primer.figures import curves_png

        curves_png(summaries, figure)
    return findings
