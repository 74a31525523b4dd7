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
        ("vocab.data_vocab_size", 10, ["vocab.data_vocab_size", ">= 24"]),
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
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: not valid YAML"):
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


# --- hostile input (each a finding of the bad-input issue) --------------------------------------


@pytest.mark.parametrize(
    "text,fragments",
    [
        ("1: a\n", ["1: the key 1 is of type int", "quote it"]),
        ("seed: 0\nvocab: {layout: laptop}\ncorpora:\n  7: 1\n", ["corpora.7", "not a string"]),
        ("seed: .nan\nvocab: {layout: laptop}\n", ["seed: nan is not a finite number"]),
        ("seed: 0\nvocab: {layout: laptop}\ncorpora: {generate_factor: .inf}\n",
         ["corpora.generate_factor: inf is not a finite number"]),
        ("seed: 0\nvocab: {layout: laptop}\ntransfer:\n  finetune:\n    optimizer:\n"
         "      learning_rate: .nan\n", ["transfer.finetune.optimizer.learning_rate", "finite"]),
        ("seed: 1000000000000000000000000000000\nvocab: {layout: laptop}\n",
         ["seed: 1000000000000000000000000000000 is out of range", "2147483647"]),
        ("seed: 0\nvocab: {layout: laptop}\ntransfer:\n  pretrain: {batch_size: 4.0}\n",
         ["transfer.pretrain.batch_size: 4.0 has the wrong type; expected integer"]),
        ("seed: 0\nvocab: {layout: laptop}\nseed: 1\n",
         [":3: not valid YAML: duplicate key 'seed' (first given on line 1)"]),
        ("seed: 0\nvocab: {layout: laptop}\ncorpora:\n  tasks: [a, b\n  x: 'open\n",
         [": not valid YAML"]),
    ],
)
def test_hostile_config_files_give_one_message_with_the_key_or_line(tmp_path, text, fragments):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400
    for fragment in fragments:
        assert fragment in msg, msg


def test_yaml_errors_point_at_the_line_where_the_problem_started(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 0\n" + "vocab: {layout: laptop}\n" * 0 + "a: 1\n" * 6 + "b: 'open\n"
                    + "c: 2\n" * 5)
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+: not valid YAML.*on line 8"):
        load_config(path)


@pytest.mark.parametrize("data,line", [(b"seed: 0\nx: \x00\n", 2), (b"seed: 0\n\xff\xfe\x00", 2)])
def test_binary_or_non_utf8_files_are_named_with_their_line(tmp_path, data, line):
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=rf"c\.yaml:{line}: "):
        load_config(path)


@pytest.mark.parametrize(
    "path,value,fragments",
    [
        ("transfer.pretrain.model.overrides", {"d_modle": 64},
         ["transfer.pretrain.model.overrides", "d_modle"]),
        ("primer.model.overrides", {"num_heads": 0}, ["primer.model.overrides", "num_heads"]),
        ("implicit_bias.sizes.small", {"preset": "bert_giant"}, ["implicit_bias.sizes", "preset"]),
        ("implicit_bias.sizes.small", {"preset": "bert_laptop", "overrides": {"hidden_size": -64}},
         ["implicit_bias.sizes.small", "hidden_size"]),
        ("implicit_bias.sizes.small",
         {"preset": "bert_laptop", "overrides": {"hidden_size": 48, "num_heads": 1,
                                                 "intermediate_size": 192}},
         ["implicit_bias.sizes.small: cannot be embedded exactly", "enlarge_to"]),
    ],
)
def test_model_overrides_are_checked_before_any_job(path, value, fragments):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[last] = value
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    msg = str(e.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg
