"""`primer_curves.png`: validation loss against training FLOPs (log scale), one line per run."""

from __future__ import annotations

from pathlib import Path

from pipeline_lib.files import atomic_open


def curves_png(summaries: list[dict], path: Path, floor: float | None = None) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), dpi=100)  # no pyplot state: headless, deterministic
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    variants = list(dict.fromkeys(s["variant"] for s in summaries))
    colours = {v: f"C{i}" for i, v in enumerate(variants)}
    styles = ["-", "--", ":", "-."]
    for s in sorted(summaries, key=lambda s: (variants.index(s["variant"]), s["seed"])):
        xs = [p["flops"] for p in s["curve"]]
        ys = [p["loss"] for p in s["curve"]]
        axes.plot(xs, ys, styles[int(s["seed"]) % len(styles)], color=colours[s["variant"]],
                  label=f"{s['variant']} (seed {s['seed']})", linewidth=1.2)
    if floor is not None:
        axes.axhline(floor, color="grey", linewidth=0.8, label="exact floor")
    axes.set_xscale("log")
    axes.set_xlabel("training FLOPs")
    axes.set_ylabel("validation loss (nats/token)")
    axes.legend(fontsize=7)
    axes.grid(True, which="both", linewidth=0.3)
    figure.tight_layout()
    with atomic_open(Path(path), "wb") as handle:
        figure.savefig(handle, format="png", metadata={"Software": None})
    return Path(path)
