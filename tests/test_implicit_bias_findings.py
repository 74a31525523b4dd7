"""Liu et al. laptop regime: single-mask instances, the loss-matched findings and pairs, the
table files (synthetic per-checkpoint records with known answers; no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline_lib.config import load_config
from pipeline_lib.experiments.implicit_bias import findings as fnd
from pipeline_lib.experiments.implicit_bias.masking import (
    clean_input_ids,
    single_mask_instances,
)

REPO = Path(__file__).resolve().parents[1]
CLS, SEP, MASK = 2, 3, 4


def _bert_instances(rng, n=400, width=12):
    """BERT-style instances: [CLS] w.. [SEP] with 1-2 positions replaced (mask or random)."""
    ids = np.zeros((n, width), np.int32)
    mask = np.zeros((n, width), np.int8)
    pos = np.zeros((n, 2), np.int32)
    tgt = np.zeros((n, 2), np.int32)
    w = np.zeros((n, 2), np.float32)
    clean = np.zeros_like(ids)
    for i in range(n):
        length = rng.integers(2, width - 1)
        words = rng.integers(5, 30, length)
        row = np.concatenate([[CLS], words, [SEP]])
        ids[i, : len(row)] = clean[i, : len(row)] = row
        mask[i, : len(row)] = 1
        k = 1 + (length > 4)
        chosen = rng.choice(np.arange(1, length + 1), k, replace=False)
        for j, p in enumerate(chosen):
            pos[i, j], tgt[i, j], w[i, j] = p, row[p], 1.0
            ids[i, p] = MASK if rng.random() < 0.8 else rng.integers(5, 30)
    arrays = {"input_ids": ids, "input_mask": mask, "masked_lm_positions": pos,
              "masked_lm_ids": tgt, "masked_lm_weights": w}
    return arrays, clean


def test_single_mask_instances_mask_one_word_and_restore_the_rest():
    arrays, clean = _bert_instances(np.random.default_rng(0))
    assert np.array_equal(clean_input_ids(arrays), clean)
    out = single_mask_instances(arrays, MASK, seed=7)
    rows = np.arange(len(clean))
    pos = out["masked_lm_positions"][:, 0]
    lengths = arrays["input_mask"].sum(1) - 2
    assert ((pos >= 1) & (pos <= lengths)).all()  # never [CLS] / [SEP] / padding
    assert np.array_equal(out["masked_lm_ids"][:, 0], clean[rows, pos])
    assert (out["input_ids"][rows, pos] == MASK).all()
    restored = out["input_ids"].copy()
    restored[rows, pos] = clean[rows, pos]
    assert np.array_equal(restored, clean)  # exactly one position differs from the sentence
    assert out["masked_lm_weights"].shape == (len(clean), 1) and (out["masked_lm_weights"] == 1).all()
    again = single_mask_instances(arrays, MASK, seed=7)
    assert all(np.array_equal(out[k], again[k]) for k in out)
    other = single_mask_instances(arrays, MASK, seed=8)
    assert not np.array_equal(other["masked_lm_positions"], out["masked_lm_positions"])
    # uniform over positions: in sentences of 10 words, each position about 1/10 of the time
    many = single_mask_instances(
        {k: np.repeat(v[lengths == 10][:1], 5000, axis=0) for k, v in arrays.items()}, MASK, 1)
    counts = np.bincount(many["masked_lm_positions"][:, 0], minlength=12)[1:11]
    assert counts.min() > 400 and counts.max() < 600


@pytest.fixture(scope="module")
def cfg():
    c = load_config(REPO / "config.yaml")
    # keys in the sorted order a rule's spec has: the findings order sizes by width, not key
    c["implicit_bias"]["sizes"] = {"base": c["implicit_bias"]["sizes"]["base"],
                                   "small": c["implicit_bias"]["sizes"]["small"]}
    c["implicit_bias"]["optimizers"] = {"adamw": c["implicit_bias"]["optimizers"]["adamw"]}
    c["implicit_bias"]["checkpoints"] = [100, 200, 300]
    c["implicit_bias"]["trace"]["estimators"] = ["fisher"]
    c["implicit_bias"]["matched"] = {"tolerance": 0.02, "max_gap": 0.05}
    c["pcfg"]["downstream"]["tasks"] = ["A", "B"]
    return c


def _record(size, step, seed, loss, trace, probe):
    r = {"size": size, "optimizer": "adamw", "seed": seed, "step": step, "model_loss": loss,
         "optimal_loss": 3.0, "gap": loss - 3.0, "trace_fisher": trace}
    for t in ("A", "B"):
        r[f"probe_{t}"] = {"mean": probe, "std": None, "values": [probe]}
    return r


def _records(flat_is_better: bool, loss_of=lambda size, step: 3.01):
    """Traces fall with step and width; probe accuracy follows (or opposes) flatness."""
    out = []
    for seed in (0, 1, 2):
        for size, base in (("small", 30.0), ("base", 20.0)):
            for step in (100, 200, 300):
                trace = base - step / 50 + 0.3 * seed
                probe = (60 - trace if flat_is_better else 20 + trace) + 0.1 * seed
                out.append(_record(size, step, seed, loss_of(size, step), trace, probe))
    return out


def test_flatter_transfers_better_at_matched_loss_is_held(cfg):
    flat = fnd.flat_records(cfg, _records(flat_is_better=True))
    found = {f.claim: f for f in fnd.implicit_bias_findings(cfg, flat)}
    rho = found["rho(tr(H), mean probe accuracy) < 0 at matched loss"]
    assert rho.verdict == "held" and rho.measured == pytest.approx(-1.0) and rho.n == 18
    assert "18 of 18 points" in rho.note and "3 seeds" in rho.interval
    longer = found["small/adamw: tr(H) falls from step 100 to 300 (both in the window)"]
    assert longer.verdict == "held" and "loss falls 0.000 nats" in longer.note
    assert found["adamw, step 300: base (embedded) is flatter than small"].verdict == "held"
    assert found["adamw, step 300: base probes better than small"].verdict == "held"
    assert "both in the matched window" in found["adamw, step 300: base probes better than small"].note


def test_the_opposite_relation_is_not_held(cfg):
    flat = fnd.flat_records(cfg, _records(flat_is_better=False))
    found = {f.claim: f for f in fnd.implicit_bias_findings(cfg, flat)}
    assert found["rho(tr(H), mean probe accuracy) < 0 at matched loss"].verdict == "not held"
    assert found["adamw, step 300: base probes better than small"].verdict == "not held"


def test_only_loss_matched_checkpoints_enter_the_correlation(cfg):
    # early checkpoints 0.3 nats higher: out of the window, whatever their trace and accuracy
    flat = fnd.flat_records(cfg, _records(True, lambda size, step: 3.3 if step == 100 else 3.01))
    matched = fnd.matched_records(cfg, flat)
    assert {r["step"] for r in matched} == {200, 300} and len(matched) == 12
    found = fnd.implicit_bias_findings(cfg, flat)
    assert found[0].n == 12 and "12 of 18 points" in found[0].note
    unmatched = fnd.flat_records(cfg, _records(True, lambda size, step: 3.01 + (size == "small")))
    wider = {f.claim: f for f in fnd.implicit_bias_findings(cfg, unmatched)}
    assert "NOT loss-matched" in wider["adamw, step 300: base probes better than small"].note
    notes = fnd.convergence_notes(cfg, flat)
    assert notes[0].startswith("NOT CONVERGED: 6 of 18")
    assert fnd.convergence_notes(cfg, fnd.flat_records(cfg, _records(True)))[0].startswith("Every")


def test_pairs_put_the_flatter_group_first(cfg):
    flat = fnd.flat_records(cfg, _records(True, lambda size, step: 3.3 if step == 100 else 3.01))
    pairs = fnd.pair_records(cfg, flat)
    rows = sorted({p["row"] for p in pairs})
    assert len(rows) == 6  # C(4, 2) groups of (size, step 200/300)
    assert "base/adamw/300 vs small/adamw/200" in rows  # the flattest vs the sharpest
    diffs = [p["value"] for p in pairs if p["column"] == "probe A - B (pp)"]
    assert len(diffs) == 18 and min(diffs) > 0


def test_tables_write_the_pairs_and_findings(cfg, tmp_path):
    from pipeline_lib.experiments.implicit_bias.tables import write_implicit_bias_tables

    write_implicit_bias_tables(cfg, _records(True), None, tmp_path / "implicit_bias_")
    doc = json.loads((tmp_path / "implicit_bias.findings.json").read_text())
    assert doc["findings"][0]["verdict"] == "held" and doc["matched_tolerance"] == 0.02
    md = (tmp_path / "implicit_bias_matched_pairs.md").read_text()
    assert "base/adamw/300 vs small/adamw/100" in md and "paper: < 0" in md
    assert "Finding: rho(tr(H)" in (tmp_path / "implicit_bias_checkpoints.md").read_text()
