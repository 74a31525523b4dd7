"""The JSON specs the primer rules pass to their jobs: each the slice of the config one job
depends on, so Snakemake's params rerun trigger reruns exactly what a config change affects."""

from __future__ import annotations

import json


def corpus_spec(config: dict) -> str:
    """The windows depend on the data section, the length and the batch (checked against the
    number of windows), and nothing else."""
    primer = config["primer"]
    return json.dumps({"seed": config["seed"], "vocab": config["vocab"],
                       "primer": {k: primer[k] for k in ("data", "length", "batch_size")}},
                      sort_keys=True)


def run_spec(config: dict, variant: str, seed: int) -> str:
    """One run's slice: its variant and seed only, so adding a seed or a variant to the config
    reruns nothing that exists."""
    run = config["primer"] | {"variants": [variant], "seeds": [int(seed)], "baselines": []}
    return json.dumps({"seed": config["seed"], "vocab": config["vocab"], "primer": run},
                      sort_keys=True)


def corpus_inputs(config: dict, pcfg_pretrain_dir: str) -> list[str]:
    data = config["primer"]["data"]
    return [pcfg_pretrain_dir] if data["kind"] == "pcfg" else [data["path"]]
