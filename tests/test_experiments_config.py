"""Config of the experiment stages (downstream, transfer, implicit_bias, primer) and the glue that
reads it: one clear message per mistake, per-task overrides, run seeds, table layouts."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from pipeline_lib.experiments.transfer import finetune
from pipeline_lib.experiments.transfer import tables as wu_tables
from pipeline_lib import report, seeds
from pipeline_lib.config import ConfigError, validate_config

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "config.yaml").read_text())


def _with(path: str, value):
    cfg = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return cfg


@pytest.mark.parametrize(
    "path,value,fragments",
    [
        ("transfer.finetune.tasks", ["pcfg_A", "squad"], ["transfer.finetune.tasks[1]", "'squad'", "pcfg_A"]),
        ("downstream.squad", {"adapter": "squad"}, ["downstream.squad.source", "squad"]),
        ("downstream.x", {"adapter": "nope", "source": "d"}, ["downstream.x.adapter", "'nope'",
                                                             "cnndm_10k"]),
        ("transfer.finetune.overrides", {"pcfg_A": {"stepz": 3}}, ["transfer.finetune.overrides.pcfg_A.stepz",
                                                         "steps"]),
        ("transfer.finetune.overrides", {"mtop": {"steps": 3}}, ["transfer.finetune.overrides.mtop", "pcfg_A"]),
        ("transfer.tables.table1.rows", ["lime"], ["transfer.tables.table1.rows", "'lime'", "identity, set"]),
        ("transfer.tables.table2.schemes", ["per_param"], ["transfer.tables.table2.schemes[0]", "'per_param'",
                                                  "per_param_grouping___init_mean_std"]),
        ("implicit_bias.checkpoints", [100, 5000], ["implicit_bias.checkpoints", "5000", "implicit_bias.steps"]),
        ("implicit_bias.trace.enlarge_to", "huge", ["implicit_bias.trace.enlarge_to", "'huge'", "small, base"]),
        ("primer.optimizer", {"schedule": "linear", "warmup_steps": 500},
         ["primer.optimizer.warmup_steps", "500", "400"]),
        ("transfer.finetune.beam_size", 0, ["transfer.finetune.beam_size", "minimum"]),
    ],
)
def test_bad_experiment_values_name_the_key(path, value, fragments):
    with pytest.raises(ConfigError) as e:
        validate_config(_with(path, value))
    msg = str(e.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_partial_specs_check_only_the_sections_they_carry():
    # what the downstream_data rule passes: no finetune/tables/corpora sections
    spec = {"seed": 0, "vocab": BASE["vocab"], "downstream": {"pcfg_B": {"adapter": "pcfg_B"}},
            "corpora": {"nonsense_summary": {"vocab_size": 200}}}
    cfg = validate_config(spec)
    assert cfg["transfer"]["finetune"]["tasks"] == ["pcfg_A", "pcfg_B", "pcfg_C"]  # defaults, unchecked


def test_run_spec_applies_per_task_overrides():
    cfg = validate_config(_with("transfer.finetune.overrides", {
        "pcfg_B": {"steps": 7, "optimizer": {"learning_rate": 0.5}}}))
    a, b = finetune.run_spec(cfg, "pcfg_A"), finetune.run_spec(cfg, "pcfg_B")
    assert a["steps"] == BASE["transfer"]["finetune"]["steps"] and b["steps"] == 7
    assert b["optimizer"]["learning_rate"] == 0.5
    assert b["optimizer"]["name"] == a["optimizer"]["name"] == "adafactor"
    assert set(a) == set(finetune.OVERRIDABLE)


def test_run_seeds_are_distinct_and_deterministic():
    def run_seeds(root, seed):
        return seeds.run_seeds(root, seed, "finetune", finetune.FINETUNE_STREAMS)

    s = run_seeds(0, 1)
    assert s == run_seeds(0, 1)
    assert len(set(s.values())) == 4
    assert s != run_seeds(0, 2) and s != run_seeds(1, 1)


def _record(source, init, task, seed, score):
    return {"source": source, "init": init, "downstream": task, "seed": seed, "score": score}


def test_table2_rows_and_benefit_against_the_sources_pretrained_row():
    cfg = validate_config(copy.deepcopy(BASE))
    tasks = cfg["transfer"]["finetune"]["tasks"]
    records = []
    for i, task in enumerate(tasks):
        records += [
            _record("none", "random", task, 0, 10.0),
            _record("set", "pretrained", task, 0, 30.0),
            _record("set", "per_param_grouping___init_mean_std", task, 0, 25.0 + i),
        ]
    table = wu_tables.build_table("table2", cfg, records)
    md = report.to_markdown(table, "t")
    assert "| Random init |" in md and "| set: Per Param Mean/SD |" in md
    row = [line for line in md.splitlines() if "Per Param Mean/SD" in line][0]
    # one seed: average of 25, 26 (the two default tasks) = 25.5 -> (25.5 - 10) / (30 - 10)
    assert len(tasks) == 2 and row.rstrip("|").split("|")[-1].strip() == "77.5"


def test_table1_reference_row_must_exist():
    cfg = validate_config(_with("transfer.tables.table1.reference_row", "identity"))
    records = [_record("none", "random", t, 0, 1.0) for t in cfg["transfer"]["finetune"]["tasks"]]
    records += [_record("set", "pretrained", t, 0, 2.0) for t in cfg["transfer"]["finetune"]["tasks"]]
    with pytest.raises(ValueError, match="reference_row.*'identity'"):
        wu_tables.build_table("table1", cfg, records)


def test_table3_labels_ln_values():
    cfg = validate_config(copy.deepcopy(BASE))
    records = [_record("none", "preattn_ln_0.4", t, 0, 3.0) for t in cfg["transfer"]["finetune"]["tasks"]]
    records += [_record("none", "random", t, 0, 1.0) for t in cfg["transfer"]["finetune"]["tasks"]]
    md = report.to_markdown(wu_tables.build_table("table3", cfg, records), "t")
    assert "Pre-attn LN = 0.4" in md and "% of benefit" not in md


def test_shipped_paper_config_plans_every_table_run():
    cfg = validate_config(yaml.safe_load((REPO / "workflow/configs/paper.yaml").read_text()))
    assert len(cfg["transfer"]["finetune"]["tasks"]) == 6 and len(cfg["transfer"]["tables"]["table2"]["schemes"]) == 9
    assert cfg["transfer"]["finetune"]["overrides"]["squad"]["pack"] is True
    json.dumps(cfg)  # specs are passed as JSON


def test_an_unconverged_source_is_named_loudly_and_findings_are_computed():
    from pipeline_lib.experiments.transfer.findings import source_notes, table_findings

    notes, warnings = source_notes(
        [{"task": "set", "best": {"step": 200, "metrics": {"accuracy": 0.08}}},
         {"task": "identity", "best": {"step": 500, "metrics": {"accuracy": 0.976}}}], 0.9)
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: source set: 8.0 %")
    assert notes == ["source identity: 97.6 % validation token accuracy (step 500), "
                     "threshold 90 %"]
    cfg = validate_config(copy.deepcopy(BASE))
    tasks = cfg["transfer"]["finetune"]["tasks"]
    records = []
    for seed in (0, 1, 2):
        for task in tasks:
            records += [
                _record("none", "random", task, seed, 1.0 + seed),
                _record("identity", "pretrained", task, seed, 40.0 + seed),
                _record("identity", "per_param_grouping___init_mean_std", task, seed,
                        35.0 + seed),
            ]
    cfg["transfer"]["tables"]["table2"] = {"sources": ["identity"],
                                          "schemes": ["per_param_grouping___init_mean_std"]}
    table = wu_tables.build_table("table2", cfg, records)
    found = {f.claim: f for f in table_findings("table2", table)}
    assert found["identity: Pretrained beats Random init (Average)"].verdict == "held"
    share = found["identity: Per Param Mean/SD recovers >= 70 % of the benefit"]
    assert share.measured == pytest.approx(100 * 34 / 39) and share.verdict == "held"
