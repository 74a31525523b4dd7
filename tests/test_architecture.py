"""The package's layering, enforced: import-linter contracts (pyproject.toml), a planted upward
import that must fail them, module sizes, and one conda environment setting for every rule."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# Modules allowed above ~450 lines because each is one concept that reads best in one file.
LARGE_MODULES = {
    "pipeline_lib/models/t5.py": "T5 v1.0/v1.1 and its KV cache: one model",
    "pipeline_lib/models/bert.py": "BERT pre/post-LN with its heads: one model",
    "pipeline_lib/models/layers.py": "the shared layers (attention, norms, dropout, relpos)",
    "pipeline_lib/models/decoder_lm.py": "the decoder LM and its three variants: one model",
    "pipeline_lib/pcfg/dataset.py": "the PCFG data stage: four products with one meta format",
    "pipeline_lib/pcfg/fastchart.py": "the vectorised inside/outside chart: one algorithm",
    "pipeline_lib/data/nonsense.py": "Krishna et al.'s 16 nonsense subtasks: one generator",
    "pipeline_lib/data/downstream_adapters.py": "the downstream readers: one registry",
    "pipeline_lib/evaluate/hessian.py": "Hutchinson and Fisher traces with their shared driver",
    "pipeline_lib/experiments/transfer/init_schemes.py": "the nine init schemes: one catalogue",
}


def _lint(env_path: Path | None = None) -> subprocess.CompletedProcess:
    env = None
    if env_path is not None:
        import os

        env = {**os.environ, "PYTHONPATH": str(env_path)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(REPO / "pyproject.toml")],
        cwd=env_path or REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def test_import_contracts_are_kept():
    result = _lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize(
    "module,planted",
    [
        ("pipeline_lib/models/layers.py", "import pipeline_lib.config  # planted upward import"),
        ("pipeline_lib/experiments/primer/pretrain.py",
         "import pipeline_lib.experiments.transfer.tables  # planted sideways import"),
    ],
)
def test_a_planted_upward_or_sideways_import_breaks_the_contracts(tmp_path, module, planted):
    shutil.copytree(REPO / "pipeline_lib", tmp_path / "pipeline_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / module
    target.write_text(target.read_text() + "\n" + planted + "\n")
    result = _lint(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout or "broken" in result.stdout, result.stdout


def test_no_module_is_large_without_a_reason():
    too_large = {}
    for path in sorted((REPO / "pipeline_lib").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        lines = len(path.read_text().splitlines())
        if lines > 470 and rel not in LARGE_MODULES:
            too_large[rel] = lines
    assert not too_large, f"split these modules or name their one concept: {too_large}"


def test_no_stage_module_sits_loose_at_the_top_of_the_package():
    top = sorted(p.name for p in (REPO / "pipeline_lib").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "cli.py", "config.py", "errors.py", "files.py",
                   "remote.py", "seeds.py"], top


def test_every_rule_takes_its_conda_env_from_the_config():
    rules = sorted((REPO / "workflow" / "rules").glob("*.smk"))
    for rule_file in rules:
        text = rule_file.read_text()
        assert "envs/cpu.yaml" not in text, f"{rule_file.name} hard-codes an environment"
        for block in text.split("\nrule ")[1:]:
            if "shell:" in block:
                assert "conda:\n        CONDA_ENV" in block, (rule_file.name, block[:60])
    for env in ("cpu", "cuda", "tpu"):
        assert (REPO / "envs" / f"{env}.yaml").is_file()
