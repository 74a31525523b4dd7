"""The shipped SLURM profile, run for real: munged + slurmctld + slurmd on this machine.

`snakemake transfer_models --profile workflow/profiles/slurm --profile tests/cluster/slurm_profile`
on a small config: every job goes through sbatch, a training job cancelled with scancel
mid-training is submitted again by the profile's `retries` and resumes from its checkpoint,
and the outputs are the bytes of a local run of the same target.

SLURM and munge are installed from the Debian packages when absent (root only); where that
cannot happen the test is skipped with the reason (CI sets PIPELINE_CLUSTER_TESTS=require, which
turns the skip into a failure).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cluster import slurm as slurm_lib

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_config.yaml"
BIN = Path(sys.executable).parent
TARGET = "transfer_models"
STEPS = 150

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    seconds = slurm_lib.ensure_installed()
    if seconds is not None:
        print(f"installed {' '.join(slurm_lib.PACKAGES)} in {seconds:.1f} s")
    c, root = slurm_lib.start_cluster()
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def _config(path: Path) -> Path:
    """The tiny config with one corpus and a pre-training run long enough to be cancelled
    between two of its checkpoints (a few seconds of training, a checkpoint every 10 steps).

    Checkpoints fall on log lines (save_every = log_every): a train line of metrics.jsonl
    averages the steps since the previous line, and those pending sums are not part of a
    checkpoint, so a run resumed between two log lines writes a first line over fewer steps."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["corpora"]["tasks"] = ["identity"]
    cfg["transfer"]["pretrain"].update(
        {"steps": STEPS, "save_every": 10, "log_every": 10, "eval_every": 50}
    )
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(base: dict) -> dict:
    return {
        **base,
        "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",  # rules call `python -m pipeline_lib`
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "true",  # tiny models: compile time dominates
    }


def _snakemake(work: Path, *args: str) -> list[str]:
    return [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
            "--configfile", str(work / "config.yaml"), "--directory", str(work), TARGET, *args]


def _outputs(work: Path) -> dict[str, bytes]:
    """Every file the target produced, without logs, benchmarks (timings), the compilation
    cache and the checkpoints (not declared outputs)."""
    results = work / "results"
    skip = ("logs", "benchmarks", "cache", "ckpt")
    return {
        str(p.relative_to(results)): p.read_bytes()
        for p in sorted(results.rglob("*"))
        if p.is_file() and p.relative_to(results).parts[0] not in skip
    }


def _comparable(name: str, data: bytes) -> str:
    """What must be equal between two runs: the bytes, except the wall-clock throughput in
    metrics.jsonl and the run history (`resumed_from`) in summary.json."""
    if name.endswith("metrics.jsonl"):
        rows = [json.loads(x) for x in data.decode().splitlines()]
        # throughput (steps_per_s, tokens_per_s, mfu) is wall-clock, not what a run computes
        return "\n".join(json.dumps({k: v for k, v in r.items()
                                     if not k.endswith("_per_s") and k != "mfu"},
                                    sort_keys=True) for r in rows)
    if name.endswith("summary.json"):
        summary = json.loads(data)
        summary.pop("resumed_from")
        return json.dumps(summary, sort_keys=True)
    return hashlib.sha256(data).hexdigest()


def _finished_steps(work: Path) -> list[int]:
    """Checkpoint steps on disk (orbax renames a step directory to its number when complete)."""
    root = work / "results" / "ckpt" / "transfer" / "pretrain" / "identity"
    return sorted(int(p.name) for p in root.glob("*/*") if p.is_dir() and p.name.isdigit())


def _cancel_mid_training(cluster, proc, work: Path, log: Path,
                         timeout: float = 180.0) -> tuple[str, int]:
    """Wait for the training job's first checkpoint, then scancel it: (SLURM id, last step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        steps = _finished_steps(work)
        if steps:
            running = [jid for jid, j in cluster.jobs().items() if j["state"] == "RUNNING"
                       and j["comment"].startswith("rule_transfer_pretrain")]
            if running:
                cluster.run("scancel", running[0])
                return running[0], max(_finished_steps(work))
        time.sleep(0.2)
    raise AssertionError(f"the training job never checkpointed under SLURM:\n"
                         f"{log.read_text()}\n{cluster.logs()}")


def test_slurm_profile_runs_jobs_through_sbatch_resumes_a_cancelled_job_and_matches_local(
        cluster, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "slurm"
    for work in (local, remote):
        work.mkdir()
        _config(work / "config.yaml")

    # the local run of the same target, meanwhile (the SLURM run mostly waits for squeue)
    # (output to files: a pipe nobody reads while we wait could fill up and stall snakemake)
    local_log, slurm_log = tmp_path / "local.out", tmp_path / "slurm.out"
    local_run = subprocess.Popen(_snakemake(local, "--cores", "2"), stdout=local_log.open("w"),
                                 stderr=subprocess.STDOUT, env=_env(os.environ))
    profiles = ["--profile", str(REPO / "workflow" / "profiles" / "slurm"),
                "--profile", str(REPO / "tests" / "cluster" / "slurm_profile")]
    proc = subprocess.Popen(_snakemake(remote, *profiles), stdout=slurm_log.open("w"),
                            stderr=subprocess.STDOUT, env=_env(cluster.env))
    try:
        cancelled, step_at_cancel = _cancel_mid_training(cluster, proc, remote, slurm_log)
        proc.wait(timeout=240)
        local_run.wait(timeout=240)
    finally:
        for p in (proc, local_run):  # a failed or timed-out run leaves no process behind
            if p.poll() is None:
                p.kill()
                p.wait()
    log = slurm_log.read_text()
    assert proc.returncode == 0, f"{log}\n{cluster.logs()}"
    assert local_run.returncode == 0, local_log.read_text()

    # every job went through sbatch: the ids Snakemake got back are SLURM's own jobs
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", log)
    jobs = cluster.jobs()
    assert set(submitted) <= set(jobs), (submitted, jobs)
    by_rule = {}
    for jid in submitted:
        by_rule.setdefault(jobs[jid]["comment"].split("_wildcards_")[0], []).append(jid)
    assert len(by_rule["rule_corpus"]) == 1, by_rule
    assert len(by_rule["rule_transfer_pretrain"]) == 2, by_rule  # cancelled, then the retry
    assert cancelled in by_rule["rule_transfer_pretrain"]
    assert jobs[cancelled]["state"] == "CANCELLED"
    retry = next(j for j in by_rule["rule_transfer_pretrain"] if j != cancelled)
    assert jobs[retry]["state"] == "COMPLETED"
    assert jobs[by_rule["rule_corpus"][0]]["state"] == "COMPLETED"
    assert len({j["name"] for j in jobs.values()}) == 1  # one Snakemake run id
    slurm_logs = remote / ".snakemake" / "slurm_logs"
    assert (slurm_logs / "rule_transfer_pretrain" / "identity" / f"{retry}.log").is_file()

    # the retry resumed from the checkpoint the cancelled job left, not from scratch
    summary = json.loads(
        (remote / "results" / "transfer" / "pretrain" / "identity" / "summary.json").read_text())
    resumed = summary["resumed_from"]
    assert resumed is not None and step_at_cancel <= resumed < STEPS, (resumed, step_at_cancel)
    job_log = (remote / "results" / "logs" / "transfer" / "pretrain" / "identity.log").read_text()
    assert f"at step {resumed}" in job_log and "resumed from" in job_log

    # the same outputs as a local run of the same target
    a, b = _outputs(local), _outputs(remote)
    assert sorted(a) == sorted(b)
    assert "transfer/pretrain/identity/params.npz" in a and "corpora/identity/meta.json" in a
    for name in a:
        assert _comparable(name, a[name]) == _comparable(name, b[name]), name

    # and a second run under the profile has nothing to do
    again = subprocess.run(_snakemake(remote, *profiles, "-n"), capture_output=True, text=True,
                           env=_env(cluster.env))
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout + again.stderr
