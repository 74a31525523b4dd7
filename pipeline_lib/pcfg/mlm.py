"""BERT-style masked-LM instances, one sentence per example (reference §1.4-1.5).

Each sentence becomes ``[CLS] w_1 .. w_n [SEP]`` padded to ``max_seq_length``.
Masking follows Google BERT's ``create_masked_lm_predictions`` (as used by
academic-budget-bert): ``num_to_predict = min(max_predictions, max(1,
round(masked_lm_prob * (n + 2))))`` positions, never [CLS]/[SEP], chosen in a
random order; each becomes [MASK] with probability 0.8, else stays unchanged
with probability 0.5, else a random id drawn uniformly from the *whole*
vocabulary (specials included, as in BERT).  Every sentence is masked
``dup_factor`` times with different masks; instances are ordered duplicate-major
(all sentences of duplicate 0, then duplicate 1, ...) and left unshuffled for
the data loader.

Randomness for sentence ``i`` and duplicate ``d`` is slot ``i % MLM_BLOCK_SIZE``
of fixed-size draws for the block ``(seed, d, i // MLM_BLOCK_SIZE)``, so shards
(given ``first_index``) agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline_lib.files import atomic_open
from pipeline_lib.pcfg.errors import InputFormatError, PcfgError
from pipeline_lib.pcfg.grammar import Grammar
from pipeline_lib.pcfg.sample import STREAM_MLM_MASKING

MLM_BLOCK_SIZE = 1000
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class MlmVocabulary:
    """Token strings and the ids the instances use."""

    tokens: tuple[str, ...]
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    terminal_ids: np.ndarray  # (T,) vocabulary id of each grammar terminal

    @property
    def size(self) -> int:
        return len(self.tokens)


def compact_vocabulary(grammar: Grammar) -> MlmVocabulary:
    """Specials ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4`` then the sorted terminals."""
    tokens = SPECIAL_TOKENS + grammar.terminals
    return MlmVocabulary(
        tokens=tokens,
        pad_id=0,
        cls_id=2,
        sep_id=3,
        mask_id=4,
        terminal_ids=np.arange(len(SPECIAL_TOKENS), len(tokens), dtype=np.int32),
    )


def bert_vocabulary(grammar: Grammar, vocab_path: str | Path) -> MlmVocabulary:
    """A BERT ``vocab.txt`` (id = line number - 1); every terminal must be a whole token in it."""
    path = Path(vocab_path)
    try:
        tokens = tuple(line.rstrip("\n").rstrip("\r") for line in path.read_text(encoding="utf-8").splitlines())
    except OSError as error:
        raise InputFormatError(f"{path}: cannot read vocabulary: {error.strerror}") from error
    index = {}
    for line_number, token in enumerate(tokens):
        index.setdefault(token, line_number)
    missing_specials = [s for s in SPECIAL_TOKENS if s not in index]
    if missing_specials:
        raise InputFormatError(f"{path}: special tokens missing: {', '.join(missing_specials)}")
    missing = [w for w in grammar.terminals if w not in index]
    if missing:
        raise InputFormatError(f"{path}: {len(missing)} grammar terminals are not vocabulary tokens, e.g. {missing[0]!r}")
    return MlmVocabulary(
        tokens=tokens,
        pad_id=index["[PAD]"],
        cls_id=index["[CLS]"],
        sep_id=index["[SEP]"],
        mask_id=index["[MASK]"],
        terminal_ids=np.asarray([index[w] for w in grammar.terminals], dtype=np.int32),
    )


@dataclass(frozen=True)
class MlmConfig:
    max_seq_length: int = 32
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 5
    dup_factor: int = 5


@dataclass(frozen=True)
class MlmInstances:
    """Arrays of ``M = dup_factor * n_sentences`` instances (row ``d * n_sentences + i``)."""

    input_ids: np.ndarray  # (M, L) int32
    input_mask: np.ndarray  # (M, L) int8, 1 on real tokens, 0 on padding
    masked_lm_positions: np.ndarray  # (M, P) int32, 0-padded
    masked_lm_ids: np.ndarray  # (M, P) int32 original ids, 0-padded
    masked_lm_weights: np.ndarray  # (M, P) float32, 1 for real predictions

    def as_dict(self) -> dict[str, np.ndarray]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _BlockDraws:
    """Fixed-size random draws for every sentence slot of one block.

    Each slot gets the same number of draws whatever its sentence length, so a
    sentence's mask depends only on ``(seed, duplicate, global index)``.
    """

    position_keys: np.ndarray  # (BLOCK, L - 2): argsort of a prefix = random order of word positions
    decisions: np.ndarray  # (BLOCK, P, 2): [MASK] vs not, then keep vs random
    replacements: np.ndarray  # (BLOCK, P): random vocabulary ids


def _block_draws(seed: int, duplicate: int, block: int, config: MlmConfig, vocabulary_size: int) -> _BlockDraws:
    key = (STREAM_MLM_MASKING, duplicate, block)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=seed, spawn_key=key)))
    slots, n_predict = MLM_BLOCK_SIZE, config.max_predictions_per_seq
    return _BlockDraws(
        position_keys=rng.random((slots, max(config.max_seq_length - 2, 1))),
        decisions=rng.random((slots, n_predict, 2)),
        replacements=rng.integers(0, vocabulary_size, size=(slots, n_predict)),
    )


def number_to_predict(n_tokens_with_specials: int, config: MlmConfig) -> int:
    # Python's round (banker's rounding) on purpose: BERT uses int(round(...)).
    return min(config.max_predictions_per_seq, max(1, int(round(n_tokens_with_specials * config.masked_lm_prob))))


def create_mlm_instances(
    sentences: Sequence[np.ndarray],
    vocabulary: MlmVocabulary,
    seed: int,
    config: MlmConfig = MlmConfig(),
    *,
    first_index: int = 0,
) -> MlmInstances:
    """Masked instances for ``sentences`` (terminal-id arrays) whose global indices start at ``first_index``."""
    n_sentences, length, n_predict = len(sentences), config.max_seq_length, config.max_predictions_per_seq
    for number, sentence in enumerate(sentences):
        if len(sentence) + 2 > length:
            raise PcfgError(
                f"sentence {first_index + number + 1} has {len(sentence)} words; max_seq_length {length} fits at most {length - 2}"
            )
    total = config.dup_factor * n_sentences
    input_ids = np.full((total, length), vocabulary.pad_id, dtype=np.int32)
    input_mask = np.zeros((total, length), dtype=np.int8)
    positions = np.zeros((total, n_predict), dtype=np.int32)
    label_ids = np.zeros((total, n_predict), dtype=np.int32)
    weights = np.zeros((total, n_predict), dtype=np.float32)
    for duplicate in range(config.dup_factor):
        draws, draws_block = None, -1
        for number, sentence in enumerate(sentences):
            global_index = first_index + number
            block, slot = divmod(global_index, MLM_BLOCK_SIZE)
            if block != draws_block:
                draws, draws_block = _block_draws(seed, duplicate, block, config, vocabulary.size), block
            assert draws is not None
            tokens = np.concatenate([[vocabulary.cls_id], vocabulary.terminal_ids[sentence], [vocabulary.sep_id]])
            masked, chosen = _mask_one(tokens, vocabulary, config, draws, slot)
            row = duplicate * n_sentences + number
            input_ids[row, : len(masked)] = masked
            input_mask[row, : len(masked)] = 1
            positions[row, : len(chosen)] = chosen
            label_ids[row, : len(chosen)] = tokens[chosen]
            weights[row, : len(chosen)] = 1.0
    return MlmInstances(input_ids, input_mask, positions, label_ids, weights)


def _mask_one(
    tokens: np.ndarray, vocabulary: MlmVocabulary, config: MlmConfig, draws: _BlockDraws, slot: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mask one ``[CLS] .. [SEP]`` sequence; returns (masked tokens, sorted masked positions)."""
    n_words = len(tokens) - 2
    count = min(number_to_predict(len(tokens), config), n_words)
    # Candidate positions exclude [CLS] (0) and [SEP] (n + 1); BERT shuffles them and takes a prefix.
    order = np.argsort(draws.position_keys[slot, :n_words], kind="stable") + 1
    chosen = np.sort(order[:count])
    masked = tokens.copy()
    for k, position in enumerate(chosen):
        mask_draw, keep_draw = draws.decisions[slot, k]
        if mask_draw < 0.8:
            masked[position] = vocabulary.mask_id
        elif keep_draw >= 0.5:  # 10%: random token; the other 10% keep the original
            masked[position] = draws.replacements[slot, k]
    return masked, chosen


def write_mlm_instances(path: str | Path, instances: MlmInstances) -> None:
    """Atomically save the instance arrays as an uncompressed ``.npz``."""
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **instances.as_dict())
