"""The shipped profiles, parsed by Snakemake with their executor plugins, and results_dir.

Google Batch and Kubernetes: no cloud project or Kubernetes cluster is reachable here, so these
are dry-runs, nothing more: Snakemake reads each profile with the plugin's own settings (a key
the plugin does not know fails, tested below) and plans the jobs with inputs and outputs in a
bucket. The bucket is a real GCS-API server on loopback (gcp-storage-emulator), because both
profiles need a storage provider (their jobs share no file system) and a dry-run asks the
storage which outputs exist. SLURM is run for real in tests/test_cluster_slurm.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cluster.gcs import gcs_server

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_config.yaml"
PROFILES = REPO / "workflow" / "profiles"
BIN = Path(sys.executable).parent
BUCKET = "pipeline-dry-run"


def _snakemake(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), *args]
    env = {**os.environ, **(env or {}), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def _planned_paths(plan: str) -> list[str]:
    """Every input/output/log/benchmark path of a dry-run's job listing."""
    paths = []
    for line in plan.splitlines():
        m = re.match(r"\s+(input|output|log|benchmark): (.*)$", line)
        if m:
            paths += [p.split(" (")[0] for p in m.group(2).split(", ")]
    return paths


@pytest.fixture
def tiny(tmp_path):
    shutil.copy(TINY, tmp_path / "config.yaml")
    return tmp_path


@pytest.fixture(scope="module")
def gcs_env(tmp_path_factory):
    """A loopback GCS-API server with one empty bucket; the environment that points at it."""
    log = tmp_path_factory.mktemp("gcs") / "server.log"
    with gcs_server(log) as host:
        # anonymous access to the loopback server; the GCS storage plugin insists on a project
        env = {"STORAGE_EMULATOR_HOST": host,
               "GOOGLE_CLOUD_PROJECT": "dry-run", "SNAKEMAKE_STORAGE_GCS_PROJECT": "dry-run"}
        code = ("from google.cloud import storage; "
                f"storage.Client().create_bucket({BUCKET!r})")
        subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True,
                       capture_output=True, timeout=60)
        yield env


@pytest.mark.cluster
@pytest.mark.parametrize("executor", ["googlebatch", "kubernetes"])
def test_cloud_profile_dry_run_plans_jobs_in_the_bucket(executor, tiny, gcs_env):
    pytest.importorskip(f"snakemake_executor_plugin_{executor}",
                        reason=f"the {executor} executor plugin: pip install -e '.[cluster]'")
    prefix = f"gs://{BUCKET}/{executor}"
    proc = _snakemake("-n", "transfer_models", "--configfile", str(tiny / "config.yaml"),
                      "--profile", str(PROFILES / executor), "--default-storage-prefix", prefix,
                      cwd=tiny, env=gcs_env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"Using profile {PROFILES / executor}" in out
    paths = _planned_paths(proc.stdout)
    assert f"{prefix}/results/transfer/pretrain/identity/params.npz" in paths, out
    assert paths and all(p.startswith(f"{prefix}/results/") for p in paths), paths
    jobs = re.findall(r"^(corpus|transfer_pretrain|transfer_models)\s+(\d+)$", proc.stdout, re.M)
    assert dict(jobs) == {"corpus": "1", "transfer_pretrain": "1", "transfer_models": "1"}, out


@pytest.mark.cluster
def test_a_profile_key_the_executor_plugin_does_not_know_fails(tiny, gcs_env):
    """The dry-run above really parses the profile with the plugin's settings."""
    pytest.importorskip("snakemake_executor_plugin_googlebatch")
    bad = tiny / "profile"
    bad.mkdir()
    text = (PROFILES / "googlebatch" / "profile.yaml").read_text()
    (bad / "profile.yaml").write_text(text.replace("googlebatch-region:", "googlebatch-regoin:"))
    proc = _snakemake("-n", "transfer_models", "--configfile", str(tiny / "config.yaml"),
                      "--profile", str(bad), cwd=tiny, env=gcs_env)
    assert proc.returncode != 0
    assert "googlebatch-regoin" in proc.stdout + proc.stderr


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_shared_file_system_profiles_dry_run(profile, tiny):
    if profile == "slurm":
        pytest.importorskip("snakemake_executor_plugin_slurm",
                            reason="the SLURM executor plugin: pip install -e '.[cluster]'")
    proc = _snakemake("-n", "transfer_models", "--configfile", str(tiny / "config.yaml"),
                      "--profile", str(PROFILES / profile), cwd=tiny)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "results/transfer/pretrain/identity/params.npz" in _planned_paths(proc.stdout), out


@pytest.mark.slow
def test_paper_config_plans_only_its_own_results_dir_beside_laptop_outputs(tmp_path):
    """results_dir: the laptop default writes results/, paper.yaml results_paper/; a laptop
    output that exists is not taken for the paper's."""
    laptop = _snakemake("results/corpora/identity", "--cores", "2", "--configfile",
                        str(REPO / "config.yaml"), cwd=tmp_path)
    assert laptop.returncode == 0, laptop.stdout + laptop.stderr
    assert (tmp_path / "results" / "corpora" / "identity" / "meta.json").is_file()
    plan = _snakemake("-n", "--configfile", str(REPO / "workflow" / "configs" / "paper.yaml"),
                      cwd=tmp_path)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    paths = _planned_paths(plan.stdout)
    assert len(paths) > 500, plan.stdout[-2000:]  # the headline target at paper scale
    outside = [p for p in paths if not p.startswith("results_paper/")]
    assert not outside, outside[:10]
    # the paper's identity corpus is still to be made, although the laptop one exists
    assert "results_paper/corpora/identity" in paths
    assert re.search(r"^corpus\s+21$", plan.stdout, re.M), plan.stdout[-2000:]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_installs_the_cluster_extra_and_make_run_does_not():
    """The README's two commands: only the test command brings the cluster plugins."""
    def installs(target: str) -> list[str]:
        out = subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout
        return [line for line in out.splitlines() if " pip install " in line]

    assert not any("cluster" in line for line in installs("run")), installs("run")
    assert any('".[test,cluster]"' in line for line in installs("test")), installs("test")
