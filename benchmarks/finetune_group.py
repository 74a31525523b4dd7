"""K fine-tuning runs trained together in one job vs K separate jobs, and beam vs greedy decoding.

What is measured (laptop shape of config.yaml: t5_laptop, the pcfg_swap task, its batch,
lengths, steps and beam):

* **group**: one `python -m pipeline_lib transfer-finetune --seeds 0 .. K-1` process (the
  workflow's job: the K runs share one vmapped train step, one compilation, one start-up);
* **separate** (the baseline): K processes `transfer-finetune --seeds i`, one after the other
  (what one job per run costs; on a 2-core machine Snakemake runs them one at a time too).

Both write the same per-run outputs and start from fresh checkpoint directories; wall time of
the whole processes, each side `--repeats` times, alternating, medians. The ratio
separate / group is the speed-up of the group job (target >= 2x).

Decoding: beam search (beam 4, T5X length penalty) vs greedy on the task's test split with
the same (random-init) model, in one process, medians of `--repeats` timed passes after a
warm-up pass (compilation excluded).

    python benchmarks/finetune_group.py [--quick] [--k 3] [--repeats 2]

The data (PCFG grammar -> swap task -> downstream set) is built once with Snakemake in a
scratch directory. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _spec(cfg: dict, steps: int | None) -> str:
    from pipeline_lib.config import validate_config

    cfg = validate_config(cfg)
    if steps is not None:
        cfg["transfer"]["finetune"]["steps"] = steps
    return json.dumps(cfg)


def _finetune(work: Path, spec: str, seeds: list[int], tag: str) -> float:
    cmd = [
        sys.executable, "-m", "pipeline_lib", "transfer-finetune", "--spec", spec,
        "--downstream", "pcfg_swap", "--data", str(work / "results/downstream/pcfg_swap"),
        "--init", "random", "--seeds", *map(str, seeds),
        "--out", str(work / f"out/{tag}"), "--ckpt-dir", str(work / f"ckpt/{tag}"),
    ]
    started = time.perf_counter()
    subprocess.run(cmd, cwd=work, env=_env(), check=True, capture_output=True)
    return time.perf_counter() - started


def _decode_times(work: Path, cfg: dict, repeats: int) -> dict:
    import flax.nnx as nnx
    import jax

    from pipeline_lib.config import validate_config
    from pipeline_lib.data.corpus import load_corpus
    from pipeline_lib.data.store import read_meta
    from pipeline_lib.experiments.transfer.finetune import decode_split, make_decoder, run_spec
    from pipeline_lib.models import t5
    from pipeline_lib.models.configs import t5_config

    cfg = validate_config(cfg)
    data_dir = work / "results/downstream/pcfg_swap"
    meta = read_meta(data_dir)
    model = cfg["transfer"]["pretrain"]["model"]
    model_cfg = t5_config(model["preset"], vocab_size=meta["vocab"]["model_vocab_size"],
                          **{**model.get("overrides", {}), "dropout_rate": 0.0})
    graphdef, params, rest = t5.split_model(t5.T5(model_cfg, rngs=nnx.Rngs(params=0)))
    (inputs, _), = load_corpus(data_dir, "test").values()
    out = {}
    for name, beam in (("beam4", 4), ("greedy", 1)):
        spec = {**run_spec(cfg, "pcfg_swap"), "beam_size": beam}
        decoder = make_decoder(graphdef, rest, spec)
        decode_split(decoder, params, inputs, spec)  # compile
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            decode_split(decoder, params, inputs, spec)
            times.append(time.perf_counter() - started)
        out[name] = statistics.median(times)
    jax.clear_caches()
    return {"examples": int(inputs.n), **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and one repeat")
    parser.add_argument("--k", type=int, default=3, help="runs per group (default 3 seeds)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import yaml

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    steps = 60 if args.quick else None
    repeats = 1 if args.quick else args.repeats
    work = Path(tempfile.mkdtemp(prefix="finetune_group_"))
    try:
        (work / "config.yaml").write_text(yaml.safe_dump(cfg))
        print(f"building the pcfg_swap data set in {work} ...", flush=True)
        subprocess.run(
            [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory",
             str(work), "--configfile", str(work / "config.yaml"), "--cores", "2",
             "results/downstream/pcfg_swap"],
            env=_env(), check=True, capture_output=True,
        )
        spec = _spec(cfg, steps)
        seeds = list(range(args.k))
        group, separate = [], []
        for r in range(repeats):
            shutil.rmtree(work / "ckpt", ignore_errors=True)
            group.append(_finetune(work, spec, seeds, f"group{r}"))
            separate.append(sum(_finetune(work, spec, [s], f"sep{r}_{s}") for s in seeds))
            print(f"round {r}: group of {args.k} {group[-1]:.1f} s, {args.k} separate jobs "
                  f"{separate[-1]:.1f} s", flush=True)
        g, s = statistics.median(group), statistics.median(separate)
        print(f"median: group {g:.1f} s, separate {s:.1f} s -> {s / g:.2f}x", flush=True)
        decode = _decode_times(work, cfg, repeats=1 if args.quick else 3)
        print(f"decoding {decode['examples']} test examples: beam 4 {decode['beam4']:.2f} s, "
              f"greedy {decode['greedy']:.2f} s ({decode['beam4'] / decode['greedy']:.2f}x)")
        steps_used = json.loads(spec)["transfer"]["finetune"]["steps"]
        print(json.dumps({
            "k_runs": args.k,
            "steps": steps_used,
            "group_s": round(g, 2),
            "separate_jobs_s": round(s, 2),
            "group_speedup_vs_separate_jobs": round(s / g, 3),
            "target_met": s / g >= 2.0,
            "decode_examples": decode["examples"],
            "decode_beam4_s": round(decode["beam4"], 3),
            "decode_greedy_s": round(decode["greedy"], 3),
            "decode_beam4_vs_greedy": round(decode["beam4"] / decode["greedy"], 3),
        }))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
