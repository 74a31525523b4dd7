"""Config validation: one clear message naming the key path and what is allowed."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_lib.config import ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "config.yaml").read_text())


def _with(path: str, value):
    cfg = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[last] = value
    return cfg


def test_shipped_configs_are_valid():
    for path in [REPO / "config.yaml", REPO / "workflow/configs/paper.yaml"]:
        cfg = load_config(path)
        assert cfg["corpora"]["tasks"]


def test_defaults_are_filled_in():
    cfg = copy.deepcopy(BASE)
    del cfg["corpora"]["block_size"]
    assert validate_config(cfg)["corpora"]["block_size"] == 65536


@pytest.mark.parametrize(
    "path,value,fragments",
    [
        ("corpora.tasks", [], ["corpora.tasks", "should be non-empty"]),
        ("corpora.tasks", ["identity", "copy"], ["corpora.tasks[1]", "'copy'", "identity",
                                                 "set2_minus_set1"]),
        ("corpora.length_range", [50, 10], ["corpora.length_range", "50", "above", "10"]),
        ("corpora.length_range", [10, 15], ["corpora.length_range", "2*min+1"]),
        ("corpora.train_examples", "many", ["corpora.train_examples", "'many'", "integer"]),
        ("corpora.train_examples", 0, ["corpora.train_examples", "minimum"]),
        ("corpora.generate_factor", 1.0, ["corpora.generate_factor", ">="]),
        ("vocab.layout", "t5", ["vocab.layout", "'t5'", "laptop, paper"]),
        ("vocab.data_vocab_size", 10, ["vocab.data_vocab_size", ">= 20"]),
        ("corpora.lime.num_chars_range", [5, 3], ["corpora.lime.num_chars_range", "above"]),
        ("corpora.nesting_language.num_pairs", 400, ["vocab.data_vocab_size", ">= 800"]),
        ("corpora.nesting_language.base_distribution", "pareto",
         ["corpora.nesting_language.base_distribution", "zipf, uniform"]),
        ("corpora.colour", "blue", ["corpora", "unknown key(s) colour", "allowed keys",
                                    "train_examples"]),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(path, value, fragments):
    with pytest.raises(ConfigError) as e:
        validate_config(_with(path, value))
    msg = str(e.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_paper_layout_needs_spm_for_numerals():
    cfg = _with("vocab", {"layout": "paper"})
    with pytest.raises(ConfigError, match=r"vocab\.spm_model.*length, count, nonsense_summary"):
        validate_config(cfg)
    cfg["corpora"]["tasks"] = ["identity", "set"]
    validate_config(cfg)  # no numerals or text needed


def test_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\nvocab:\n  layout: [laptop\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+"):
        load_config(bad)


def test_cli_reports_config_errors_without_traceback(tmp_path):
    cfg = _with("corpora.length_range", [50, 10])
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline_lib", "corpus", "--config", str(path), "--task",
         "identity", "--out", str(out)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "corpora.length_range" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
