"""Sampler determinism across sharding, distribution, length limit; grammar generator."""

from __future__ import annotations

import numpy as np
import pytest
from test_pcfg_support import BruteForce, enumerate_language, finite_grammar

from pipeline_lib.pcfg.generate import RELEASED_LIKE_SHAPE, GrammarShape, generate_grammar
from pipeline_lib.pcfg.grammar_io import format_nltk_grammar, parse_nltk_grammar
from pipeline_lib.pcfg.sample import (
    SAMPLER_BLOCK_SIZE,
    decode_sentence,
    sample_sentences,
    sentences_to_text,
)


def as_tuples(sentences):
    return [tuple(s.tolist()) for s in sentences]


def test_same_seed_gives_the_same_corpus_however_it_is_sharded() -> None:
    grammar = finite_grammar()
    total = 2 * SAMPLER_BLOCK_SIZE + 300
    whole = as_tuples(sample_sentences(grammar, total, seed=11))
    cuts = [0, 7, SAMPLER_BLOCK_SIZE - 1, SAMPLER_BLOCK_SIZE + 450, total]
    shards = []
    for start, stop in zip(cuts[:-1], cuts[1:]):
        shards += as_tuples(sample_sentences(grammar, stop - start, seed=11, start_index=start))
    assert shards == whole
    assert as_tuples(sample_sentences(grammar, 500, seed=12)) != whole[:500]


def test_sentence_frequencies_match_the_grammar_distribution() -> None:
    grammar = finite_grammar()
    language = enumerate_language(BruteForce(grammar), max_length=4)
    sentences = sample_sentences(grammar, 20_000, seed=3)
    words = [tuple(decode_sentence(grammar, s)) for s in sentences]
    counts = {s: words.count(s) for s in set(words)}
    assert set(counts) <= set(language)
    for sentence, probability in language.items():
        if probability > 0.02:
            frequency = counts.get(sentence, 0) / len(words)
            # 5 standard errors of a binomial proportion.
            assert abs(frequency - probability) < 5 * np.sqrt(probability * (1 - probability) / len(words))


def test_length_limit_rejects_long_sentences() -> None:
    grammar = parse_nltk_grammar("S -> S S [0.45] | 'a' [0.55]\n")
    sentences = sample_sentences(grammar, 300, seed=0, length_limit=6)
    lengths = [len(s) for s in sentences]
    assert max(lengths) < 6 and max(lengths) >= 3


def test_text_output_is_one_sentence_per_line() -> None:
    grammar = finite_grammar()
    sentences = sample_sentences(grammar, 5, seed=0)
    lines = sentences_to_text(grammar, sentences).splitlines()
    assert len(lines) == 5 and all(line.strip() for line in lines)


def test_generated_grammar_is_deterministic_valid_and_has_the_released_structure() -> None:
    shape = GrammarShape()
    first, again, other = generate_grammar(shape, seed=1), generate_grammar(shape, seed=1), generate_grammar(shape, seed=2)
    assert format_nltk_grammar(first) == format_nltk_grammar(again) != format_nltk_grammar(other)
    names = first.nonterminals
    assert first.n_nonterminals == 1 + shape.n_roots + shape.n_levels * shape.nonterminals_per_level
    assert first.n_terminals == shape.n_terminals
    np.testing.assert_allclose(first.lhs_probability_sums(), 1.0, atol=1e-12)
    lexical_lhs = [names[a] for a in first.lexical_rules[:, 0]]
    for j in range(shape.nonterminals_per_level):
        for level in range(1, shape.n_levels):
            assert lexical_lhs.count(f"A{level}_{j}") == 1  # exactly one direct word per intermediate nonterminal
    lengths = [len(s) for s in sample_sentences(first, 2000, seed=0)]
    assert min(lengths) >= 2 and max(lengths) <= 2**shape.n_levels


def test_released_like_shape_gives_released_sizes_and_bad_shapes_are_rejected() -> None:
    grammar = generate_grammar(RELEASED_LIKE_SHAPE, seed=0)
    assert (grammar.n_nonterminals, grammar.n_terminals, len(grammar.unary_rules)) == (50, 200, 9)
    with pytest.raises(ValueError, match="nonterminals_per_level"):
        generate_grammar(GrammarShape(n_roots=1, nonterminals_per_level=5), seed=0)


def test_any_prefix_of_a_block_is_reproduced_exactly() -> None:
    grammar = finite_grammar()
    block = as_tuples(sample_sentences(grammar, SAMPLER_BLOCK_SIZE, seed=4))
    for count in (1, 5, 333):
        assert as_tuples(sample_sentences(grammar, count, seed=4)) == block[:count]
    assert as_tuples(sample_sentences(grammar, 10, seed=4, start_index=SAMPLER_BLOCK_SIZE - 3))[:3] == block[-3:]


def test_impossible_length_limit_raises_a_sampling_error(monkeypatch) -> None:
    from pipeline_lib.pcfg import sample as sample_module
    from pipeline_lib.pcfg.errors import SamplingError

    grammar = parse_nltk_grammar("S -> X X [1.0]\nX -> Y Y [1.0]\nY -> 'a' [1.0]\n")  # always 4 words
    monkeypatch.setattr(sample_module, "_MAX_REJECTIONS_PER_SENTENCE", 3)
    with pytest.raises(SamplingError, match="shorter than 4 words"):
        sample_sentences(grammar, 10, seed=0, length_limit=4)
    assert all(len(s) == 4 for s in sample_sentences(grammar, 10, seed=0, length_limit=5))


def test_length_limits_beyond_int64_path_keys_still_sample_in_order() -> None:
    # Sentences over 64 words need path keys wider than int64.
    grammar = parse_nltk_grammar("S -> S S [0.48] | 'a' [0.26] | 'b' [0.26]\n")
    sentences = sample_sentences(grammar, 400, seed=1, length_limit=200)
    lengths = [len(s) for s in sentences]
    assert max(lengths) < 200 and max(lengths) > 64
    again = sample_sentences(grammar, 400, seed=1, length_limit=200)
    assert as_tuples(sentences) == as_tuples(again)
