"""Downstream task labels: maximum likelihood (not MAP), spans, label ids, tie-breaks, CSV."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest

from pipeline_lib.pcfg.batching import encode_sentences
from pipeline_lib.pcfg.errors import PcfgError
from pipeline_lib.pcfg.grammar_io import parse_nltk_grammar, parse_rule_file
from pipeline_lib.pcfg.labels import (
    draw_downstream_sentences,
    label_names,
    labels_from_log_charts,
    task_labels,
    write_label_csv,
)
from test_pcfg_support import BruteForce, ambiguous_grammar, fast_jax_compilation

# The prior favours S1 (0.9) but S2 explains "a c" better: 0.9 vs 0.2.
ML_VS_MAP = parse_nltk_grammar(
    """
S -> S1 [0.9] | S2 [0.1]
S1 -> L R [1.0]
S2 -> L2 R [1.0]
L -> 'a' [0.2] | 'b' [0.8]
L2 -> 'a' [0.9] | 'b' [0.1]
R -> 'c' [1.0]
""",
    source="ml-vs-map",
)


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    with fast_jax_compilation():
        yield


def encode(grammar, sentences):
    return encode_sentences(grammar, [list(s) for s in sentences])[0]


def test_task_a_is_maximum_likelihood_not_map() -> None:
    labels = task_labels(ML_VS_MAP, encode(ML_VS_MAP, [("a", "c"), ("b", "c")]), "A")
    assert labels.tolist() == [1, 0]  # S2 -> 1 although P(S1) * I(S1) = 0.18 > P(S2) * I(S2) = 0.09
    assert label_names(ML_VS_MAP, "A") == {0: "S1", 1: "S2"}


def test_task_c_uses_sorted_nonterminal_ids_and_excludes_the_start_symbol() -> None:
    # sorted nonterminals: L=0, L2=1, R=2, S=3, S1=4, S2=5; S itself has the largest inside but is excluded.
    labels = task_labels(ML_VS_MAP, encode(ML_VS_MAP, [("a", "c"), ("b", "c")]), "C")
    assert labels.tolist() == [5, 4]


def test_all_zero_inside_ties_go_to_the_first_declared_candidate() -> None:
    # "c c" has no derivation at all: the original's max over a grammar-ordered dict returns S1.
    sentences = encode(ML_VS_MAP, [("c", "c")])
    assert task_labels(ML_VS_MAP, sentences, "A").tolist() == [0]
    assert task_labels(ML_VS_MAP, sentences, "C").tolist() == [ML_VS_MAP.nonterminal_index["S1"]]


def test_task_b_labels_span_zero_to_four_and_ignore_later_words() -> None:
    grammar = ambiguous_grammar()
    brute = BruteForce(grammar)
    candidates = [a for a in grammar.declaration_order if a != grammar.start]
    sentences = [s for s in itertools.product("abc", repeat=5)][::7]
    labels = task_labels(grammar, encode(grammar, sentences), "B")
    for sentence, label in zip(sentences, labels):
        scores = [brute.inside(sentence, grammar.nonterminals[a], 0, 4) for a in candidates]
        assert label == candidates[int(np.argmax(scores))]
    # Changing the fifth word never changes a task-B label (no context term).
    variants = encode(grammar, [("a", "b", "a", "b", w) for w in "abc"])
    assert len(set(task_labels(grammar, variants, "B").tolist())) == 1


def test_labels_from_hand_made_charts_follow_declaration_order_on_ties() -> None:
    grammar = parse_rule_file("S S1 0.5\nS S2 0.5\nS2 X X 1.0\nS1 X X 1.0\nX a 1.0\n", source="ties")
    # Declaration order (first appearance as a left-hand side): S, S2, S1, X.
    # A tie between S1 and S2 goes to S2, declared first, although S1 sorts first.
    chart = np.full((2, 2, grammar.n_nonterminals), -np.inf)
    chart[0, 1, grammar.nonterminal_index["S1"]] = -1.0
    chart[0, 1, grammar.nonterminal_index["S2"]] = -1.0
    assert labels_from_log_charts(grammar, [chart], "A").tolist() == [1]  # S2 is rank 1 of {S1, S2}
    assert labels_from_log_charts(grammar, [chart], "C").tolist() == [grammar.nonterminal_index["S2"]]
    with pytest.raises(PcfgError, match=r"span \[0, 4\)"):
        labels_from_log_charts(grammar, [chart], "B")


def test_downstream_draws_are_seeded_filtered_and_split_specific(tmp_path: Path) -> None:
    grammar = ambiguous_grammar()
    train = draw_downstream_sentences(grammar, 30, seed=5, split="train")
    again = draw_downstream_sentences(grammar, 30, seed=5, split="train")
    validation = draw_downstream_sentences(grammar, 30, seed=5, split="validation")
    assert all(4 < len(s) < 32 for s in train) and len(train) == 30
    assert all(np.array_equal(a, b) for a, b in zip(train, again))
    assert not all(np.array_equal(a, b) for a, b in zip(train, validation))
    labels = task_labels(grammar, train, "B")
    path = tmp_path / "pcfg_B.csv"
    write_label_csv(path, grammar, train, labels)
    with path.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["text", "label"]
    assert [int(r[1]) for r in rows[1:]] == labels.tolist()
    assert rows[1][0] == " ".join(grammar.terminals[i] for i in train[0])
