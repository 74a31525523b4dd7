"""Exact conditionals p(x_t = w | x_-t) and the optimal loss against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_lib.pcfg.batching import encode_sentences
from pipeline_lib.pcfg.conditionals import entropy_nats, exact_conditionals, optimal_mlm_loss
from pipeline_lib.pcfg.errors import PcfgError
from pipeline_lib.pcfg.inside import sentence_log_probs
from test_pcfg_support import (
    BruteForce,
    ambiguous_grammar,
    enumerate_language,
    fast_jax_compilation,
    finite_grammar,
)

AMBIGUOUS = ambiguous_grammar()
FINITE = finite_grammar()


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    with fast_jax_compilation():
        yield


def encode(grammar, sentences):
    return encode_sentences(grammar, [list(s) for s in sentences])[0]


@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_conditionals_match_brute_force_replacement_at_every_position(method: str) -> None:
    brute = BruteForce(AMBIGUOUS)
    sentences = [("a", "b", "a", "b", "c"), ("a", "c"), ("b", "b", "c", "a")]
    assert all(brute.inside(s) > 0 for s in sentences)
    conditionals = exact_conditionals(AMBIGUOUS, encode(AMBIGUOUS, sentences), method=method)
    for sentence, got in zip(sentences, conditionals):
        assert got is not None and got.shape == (len(sentence), AMBIGUOUS.n_terminals)
        for t in range(len(sentence)):
            expected = brute.conditionals(sentence, t)
            np.testing.assert_allclose(got[t], [expected[w] for w in AMBIGUOUS.terminals], atol=2e-6)


def test_zero_probability_sentences_have_undefined_conditionals_and_loss_refuses_them() -> None:
    sentences = encode(AMBIGUOUS, [("c", "c", "c"), ("a", "b")])
    assert sentence_log_probs(AMBIGUOUS, sentences)[0] == -math.inf
    conditionals = exact_conditionals(AMBIGUOUS, sentences)
    assert conditionals[0] is None and conditionals[1] is not None
    with pytest.raises(PcfgError, match="sentence 1 has probability zero"):
        optimal_mlm_loss(AMBIGUOUS, sentences)


def test_optimal_loss_matches_brute_force_entropies_token_averaged() -> None:
    brute = BruteForce(FINITE)
    language = enumerate_language(brute, max_length=4)
    sentences = sorted(language)
    report = optimal_mlm_loss(FINITE, encode(FINITE, sentences))
    entropy_total = 0.0
    nll_total = 0.0
    for sentence in sentences:
        for t in range(len(sentence)):
            conditional = brute.conditionals(sentence, t)
            entropy_total -= sum(p * math.log(p) for p in conditional.values() if p > 0)
            nll_total -= math.log(conditional[sentence[t]])
    n_tokens = sum(len(s) for s in sentences)
    assert report.n_tokens == n_tokens and report.n_sentences == len(sentences)
    assert report.expected_cross_entropy_per_token == pytest.approx(entropy_total / n_tokens, rel=1e-5)
    assert report.sampled_nll_per_token == pytest.approx(nll_total / n_tokens, rel=1e-5)


def test_expected_entropy_equals_expected_nll_under_the_true_distribution() -> None:
    # Tower property: E_x sum_t H(p(.|x_-t)) = E_x sum_t -log p(x_t|x_-t) when x ~ the grammar.
    language = enumerate_language(BruteForce(FINITE), max_length=4)
    assert sum(language.values()) == pytest.approx(1.0)
    sentences = sorted(language)
    weights = np.array([language[s] for s in sentences])
    conditionals = exact_conditionals(FINITE, encode(FINITE, sentences))
    expected_entropy = sum(w * entropy_nats(c).sum() for w, c in zip(weights, conditionals))
    expected_nll = sum(
        -w * np.log(c[np.arange(len(s)), [FINITE.terminal_index[x] for x in s]]).sum()
        for w, s, c in zip(weights, sentences, conditionals)
    )
    assert expected_entropy == pytest.approx(expected_nll, rel=1e-5)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(("a", "b", "c")), min_size=1, max_size=6), min_size=1, max_size=4))
def test_hypothesis_conditionals_are_distributions_or_undefined(sentences) -> None:
    ids = encode(AMBIGUOUS, sentences)
    log_z = sentence_log_probs(AMBIGUOUS, ids)
    for z, table in zip(log_z, exact_conditionals(AMBIGUOUS, ids)):
        if z == -math.inf:
            assert table is None
        else:
            assert table is not None and not np.isnan(table).any() and (table >= 0).all()
            np.testing.assert_allclose(table.sum(axis=1), 1.0, atol=1e-9)
