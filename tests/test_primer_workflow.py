"""`snakemake primer_table` end to end on the tiny config: windows, 2 variants x 1 seed,
the table with speed-ups, the findings and the curves figure; then a no-op rerun."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _snakemake(*args):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "true"}  # tiny models: compile time dominates
    proc = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), *args],
                          cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_primer_table_end_to_end_then_a_no_op_rerun(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "tests" / "data" / "tiny_config.yaml", work / "config.yaml")
    common = ["--configfile", str(work / "config.yaml"), "--directory", str(work), "--cores", "2"]
    _snakemake("primer_table", *common)
    results = work / "results"
    meta = json.loads((results / "primer" / "corpus" / "meta.json").read_text())
    for variant in ("primer_ez", "transformer_pp"):
        for seed in (0,):
            s = json.loads((results / "primer" / variant / str(seed) / "summary.json").read_text())
            assert (s["variant"], s["seed"], s["steps"], s["fidelity"]) == (variant, seed, 4, "gins")
            assert s["validation_sha256"] == meta["validation_sha256"]
            assert [p["step"] for p in s["curve"]] == [2, 4]
            assert all(p["flops"] == p["step"] * s["flops_per_step"] for p in s["curve"])
            assert 0 < s["curve"][0]["wall_seconds"] < s["curve"][1]["wall_seconds"]
    tables = results / "tables"
    md = (tables / "primer.md").read_text()
    assert "| primer_ez |" in md and "Speed-up vs transformer_pp (FLOPs)" in md and "Finding:" in md
    findings = json.loads((tables / "primer.findings.json").read_text())["findings"]
    assert [f["verdict"] in ("held", "not held", "inconclusive") for f in findings] == [True]
    assert (tables / "primer_curves.png").stat().st_size > 0
    assert "Nothing to be done" in _snakemake("primer_table", "lm_models", "-n", *common)
