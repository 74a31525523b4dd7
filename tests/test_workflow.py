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


def test_a_real_run_on_an_invalid_config_starts_no_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("  data_vocab_size: 96", "  data_vocab_size: .nan"))
    proc = snakemake("corpora", "--configfile", str(bad), "--directory", str(tmp_path),
                     "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "vocab.data_vocab_size: nan is not a finite number" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()  # nothing ran, nothing was written


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
    out = work / "results" / "transfer" / "pretrain" / "identity"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 6 and summary["best"]["step"] in (3, 6)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("split") == "eval" for r in rows)
    assert (work / "results" / "ckpt" / "transfer" / "pretrain" / "identity").is_dir()  # not an output
    # --forcerun: the job finds its checkpoint at step 6 and finishes without retraining
    snakemake("pretrained_models", "--forcerun", "transfer_pretrain", *common)
    again = json.loads((out / "summary.json").read_text())
    assert again["resumed_from"] == 6 and again["step"] == 6


@pytest.mark.slow
def test_end_to_end_wu_tables_rerun_and_forcerun(tiny_workdir):
    """table1-3 on the tiny config: real tables with findings, a no-op rerun, --forcerun of one
    run (its group job: the seeds of one (task, source, init) train together)."""
    import json

    work, common = tiny_workdir
    snakemake("table1", "table2", "table3", *common)
    tables = work / "results" / "tables"
    for name in ("table1", "table2", "table3"):
        for ext in ("csv", "md", "tex", "png", "findings.json", "curves.png"):
            assert (tables / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    md = (tables / "table2.md").read_text()
    assert "Random init" in md and "identity: Per Param Mean/SD" in md and "Finding:" in md
    assert "source identity:" in md  # how far the source got (or a WARNING)
    findings = json.loads((tables / "table2.findings.json").read_text())
    claims = [f["claim"] for f in findings["findings"]]
    assert "identity: Pretrained beats Random init (Average)" in claims
    assert all(f["verdict"] in ("held", "not held", "inconclusive") for f in findings["findings"])
    assert "Pre-attn LN = 0.4" in (tables / "table3.md").read_text()
    group = work / "results" / "transfer" / "finetune" / "pcfg_swap" / "identity" / "pretrained"
    for seed in (0, 1):
        record = json.loads((group / str(seed) / "metrics.json").read_text())
        assert record["init"] == "pretrained" and record["primary_metric"] == "exact_match"
        assert record["seed"] == seed and record["runs_in_group"] == 2
        assert 0 <= record["score"] <= 100 and record["num_examples"] == 10
        assert len((group / str(seed) / "predictions.jsonl").read_text().splitlines()) == 10
    # the plan is keyed by task and init; a second run is a no-op
    assert "Nothing to be done" in snakemake("table2", "-n", *common).stdout
    # --forcerun of one run's file redoes its group job and the tables that read it
    run = group / "0" / "metrics.json"
    plan = snakemake(
        "table1", "table2", "table3", "-n", "--quiet", "rules",
        "--forcerun", str(run.relative_to(work)), *common,
    ).stdout
    counts = dict(
        (line.split()[0], int(line.split()[1]))
        for line in plan.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    )
    assert counts.get("transfer_finetune") == 1 and counts.get("transfer_pretrain") is None, plan
    assert counts.get("transfer_table") == 2, plan  # table1 and table2 read identity/pretrained


@pytest.mark.slow
def test_a_changed_spec_trains_afresh_instead_of_resuming_a_stale_run(tiny_workdir):
    """Checkpoints are keyed by the run spec: a new learning rate reruns the job (params
    trigger) and trains from scratch, while an unchanged spec resumes (see the test above)."""
    import json

    import yaml

    work, common = tiny_workdir
    snakemake("results/transfer/finetune/pcfg_A/none/random/0/metrics.json", *common)
    out = work / "results" / "transfer" / "finetune" / "pcfg_A" / "none" / "random" / "0"
    first = json.loads((out / "metrics.json").read_text())
    assert first["resumed_from"] is None
    # same spec, forced: resumes from its own checkpoint
    snakemake(str(out.relative_to(work) / "metrics.json"), "--forcerun", "transfer_finetune",
              *common)
    assert json.loads((out / "metrics.json").read_text())["resumed_from"] == 4
    # a new learning rate: a new checkpoint directory, trained afresh
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["transfer"]["finetune"]["optimizer"] = {"learning_rate": 0.5}
    changed = work / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    args = [str(changed) if a == str(work / "config.yaml") else a for a in common]
    snakemake(str(out.relative_to(work) / "metrics.json"), *args)
    again = json.loads((out / "metrics.json").read_text())
    assert again["resumed_from"] is None and again["best_validation"] != first["best_validation"]
    ckpts = work / "results" / "ckpt" / "transfer" / "finetune" / "pcfg_A" / "none" / "random"
    assert len([d for d in ckpts.iterdir() if (d / "run_spec.json").is_file()]) == 2
    # pre-training too
    snakemake("pretrained_models", *common)
    cfg["transfer"]["pretrain"]["optimizer"] = {"learning_rate": 0.3}
    changed.write_text(yaml.safe_dump(cfg))
    snakemake("pretrained_models", *args)
    summary = json.loads(
        (work / "results" / "transfer" / "pretrain" / "identity" / "summary.json").read_text()
    )
    assert summary["resumed_from"] is None and summary["step"] == 6


@pytest.mark.slow
def test_end_to_end_pcfg_tables_and_lm_models(tiny_workdir):
    import json

    work, common = tiny_workdir
    snakemake("pcfg_tables", "lm_models", *common)
    tables = work / "results" / "tables"
    md = (tables / "implicit_bias_checkpoints.md").read_text()
    assert "small / adamw / step 4" in md and "large / adamw / step 2" in md
    assert "Lookup table" in md and "tr(H) hutchinson" in md and "tr(H) fisher" in md
    for name in ("implicit_bias_accuracy_vs_loss.png", "implicit_bias_accuracy_vs_trace.png",
                 "implicit_bias_correlations.tex"):
        assert (tables / name).stat().st_size > 0, name
    record = json.loads(
        (work / "results" / "implicit_bias" / "eval" / "small" / "adamw" / "0" / "step4.json").read_text()
    )
    assert record["gap"] > 0 and record["model_loss"] > record["optimal_loss"]
    assert record["trace_model"]["hidden_size"] == 32  # enlarged into `large`
    for variant in ("primer_ez", "transformer_pp"):
        summary = json.loads((work / "results" / "primer" / variant / "0" / "summary.json").read_text())
        assert summary["variant"] == variant and summary["validation_loss"] > 0
    lm_md = (tables / "primer.md").read_text()
    assert "| primer_ez |" in lm_md and "| transformer_pp |" in lm_md and "Perplexity" in lm_md
    assert "Nothing to be done" in snakemake("pcfg_tables", "lm_models", "-n", *common).stdout
