"""Exact single-mask MLM loss (pipeline_lib.evaluate.exact_loss) on a tiny generated grammar."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pipeline_lib.evaluate.exact_loss import (
    ExactLossError,
    bert_masked_logits_fn,
    exact_mlm_loss,
    load_optimal_loss_dir,
    lookup_table_features,
    masked_copies,
)
from pipeline_lib.models.bert import Bert, BertConfig, padded_vocab_size
from pipeline_lib.pcfg import dataset
from pipeline_lib.pcfg.inside import sentence_log_probs
from test_pcfg_support import fast_jax_compilation, pcfg_spec

# 2..8-word sentences of 12 terminals; compact vocabulary: 5 specials + 12 terminals = 17 ids.
SPEC = pcfg_spec(**{
    "generate": {
        "seed": 3,
        "n_roots": 2,
        "n_levels": 3,
        "nonterminals_per_level": 3,
        "n_terminals": 12,
        "binary_rules_per_nonterminal": 3,
        "words_per_bottom_nonterminal": 6,
    },
    "optimal_loss": {"seed": 1, "n_sentences": 20, "renormalize": True},
    "mlm": {"max_seq_length": 12},
    "chart": {"batch_size": 16, "method": "dense"},
})
VOCAB = padded_vocab_size(17)  # 24: the model's softmax covers 7 ids that are never words


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exact_loss")
    with fast_jax_compilation():
        dataset.build_grammar(SPEC, root / "grammar")
        dataset.build_optimal_loss(SPEC, root / "grammar", root / "optimal_loss")
    return {"grammar": root / "grammar", "optimal_loss": root / "optimal_loss"}


@pytest.fixture(scope="module")
def data(built) -> dict:
    return load_optimal_loss_dir(built["optimal_loss"])


def brute_force_conditionals(grammar, words: np.ndarray, t: int) -> np.ndarray:
    """p*(w | x_-t) by putting every terminal w at position t and taking inside probabilities."""
    variants = [
        np.concatenate([words[:t], [w], words[t + 1 :]]) for w in range(grammar.n_terminals)
    ]
    log_p = sentence_log_probs(grammar, variants, batch_size=16)
    p = np.exp(log_p - log_p.max())
    return p / p.sum()


def tiny_bert() -> tuple[nnx.GraphDef, nnx.State, Bert]:
    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_position_embeddings=SPEC["mlm"]["max_seq_length"],
        probe_length=12,
        initializer_range=0.5,
    )
    model = Bert(cfg, rngs=nnx.Rngs(params=4))
    graphdef, state = nnx.split(model)
    return graphdef, state, model


def test_masked_copies_layout() -> None:
    ids = np.array([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]], np.int32)
    mask = (ids != 0).astype(np.int8)
    rows, row_mask, positions, sentence = masked_copies(ids, mask, mask_id=4)
    np.testing.assert_array_equal(rows, [[2, 4, 11, 3, 0], [2, 10, 4, 3, 0], [2, 4, 3, 0, 0]])
    np.testing.assert_array_equal(row_mask, mask[[0, 0, 1]])
    np.testing.assert_array_equal(positions, [1, 2, 1])
    np.testing.assert_array_equal(sentence, [0, 0, 1])
    with pytest.raises(ExactLossError, match="input_mask row 1"):
        masked_copies(ids, np.array([[1, 1, 1, 1, 0], [1, 0, 1, 0, 0]]), 4)
    with pytest.raises(ExactLossError, match="input_mask row 0"):  # [CLS] [SEP] only: no word
        masked_copies(ids, np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]), 4)


# Regression: pcfg leaf_outside once zeroed the gradient through cells whose inside is 0 for
# the observed words, so p*(w | x_-t) was 0 for words only such a span yields.
def test_stored_conditionals_match_brute_force_inside_enumeration(built, data) -> None:
    grammar = dataset.load_grammar_dir(built["grammar"])[0].renormalized()
    lengths = np.diff(data["offsets"])
    worst = 0.0
    for i in range(0, len(lengths), 4):
        words = data["input_ids"][i, 1 : 1 + lengths[i]] - 5  # compact ids: 5 specials first
        for t in range(lengths[i]):
            expected = brute_force_conditionals(grammar, words, t)
            worst = max(
                worst, np.abs(data["conditionals"][data["offsets"][i] + t] - expected).max()
            )
    assert worst <= 1e-6


def test_model_loss_matches_an_independent_loop(built, data) -> None:
    graphdef, state, model = tiny_bert()
    report = exact_mlm_loss(
        bert_masked_logits_fn(graphdef), state, built["optimal_loss"], batch_size=16
    )

    # Independent loop: mask each word by hand, whole-sequence logits, float64 log-softmax,
    # conditionals looked up by (sentence, word), per-sentence sums.
    lengths = np.diff(data["offsets"])
    rows, where = [], []
    for i, n in enumerate(lengths):
        for t in range(1, n + 1):
            row = data["input_ids"][i].copy()
            row[t] = 4  # [MASK] of the compact vocabulary
            rows.append(row)
            where.append((i, t))
    mask = data["input_mask"][[i for i, _ in where]]
    logits = np.asarray(model.mlm_logits(jnp.asarray(np.stack(rows)), jnp.asarray(mask)))
    logits = logits.astype(np.float64)
    sums = np.zeros(len(lengths))
    for (i, t), row_logits in zip(where, logits):
        top = row_logits[t].max()
        log_q = row_logits[t] - top - np.log(np.exp(row_logits[t] - top).sum())
        p = np.asarray(data["conditionals"][data["offsets"][i] + t - 1], np.float64)
        sums[i] -= (p * log_q[5:17]).sum()  # terminals are ids 5..16
    expected = sums.sum() / lengths.sum()
    assert report["model_loss"] == pytest.approx(expected, rel=1e-5)
    assert report["num_tokens"] == lengths.sum()
    assert report["num_sentences"] == SPEC["optimal_loss"]["n_sentences"]
    assert report["gap"] == pytest.approx(report["model_loss"] - report["optimal_loss"], abs=1e-12)
    assert report["gap"] > 0.1  # a random model is far from optimal
    residuals = sums - expected * lengths
    stderr = np.sqrt(residuals.var(ddof=1) * len(lengths)) / lengths.sum()
    assert report["stderr"] == pytest.approx(stderr, rel=1e-4)
    assert 0 < report["gap_stderr"]

    # Batch size and the padding of the last batch change nothing (~100 rows: batch 7 pads
    # the last batch, batch 1000 runs all rows at once).
    for batch_size in (7, 1000):
        again = exact_mlm_loss(
            bert_masked_logits_fn(graphdef), state, built["optimal_loss"], batch_size=batch_size
        )
        assert again["model_loss"] == pytest.approx(report["model_loss"], rel=1e-6)


def test_masked_rows_are_those_of_the_conditionals(data) -> None:
    ids, _, positions, sentence = masked_copies(
        data["input_ids"], data["input_mask"], data["mask_id"]
    )
    assert len(ids) == len(data["conditionals"]) == data["offsets"][-1]
    assert data["mask_id"] == 4 and (ids[np.arange(len(ids)), positions] == 4).all()
    np.testing.assert_array_equal(data["offsets"][sentence] + positions - 1, np.arange(len(ids)))


def lookup_model(data: dict, off_terminal: float):
    """A perfect "model": it recognises the masked input and returns log p* at the terminals."""
    ids, _, _, _ = masked_copies(data["input_ids"], data["input_mask"], data["mask_id"])
    log_p = np.full((len(ids), VOCAB), off_terminal, np.float32)
    with np.errstate(divide="ignore"):
        log_p[:, data["vocab_ids"]] = np.log(np.asarray(data["conditionals"]))
    params = {"keys": jnp.asarray(ids), "log_p": jnp.asarray(log_p)}

    def logits_fn(params, input_ids, input_mask, positions):
        match = (input_ids[:, None, :] == params["keys"][None, :, :]).all(axis=-1)
        return params["log_p"][jnp.argmax(match, axis=1)]

    return logits_fn, params


@pytest.mark.parametrize("off_terminal", [-np.inf, -1e9])
def test_perfect_model_scores_the_optimal_loss(built, data, off_terminal: float) -> None:
    assert (np.asarray(data["conditionals"]) == 0).any()  # exercises 0 log 0 terms
    logits_fn, params = lookup_model(data, off_terminal)
    report = exact_mlm_loss(logits_fn, params, built["optimal_loss"], batch_size=32)
    metrics = json.loads((built["optimal_loss"] / "metrics.json").read_text())
    assert report["optimal_loss"] == metrics["expected_cross_entropy_per_token"]
    assert report["model_loss"] == pytest.approx(report["optimal_loss"], abs=1e-5)
    assert abs(report["gap"]) <= 1e-5 and report["gap_stderr"] <= 1e-5


def test_uniform_model_scores_log_vocabulary_size(built) -> None:
    uniform = lambda params, ids, mask, positions: jnp.zeros((ids.shape[0], VOCAB)) + params
    report = exact_mlm_loss(uniform, jnp.float32(3.0), built["optimal_loss"], batch_size=64)
    assert report["model_loss"] == pytest.approx(math.log(VOCAB), abs=1e-6)
    assert report["stderr"] == pytest.approx(0.0, abs=1e-6)


def test_zero_probability_on_a_possible_word_is_an_infinite_loss(built) -> None:
    # All mass on [PAD]: every terminal has log q = -inf, the loss is inf (not dropped, not nan).
    pad_only = lambda params, ids, mask, positions: jnp.where(
        jnp.arange(VOCAB) == 0, 0.0, -jnp.inf
    ) * jnp.ones((ids.shape[0], 1))
    report = exact_mlm_loss(pad_only, None, built["optimal_loss"], batch_size=64)
    assert report["model_loss"] == math.inf and math.isnan(report["stderr"])


def test_model_outputs_that_do_not_fit_the_data_are_refused(built) -> None:
    small_vocab = lambda params, ids, mask, positions: jnp.zeros((ids.shape[0], 10))
    with pytest.raises(ExactLossError, match="returns 10 vocabulary entries.*reaches id 16"):
        exact_mlm_loss(small_vocab, None, built["optimal_loss"], batch_size=8)
    per_position = lambda params, ids, mask, positions: jnp.zeros(ids.shape + (VOCAB,))
    with pytest.raises(ExactLossError, match=r"logits \[rows, vocab\].*shape \(8, 12, 24\)"):
        exact_mlm_loss(per_position, None, built["optimal_loss"], batch_size=8)
    with pytest.raises(ExactLossError, match="batch_size"):
        exact_mlm_loss(small_vocab, None, built["optimal_loss"], batch_size=0)


def test_loader_refuses_other_directories_and_inconsistent_files(built, tmp_path: Path) -> None:
    with pytest.raises(ExactLossError, match="kind 'pcfg_grammar'"):
        load_optimal_loss_dir(built["grammar"])
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in built["optimal_loss"].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    offsets = np.load(broken / "offsets.npy")
    offsets[1] += 1
    np.save(broken / "offsets.npy", offsets)
    with pytest.raises(ExactLossError, match="disagree with offsets.npy"):
        load_optimal_loss_dir(broken)


def test_lookup_table_features_layout() -> None:
    conditionals = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)  # 5 words, 3 terminals
    offsets = np.array([0, 2, 5])
    features = lookup_table_features(conditionals, offsets, max_len=4)
    assert features.shape == (2, 12) and features.dtype == np.float32
    np.testing.assert_array_equal(features[0], [0, 1, 2, 3, 4, 5] + [0] * 6)
    np.testing.assert_array_equal(features[1], list(range(6, 15)) + [0] * 3)
    with pytest.raises(ExactLossError, match="sentence 1 has 3 words, more than max_len 2"):
        lookup_table_features(conditionals, offsets, max_len=2)
    with pytest.raises(ExactLossError, match="last offset 4 != 5"):
        lookup_table_features(conditionals, np.array([0, 2, 4]), max_len=4)


def test_lookup_table_features_of_the_evaluation_set(data) -> None:
    features = lookup_table_features(data["conditionals"], data["offsets"], max_len=10)
    per_position = features.reshape(len(features), 10, len(data["vocab_ids"]))
    lengths = np.diff(data["offsets"])
    # Each real position is a distribution; every padding position is zero.
    real = np.arange(10)[None, :] < lengths[:, None]
    np.testing.assert_allclose(per_position.sum(-1), real.astype(float), atol=1e-5)
