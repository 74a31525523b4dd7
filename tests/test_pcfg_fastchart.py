"""The length-pruned fast charts agree with the reference charts of :mod:`chart`."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_pcfg_support import ambiguous_grammar, fast_jax_compilation

from pipeline_lib.pcfg import chart, fastchart
from pipeline_lib.pcfg.batching import UNKNOWN_WORD_ID, iterate_batches, iterate_length_buckets
from pipeline_lib.pcfg.generate import GrammarShape, generate_grammar
from pipeline_lib.pcfg.grammar_io import parse_nltk_grammar
from pipeline_lib.pcfg.sample import sample_sentences

# Levelled like the released grammar (so pruning removes most terms), plus a
# recursive grammar with unary chains (where nothing can be pruned).
LEVELLED = generate_grammar(GrammarShape(n_roots=3, n_levels=3, nonterminals_per_level=3, n_terminals=12,
                                         binary_rules_per_nonterminal=4, words_per_bottom_nonterminal=6), seed=4)
AMBIGUOUS = ambiguous_grammar()


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    with fast_jax_compilation():
        yield


def batch_of(grammar, n_pad, seed):
    sentences = [s for s in sample_sentences(grammar, 400, seed=seed, length_limit=n_pad + 1) if len(s) > n_pad - 4][:6]
    sentences.append(np.array([0] * n_pad, dtype=np.int32))  # often impossible: exact zeros
    unknown = sentences[0].copy()
    unknown[0] = UNKNOWN_WORD_ID
    sentences.append(unknown)
    return next(iterate_batches(sentences, len(sentences), n_pad))


# (grammar, padded length): the recursive grammar has no prunable width, so it is kept short.
CASES = [(LEVELLED, 8), (AMBIGUOUS, 5)]


@pytest.mark.parametrize(("grammar", "n"), CASES, ids=["levelled", "ambiguous"])
@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_fast_inside_and_outside_match_the_reference_chart(grammar, n: int, method: str) -> None:
    batch = batch_of(grammar, n, seed=1)
    tensors = chart.chart_tensors(grammar)
    ref_log_z, ref_chart = (np.asarray(x) for x in chart.inside_log_chart(tensors, batch.ids, batch.lengths))
    log_z, log_chart = (np.asarray(x) for x in fastchart.compiled(grammar, n, "log_chart", method)(batch.ids, batch.lengths))
    assert np.array_equal(np.isneginf(log_chart), np.isneginf(ref_chart))
    assert np.isneginf(ref_log_z).any() and np.isfinite(ref_log_z).any()
    finite = np.isfinite(ref_chart)
    np.testing.assert_allclose(log_chart[finite], ref_chart[finite], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(np.isneginf(log_z), np.isneginf(ref_log_z))
    np.testing.assert_allclose(log_z[np.isfinite(log_z)], ref_log_z[np.isfinite(ref_log_z)], rtol=1e-5)
    _, prefix = (np.asarray(x) for x in fastchart.compiled(grammar, n, "prefix", method)(batch.ids, batch.lengths))
    np.testing.assert_array_equal(prefix, log_chart[:, 0])

    _, ref_outside = (np.asarray(x) for x in chart.leaf_outside(tensors, batch.ids, batch.lengths))
    _, outside = (np.asarray(x) for x in fastchart.compiled(grammar, n, "leaf_outside", method)(batch.ids, batch.lengths))
    assert not np.isnan(outside).any()
    scale = np.abs(ref_outside).max(axis=-1, keepdims=True) + 1e-30
    np.testing.assert_allclose(outside / scale, ref_outside / scale, atol=2e-5)


@pytest.mark.parametrize(("grammar", "n"), CASES, ids=["levelled", "ambiguous"])
def test_fast_viterbi_matches_the_reference_chart(grammar, n: int) -> None:
    batch = batch_of(grammar, n, seed=2)
    reference = chart.viterbi_chart(chart.chart_tensors(grammar), batch.ids)
    rows = np.arange(len(batch.lengths))
    expected = np.asarray(reference.best_log_prob)[rows, 0, batch.lengths - 1, grammar.start]
    best, terms, sources = (np.asarray(x) for x in fastchart.compiled(grammar, n, "viterbi")(batch.ids, batch.lengths))
    assert terms.shape[0] == sources.shape[0] == len(rows)
    np.testing.assert_array_equal(np.isneginf(best), np.isneginf(expected))
    np.testing.assert_allclose(best[np.isfinite(best)], expected[np.isfinite(expected)], rtol=1e-6)


def test_plan_prunes_exactly_the_impossible_widths() -> None:
    # S -> A B, A -> 'a', B -> 'b' | B B: A only ever spans one word.
    grammar = parse_nltk_grammar("S -> A B [1.0]\nA -> 'a' [1.0]\nB -> 'b' [0.6] | B B [0.4]\n")
    plan = fastchart.chart_plan(grammar, 5)
    index = grammar.nonterminal_index
    assert index["A"] in plan.widths[0].post
    for width in range(2, 6):
        assert index["A"] not in plan.widths[width - 1].post
        assert {index["B"], index["S"]} <= set(plan.widths[width - 1].post.tolist())
    # Every term of width w combines children that can exist at their widths.
    for width in range(2, 6):
        for split in plan.widths[width - 1].splits:
            assert split.k < width and len(split.rules)


def test_length_buckets_cover_every_sentence_once_with_one_padded_length_per_batch() -> None:
    rng = np.random.default_rng(0)
    sentences = [np.zeros(int(n), dtype=np.int32) for n in rng.integers(1, 17, 300)]
    seen = []
    for batch in iterate_length_buckets(sentences, 32, 4):
        real = batch.indices[batch.indices >= 0]
        assert batch.ids.shape == (32, batch.ids.shape[1]) and batch.ids.shape[1] % 4 == 0
        padded = {-(-len(sentences[i]) // 4) * 4 for i in real}
        assert padded == {batch.ids.shape[1]}
        np.testing.assert_array_equal(batch.lengths[batch.indices >= 0], [len(sentences[i]) for i in real])
        seen.extend(real.tolist())
    assert sorted(seen) == list(range(len(sentences)))
    assert list(iterate_length_buckets([], 8)) == []


def test_longest_sentences_keep_their_probability_far_below_float32_range() -> None:
    grammar = parse_nltk_grammar("S -> S S [0.5] | 'a' [0.01] | 'b' [0.49]\n")
    ids = np.zeros((1, 12), dtype=np.int32)
    log_z = float(np.asarray(fastchart.compiled(grammar, 12, "log_z")(ids, np.array([12], dtype=np.int32)))[0])
    n = 12
    expected = (math.lgamma(2 * (n - 1) + 1) - math.lgamma(n) - math.lgamma(n + 1)) + (n - 1) * math.log(0.5) + n * math.log(0.01)
    assert log_z == pytest.approx(expected, rel=1e-5)
