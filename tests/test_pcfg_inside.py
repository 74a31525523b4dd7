"""Inside, outside marginals and Viterbi against brute-force tree enumeration and nltk."""

from __future__ import annotations

import itertools
import math

import nltk
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_lib.pcfg.batching import UNKNOWN_WORD_ID, encode_sentences
from pipeline_lib.pcfg.errors import UnknownWordError
from pipeline_lib.pcfg.grammar_io import parse_nltk_grammar
from pipeline_lib.pcfg.inside import inside_log_charts, posterior_span_marginals, sentence_log_probs
from pipeline_lib.pcfg.viterbi import viterbi_parses
from test_pcfg_support import AMBIGUOUS_GRAMMAR_TEXT, BruteForce, ambiguous_grammar, fast_jax_compilation

GRAMMAR = ambiguous_grammar()
BRUTE = BruteForce(GRAMMAR)
# Every sentence of 1-4 words over {a, b, c} plus a few longer ones.
WORDS = ("a", "b", "c")
SENTENCES = [s for n in range(1, 5) for s in itertools.product(WORDS, repeat=n)] + [
    ("a", "b", "a", "b", "c"),
    ("b", "a", "a", "b", "b", "c"),
]


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    with fast_jax_compilation():
        yield


def encode(sentences):
    return encode_sentences(GRAMMAR, [list(s) for s in sentences])[0]


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_log_partition_matches_sum_over_enumerated_trees(method: str) -> None:
    log_z = sentence_log_probs(GRAMMAR, encode(SENTENCES), batch_size=16, method=method)
    reference = np.array([BRUTE.inside(s) for s in SENTENCES])
    assert (reference == 0).any() and (reference > 0).any()  # both cases are exercised
    assert np.array_equal(np.isneginf(log_z), reference == 0)
    positive = reference > 0
    np.testing.assert_allclose(log_z[positive], np.log(reference[positive]), rtol=1e-5, atol=1e-5)


def test_inside_chart_cells_match_brute_force_for_every_span_and_symbol() -> None:
    sentence = ("a", "b", "a", "b", "c")
    (chart,) = inside_log_charts(GRAMMAR, encode([sentence]))
    for i in range(5):
        for j in range(i + 1, 6):
            for symbol in GRAMMAR.nonterminals:
                expected = BRUTE.inside(sentence, symbol, i, j)
                got = chart[i, j - i - 1, GRAMMAR.nonterminal_index[symbol]]
                if expected == 0:
                    assert got == -np.inf
                else:
                    assert got == pytest.approx(math.log(expected), rel=1e-5, abs=1e-5)


def test_span_marginals_from_gradient_match_tree_enumeration() -> None:
    sentences = [("a", "b", "a", "b", "c"), ("a", "b", "c", "b", "c", "b"), ("a", "c")]
    marginals = posterior_span_marginals(GRAMMAR, encode(sentences))
    for sentence, got in zip(sentences, marginals):
        assert BRUTE.inside(sentence) > 0
        expected = BRUTE.span_marginals(sentence)
        n = len(sentence)
        dense = np.zeros_like(got)
        for (symbol, i, j), p in expected.items():
            dense[i, j - i - 1, GRAMMAR.nonterminal_index[symbol]] = p
        np.testing.assert_allclose(got, dense, atol=2e-5)
        # Every word is covered by exactly one pre-unary leaf node.
        np.testing.assert_allclose(got[:, 0].sum(axis=-1), np.ones(n), atol=2e-5)


def test_viterbi_trees_and_log_probs_match_brute_force() -> None:
    parses = viterbi_parses(GRAMMAR, encode(SENTENCES), batch_size=16)
    for sentence, parse in zip(SENTENCES, parses):
        best, best_trees = BRUTE.best(sentence)
        if best == 0:
            assert parse.tree is None and parse.log_prob == -math.inf
            continue
        assert parse.log_prob == pytest.approx(math.log(best), rel=1e-5, abs=1e-5)
        assert parse.tree in best_trees
        assert nltk.Tree.fromstring(parse.tree).leaves() == list(sentence)


def test_agreement_with_nltk_viterbi_and_inside_chart_parsers() -> None:
    reference_grammar = nltk.PCFG.fromstring(AMBIGUOUS_GRAMMAR_TEXT)
    sentences = [("a", "b", "a", "b"), ("b", "a", "c"), ("a", "b", "c", "b", "c")]
    ids = encode(sentences)
    parses = viterbi_parses(GRAMMAR, ids)
    log_z = sentence_log_probs(GRAMMAR, ids)
    viterbi = nltk.ViterbiParser(reference_grammar)
    inside_parser = nltk.InsideChartParser(reference_grammar)
    for sentence, parse, z in zip(sentences, parses, log_z):
        (nltk_best,) = list(viterbi.parse(list(sentence)))
        assert parse.log_prob == pytest.approx(math.log(nltk_best.prob()), rel=1e-5)
        all_trees = list(inside_parser.parse(list(sentence)))
        assert len({str(t) for t in all_trees}) == len(all_trees) == len(BRUTE.trees(sentence))
        assert z == pytest.approx(math.log(sum(t.prob() for t in all_trees)), rel=1e-5)


def test_long_sentences_do_not_underflow() -> None:
    # Every binary tree over n leaves has probability 0.5**(n-1) * 0.01**n, so
    # Z = Catalan(n - 1) * 0.5**(n-1) * 0.01**n: about 1e-36 for n = 20, far
    # below anything a product of float32 probabilities could hold.
    grammar = parse_nltk_grammar("S -> S S [0.5] | 'a' [0.01] | 'b' [0.49]\n")
    n = 20
    log_catalan = math.lgamma(2 * (n - 1) + 1) - math.lgamma(n - 1 + 1) - math.lgamma(n - 1 + 2)
    expected = log_catalan + (n - 1) * math.log(0.5) + n * math.log(0.01)
    assert expected < math.log(np.finfo(np.float32).tiny) + 10
    (got,) = sentence_log_probs(grammar, encode_sentences(grammar, [["a"] * n])[0], batch_size=1)
    assert got == pytest.approx(expected, rel=1e-5)


def test_unknown_words_raise_or_give_an_explicit_zero_without_nan() -> None:
    with pytest.raises(UnknownWordError, match="sentence 2: word 'zzz'"):
        encode_sentences(GRAMMAR, [["a", "b"], ["a", "zzz"]])
    ids, flags = encode_sentences(GRAMMAR, [["a", "b"], ["a", "zzz"]], on_unknown="flag")
    assert flags.tolist() == [False, True] and ids[1][1] == UNKNOWN_WORD_ID
    log_z = sentence_log_probs(GRAMMAR, ids)
    marginals = posterior_span_marginals(GRAMMAR, ids)
    parses = viterbi_parses(GRAMMAR, ids)
    assert np.isfinite(log_z[0]) and log_z[1] == -np.inf
    assert not np.isnan(marginals[1]).any() and (marginals[1] == 0).all()
    assert parses[1].tree is None and parses[0].tree is not None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6), min_size=1, max_size=5))
def test_hypothesis_log_partition_equals_enumerated_tree_sum(sentences) -> None:
    log_z = sentence_log_probs(GRAMMAR, encode(sentences), batch_size=8)
    for sentence, got in zip(sentences, log_z):
        expected = BRUTE.inside(tuple(sentence))
        assert not math.isnan(got)
        if expected == 0:
            assert got == -math.inf
        else:
            assert got == pytest.approx(math.log(expected), rel=1e-5, abs=1e-5)
