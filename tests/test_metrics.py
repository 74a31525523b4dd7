"""Metrics against independent references: the SQuAD v1.1 evaluation algorithm, direct
rouge_score calls, and hand-computed cases."""

import collections
import re
import string

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_lib.data.downstream import Example
from pipeline_lib.evaluate import metrics as m


# --- an independent SQuAD v1.1 reference ---------------------------------------------------------
# transformers 5 dropped transformers.data.metrics.squad_metrics (same normalisation), so this is
# the algorithm of the official evaluate-v1.1.py, written out here in its own (regex) style.
def ref_normalize(s):
    s = s.lower()
    s = re.sub("[" + re.escape(string.punctuation) + "]", "", s)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def ref_f1(prediction, truth):
    p, t = ref_normalize(prediction).split(), ref_normalize(truth).split()
    common = sum((collections.Counter(p) & collections.Counter(t)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


def ref_em(prediction, truth):
    return float(ref_normalize(prediction) == ref_normalize(truth))


WORDS = st.sampled_from(
    [
        "a",
        "an",
        "the",
        "The",
        "cat",
        "Cat's",
        "x-ray",
        "an.",
        "théâtre",
        "(1889)",
        "3.5",
        ",",
        "!",
        "  ",
        "another",
        "them",
        "A",
        "nobel",
        "Nobel",
    ]
)
TEXT = st.lists(WORDS, max_size=7).map(" ".join) | st.text(max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(TEXT, st.lists(TEXT, min_size=1, max_size=3)), min_size=1, max_size=5))
def test_squad_matches_reference(cases):
    predictions = [p for p, _ in cases]
    answers = [a for _, a in cases]
    got = m.squad(predictions, answers)
    em = np.mean([max(ref_em(p, g) for g in a) for p, a in cases]) * 100
    f1 = np.mean([max(ref_f1(p, g) for g in a) for p, a in cases]) * 100
    assert got["squad_em"] == pytest.approx(em, abs=1e-9)
    assert got["squad_f1"] == pytest.approx(f1, abs=1e-9)


def test_squad_hand_computed():
    # "the big cat" -> "big cat"; "a cat sat" -> "cat sat": 1 common token, P = R = 1/2
    assert m.squad(["the big cat"], [["a cat sat"]]) == {"squad_em": 0.0, "squad_f1": 50.0}
    # max over gold answers; articles and punctuation do not count
    got = m.squad(
        ["Nobel Prize!", "1903"], [["the Nobel Prize", "Nobel Prize in 1903"], ["in 1903", "x"]]
    )
    assert got["squad_em"] == 50.0
    assert got["squad_f1"] == pytest.approx((1.0 + 2 * 1 * 0.5 / 1.5) / 2 * 100)
    assert m.normalize_squad("  The  Cat's (x-ray), an owl.") == "cats xray owl"


def test_squad_rejects_bad_answers():
    with pytest.raises(m.MetricError, match="example 0: answers must be a non-empty list"):
        m.squad(["x"], ["x"])
    with pytest.raises(m.MetricError, match="1 predictions but 2 references"):
        m.squad(["x"], [["x"], ["y"]])


# --- rouge -------------------------------------------------------------------------------------
SENTENCE = st.lists(
    st.sampled_from(
        ["the", "cat", "sat", "on", "mat", ".", "dog", "ran", "2", "far", "away", ",", "Cat"]
    ),
    min_size=1,
    max_size=14,
).map(" ".join)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(SENTENCE, SENTENCE), min_size=1, max_size=4))
def test_rouge_matches_rouge_score(pairs):
    from rouge_score import rouge_scorer

    predictions, references = [p for p, _ in pairs], [r for _, r in pairs]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeLsum"])
    direct = [scorer.score(r.replace(" . ", " .\n"), p.replace(" . ", " .\n")) for p, r in pairs]
    got = m.rouge(predictions, references)
    for key in m.ROUGE_KEYS:
        assert got[key] == pytest.approx(100 * np.mean([d[key].fmeasure for d in direct]), abs=1e-9)


def test_rouge_hand_computed():
    got = m.rouge(["the cat sat"], ["the cat ran"])
    assert got["rouge1"] == pytest.approx(200 / 3)  # 2 of 3 unigrams both ways
    assert got["rouge2"] == pytest.approx(50.0)  # "the cat" of 2 bigrams
    # rougeLsum is per sentence thanks to " . " -> " .\n": both sentences match fully
    swapped = m.rouge(["a b . c d"], ["c d . a b"])
    assert swapped["rougeLsum"] == pytest.approx(100.0)
    assert swapped["rouge1"] == pytest.approx(100.0)
    assert swapped["rouge2"] == pytest.approx(100 * (2 / 3))  # a b, c d shared; b c / d a not
    from rouge_score import rouge_scorer

    plain = rouge_scorer.RougeScorer(["rougeLsum"]).score("c d . a b", "a b . c d")["rougeLsum"]
    assert plain.fmeasure == pytest.approx(0.5)  # without the newline: one sentence, LCS 2 of 4


def test_rouge_bootstrap_is_seeded_and_near_the_mean():
    predictions = ["the cat sat on the mat", "a dog ran", "far away", "the mat"] * 3
    references = ["the cat sat", "the dog ran far", "away", "cat on the mat"] * 3
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a = m.rouge(predictions, references, aggregation="bootstrap")
    b = m.rouge(predictions, references, aggregation="bootstrap")
    assert a == b
    assert np.array_equal(np.random.get_state()[1], state)  # the global RNG is untouched
    mean = m.rouge(predictions, references)
    for key in m.ROUGE_KEYS:
        assert a[key] == pytest.approx(mean[key], abs=5.0)
    with pytest.raises(m.MetricError, match="aggregation 'median'"):
        m.rouge(predictions, references, aggregation="median")


# --- exact match / token F1 ---------------------------------------------------------------------
def test_exact_match_and_token_f1_hand_computed():
    assert m.exact_match(["a b", "A b", "a  b"], ["a b", "a b", "a b"]) == pytest.approx(100 / 3)
    # "x y z" vs "x y w": 2 common of 3 -> F1 2/3; reorder does not matter for F1, does for EM
    assert m.token_f1(["x y z", "b a"], ["x y w", "a b"]) == pytest.approx((2 / 3 + 1) / 2 * 100)
    assert m.exact_match(["b a"], ["a b"]) == 0.0
    assert m.token_f1([""], [""]) == 0.0  # T5's _f1_score: no common token scores 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=6), st.lists(st.sampled_from("abcd"), max_size=6))
def test_token_f1_invariants(p, t):
    f, g = m.token_f1([" ".join(p)], [" ".join(t)]), m.token_f1([" ".join(t)], [" ".join(p)])
    assert f == pytest.approx(g) and 0.0 <= f <= 100.0
    if p and sorted(p) == sorted(t):
        assert f == pytest.approx(100.0)
    if not set(p) & set(t):
        assert f == 0.0


# --- compute_metrics ----------------------------------------------------------------------------
def test_compute_metrics_by_name():
    examples = [Example("q1", "Nobel Prize", ("the Nobel Prize", "Nobel")), Example("q2", "1903")]
    got = m.compute_metrics(["squad_em", "squad_f1", "exact_match"], ["nobel", "in 1903"], examples)
    assert list(got) == ["squad_em", "squad_f1", "exact_match"]
    assert got["squad_em"] == 50.0  # "nobel" matches the answer "Nobel", not the target
    assert got["exact_match"] == 0.0
    assert got["squad_f1"] == pytest.approx((1 + 2 * 0.5 / 1.5) / 2 * 100)
    rouge = m.compute_metrics(["rouge1"], ["the cat sat"], [Example("x", "the cat ran")])
    assert rouge == {"rouge1": pytest.approx(200 / 3)}
    with pytest.raises(m.MetricError, match="unknown metric\\(s\\) bleu"):
        m.compute_metrics(["bleu"], ["x"], [Example("x", "x")])
    with pytest.raises(m.MetricError, match="nothing to score"):
        m.compute_metrics(["exact_match"], [], [])
