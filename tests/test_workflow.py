"""The Snakemake workflow itself: lint, format, plan, end-to-end run, no-op rerun, forcerun."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_config.yaml"
BIN = Path(sys.executable).parent


def snakemake(*args, cwd=REPO, check=True):
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), *args]
    # the rules call `python -m pipeline_lib`: this interpreter's environment must come first
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "true",  # tiny models: compile time dominates
    }
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_lint_is_clean():
    proc = snakemake("--lint")
    assert "Congratulations" in proc.stdout + proc.stderr


def test_snakefmt_is_clean():
    files = [str(REPO / "Snakefile"), str(REPO / "workflow" / "rules")]
    subprocess.run([str(BIN / "snakefmt"), "--check", *files], check=True, capture_output=True)


def test_dry_run_plans_every_corpus_of_the_default_config(tmp_path):
    out = snakemake("-n", "corpora", "--quiet", "rules", "--configfile", str(REPO / "config.yaml"),
                    "--directory", str(tmp_path)).stdout
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts.get("corpus") == 21, out


def test_bad_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("length_range: [5, 16]", "length_range: [16, 5]"))
    proc = snakemake("-n", "--configfile", str(bad), "--directory", str(tmp_path), check=False)
    assert proc.returncode != 0
    assert "corpora.length_range" in proc.stdout + proc.stderr


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def tiny_workdir(tmp_path):
    """A scratch working directory with the tiny config, and the common snakemake arguments."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(TINY, work / "config.yaml")
    common = ["--configfile", str(work / "config.yaml"), "--directory", str(work), "--cores", "2"]
    return work, common


@pytest.mark.slow
def test_end_to_end_corpora_run_is_resumable_and_deterministic(tiny_workdir):
    work, common = tiny_workdir
    snakemake("corpora", *common)
    corpora = work / "results" / "corpora"
    assert sorted(p.name for p in corpora.iterdir()) == sorted(
        ["identity", "count", "union", "lime", "nonsense_summary", "nesting_language"]
    )
    for task_dir in corpora.iterdir():
        subprocess.run(
            [sys.executable, "-m", "pipeline_lib", "corpus-check", str(task_dir)], check=True,
            capture_output=True,
        )
        assert (work / "results" / "logs" / "corpora" / f"{task_dir.name}.log").exists()
    before = _digests(corpora)
    # a second run has nothing to do
    out = snakemake("corpora", "-n", *common).stdout
    assert "Nothing to be done" in out
    # --forcerun one corpus: exactly that job runs again, and it reproduces the same bytes
    plan = snakemake("corpora", "-n", "--forcerun", "results/corpora/count", *common).stdout
    assert "corpus      1" in plan or "corpus 1" in " ".join(plan.split()), plan
    snakemake("corpora", "--forcerun", "results/corpora/count", *common)
    assert _digests(corpora) == before
    # a different seed changes the plan (params rerun trigger): every corpus is regenerated
    plan = snakemake("corpora", "-n", "--config", "seed=4", *common).stdout
    assert "corpus 6" in " ".join(plan.split()), plan


@pytest.mark.slow
def test_end_to_end_pcfg_data(tiny_workdir):
    work, common = tiny_workdir
    snakemake("pcfg_data", *common)
    root = work / "results" / "pcfg" / "generated_seed0"
    for product in ["grammar", "pretrain", "downstream/A", "downstream/B", "downstream/C",
                    "optimal_loss"]:
        assert (root / product / "meta.json").exists(), product
    for product in ["pretrain", "downstream/A", "optimal_loss"]:
        assert (root / product / "sample.jsonl").exists(), product
    assert (root / "downstream" / "B" / "train.csv").read_text().startswith("text,label\n")
    import json

    metrics = json.loads((root / "optimal_loss" / "metrics.json").read_text())
    assert 0 < metrics["expected_cross_entropy_per_token"] < 3  # log(12 terminals) ~ 2.5
    assert "Nothing to be done" in snakemake("pcfg_data", "-n", *common).stdout


@pytest.mark.slow
def test_end_to_end_pretrain_resumes_from_checkpoints(tiny_workdir):
    import json

    work, common = tiny_workdir
    snakemake("pretrained_models", *common)
    out = work / "results" / "pretrain" / "identity"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 6 and summary["best"]["step"] in (3, 6)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("split") == "eval" for r in rows)
    assert (work / "results" / "ckpt" / "pretrain" / "identity").is_dir()  # not an output
    # --forcerun: the job finds its checkpoint at step 6 and finishes without retraining
    snakemake("pretrained_models", "--forcerun", "pretrain", *common)
    again = json.loads((out / "summary.json").read_text())
    assert again["resumed_from"] == 6 and again["step"] == 6
