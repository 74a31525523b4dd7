"""BERT masking of one-sentence instances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline_lib.pcfg.errors import InputFormatError, PcfgError
from pipeline_lib.pcfg.generate import generate_grammar
from pipeline_lib.pcfg.mlm import (
    MlmConfig,
    bert_vocabulary,
    compact_vocabulary,
    create_mlm_instances,
    number_to_predict,
)
from pipeline_lib.pcfg.sample import sample_sentences

GRAMMAR = generate_grammar(seed=0)
SENTENCES = sample_sentences(GRAMMAR, 1500, seed=1)


def test_layout_labels_and_mask_counts() -> None:
    vocabulary = compact_vocabulary(GRAMMAR)
    config = MlmConfig(max_seq_length=20, dup_factor=2)
    instances = create_mlm_instances(SENTENCES[:50], vocabulary, seed=0, config=config)
    assert instances.input_ids.shape == (100, 20) and instances.masked_lm_positions.shape == (100, 5)
    for row in range(100):
        sentence = SENTENCES[:50][row % 50]
        n = len(sentence)
        original = np.concatenate([[vocabulary.cls_id], vocabulary.terminal_ids[sentence], [vocabulary.sep_id]])
        ids, mask = instances.input_ids[row], instances.input_mask[row]
        assert ids[0] == vocabulary.cls_id and ids[n + 1] == vocabulary.sep_id
        assert (ids[n + 2 :] == vocabulary.pad_id).all() and mask.tolist() == [1] * (n + 2) + [0] * (18 - n)
        count = int(instances.masked_lm_weights[row].sum())
        assert count == number_to_predict(n + 2, config) == min(5, max(1, round(0.15 * (n + 2))))
        positions = instances.masked_lm_positions[row, :count]
        assert (np.diff(positions) > 0).all() and positions.min() >= 1 and positions.max() <= n
        np.testing.assert_array_equal(instances.masked_lm_ids[row, :count], original[positions])
        unmasked = np.setdiff1d(np.arange(n + 2), positions)
        np.testing.assert_array_equal(ids[unmasked], original[unmasked])
    # Duplicates of the same sentence get different masks.
    assert not np.array_equal(instances.masked_lm_positions[:50], instances.masked_lm_positions[50:])


def test_eighty_ten_ten_replacement_proportions() -> None:
    vocabulary = compact_vocabulary(GRAMMAR)
    instances = create_mlm_instances(SENTENCES, vocabulary, seed=3, config=MlmConfig(dup_factor=2))
    rows, slots = np.nonzero(instances.masked_lm_weights)
    chosen = instances.input_ids[rows, instances.masked_lm_positions[rows, slots]]
    originals = instances.masked_lm_ids[rows, slots]
    total = len(rows)
    masked = np.mean(chosen == vocabulary.mask_id)
    kept = np.mean(chosen == originals)
    assert total > 3000
    assert abs(masked - 0.8) < 0.03
    # "random" can hit the original word by chance (1/vocab), so kept is slightly above 10%.
    assert abs(kept - 0.1 - 0.1 / vocabulary.size) < 0.02
    assert abs((1 - masked - kept) - 0.1) < 0.02


def test_same_masks_for_any_sharding() -> None:
    vocabulary = compact_vocabulary(GRAMMAR)
    config = MlmConfig(dup_factor=2)
    whole = create_mlm_instances(SENTENCES, vocabulary, seed=9, config=config)
    cut = 1234
    first = create_mlm_instances(SENTENCES[:cut], vocabulary, seed=9, config=config)
    second = create_mlm_instances(SENTENCES[cut:], vocabulary, seed=9, config=config, first_index=cut)
    n = len(SENTENCES)
    for duplicate in range(2):
        rows = slice(duplicate * n, (duplicate + 1) * n)
        stitched = np.concatenate(
            [first.input_ids[duplicate * cut : (duplicate + 1) * cut], second.input_ids[duplicate * (n - cut) : (duplicate + 1) * (n - cut)]]
        )
        np.testing.assert_array_equal(stitched, whole.input_ids[rows])
    other_seed = create_mlm_instances(SENTENCES, vocabulary, seed=10, config=config)
    assert not np.array_equal(other_seed.input_ids, whole.input_ids)


def test_bert_vocabulary_ids_and_errors(tmp_path: Path) -> None:
    tokens = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *reversed(GRAMMAR.terminals), "extra"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n")
    vocabulary = bert_vocabulary(GRAMMAR, path)
    assert (vocabulary.pad_id, vocabulary.cls_id, vocabulary.sep_id, vocabulary.mask_id) == (0, 3, 4, 5)
    assert vocabulary.size == len(tokens)
    assert [tokens[i] for i in vocabulary.terminal_ids] == list(GRAMMAR.terminals)
    path.write_text("\n".join(tokens[:-3]) + "\n")
    with pytest.raises(InputFormatError, match="not vocabulary tokens"):
        bert_vocabulary(GRAMMAR, path)


def test_too_long_sentence_is_a_clear_error() -> None:
    with pytest.raises(PcfgError, match="max_seq_length 4"):
        create_mlm_instances(SENTENCES[:3], compact_vocabulary(GRAMMAR), seed=0, config=MlmConfig(max_seq_length=4))
