"""Seeded, shard-independent sampling of sentences from a grammar.

Sentence ``i`` of a corpus belongs to block ``i // SAMPLER_BLOCK_SIZE``; each
block has its own random stream derived from ``(seed, stream, block)`` through
``numpy.random.SeedSequence``.  Any shard ``[start, stop)`` regenerates the
blocks it overlaps, so the corpus is identical however it is split into shards.

Expansion is top-down and left-to-right; each nonterminal picks a rule with
probability proportional to its stored probability (like the original
``random.choices``).  Sentences with ``length >= length_limit`` are rejected
and redrawn from the same stream, matching the original ``len < 32`` filter.
Each sentence is one training example (the reference's "one sentence per
example"), so sentences are returned separately, never packed.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from pipeline_lib.pcfg.errors import SamplingError
from pipeline_lib.pcfg.grammar import Grammar

SAMPLER_BLOCK_SIZE = 1000
DEFAULT_LENGTH_LIMIT = 32
# Random-stream ids, so pre-training text, downstream splits and masking never
# share random numbers even when they share a seed.
STREAM_PRETRAINING = 0
STREAM_DOWNSTREAM_TRAIN = 1
STREAM_DOWNSTREAM_VALIDATION = 2
STREAM_MLM_MASKING = 3

_MAX_REJECTIONS_PER_SENTENCE = 10_000
_UNIFORM_BUFFER = 4096

# An expansion is (kind, a, b): kind 0 = word a, 1 = unary to a, 2 = binary a b.
_Expansion = tuple[int, int, int]


@dataclass(frozen=True)
class _SamplingTable:
    start: int
    cumulative: tuple[list[float], ...]
    expansions: tuple[list[_Expansion], ...]


@lru_cache(maxsize=16)
def _sampling_table(grammar: Grammar) -> _SamplingTable:
    n = grammar.n_nonterminals
    options: list[list[tuple[float, _Expansion]]] = [[] for _ in range(n)]
    for (a, w), lp in zip(grammar.lexical_rules.tolist(), grammar.lexical_log_probs.tolist()):
        options[a].append((float(np.exp(lp)), (0, w, -1)))
    for (a, b), lp in zip(grammar.unary_rules.tolist(), grammar.unary_log_probs.tolist()):
        options[a].append((float(np.exp(lp)), (1, b, -1)))
    for (a, b, c), lp in zip(grammar.binary_rules.tolist(), grammar.binary_log_probs.tolist()):
        options[a].append((float(np.exp(lp)), (2, b, c)))
    cumulative, expansions = [], []
    for rules in options:
        weights = np.array([p for p, _ in rules])
        cdf = np.cumsum(weights) / weights.sum() if len(rules) else np.zeros(0)
        cumulative.append(cdf[:-1].tolist())  # bisect over inner edges: last rule takes the rest
        expansions.append([e for _, e in rules])
    return _SamplingTable(grammar.start, tuple(cumulative), tuple(expansions))


def _block_generator(seed: int, stream: int, block: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=seed, spawn_key=(stream, block))))


def _sample_block(table: _SamplingTable, rng: np.random.Generator, count: int, length_limit: int) -> list[np.ndarray]:
    sentences: list[np.ndarray] = []
    uniforms = rng.random(_UNIFORM_BUFFER).tolist()
    position = 0
    rejections = 0
    cumulative, expansions = table.cumulative, table.expansions
    while len(sentences) < count:
        words: list[int] = []
        stack = [table.start]
        while stack:
            # Every pending symbol yields at least one word, so stop early once
            # the sentence is bound to reach the limit (also stops recursion).
            if len(words) + len(stack) >= length_limit:
                break
            symbol = stack.pop()
            if position == len(uniforms):
                uniforms = rng.random(_UNIFORM_BUFFER).tolist()
                position = 0
            kind, a, b = expansions[symbol][bisect.bisect_right(cumulative[symbol], uniforms[position])]
            position += 1
            if kind == 0:
                words.append(a)
            elif kind == 1:
                stack.append(a)
            else:
                stack.append(b)
                stack.append(a)
        if stack:
            rejections += 1
            if rejections > _MAX_REJECTIONS_PER_SENTENCE * count:
                raise SamplingError(f"could not draw sentences shorter than {length_limit} words; raise length_limit")
            continue
        sentences.append(np.asarray(words, dtype=np.int32))
    return sentences


def sample_sentences(
    grammar: Grammar,
    n: int,
    seed: int,
    *,
    start_index: int = 0,
    stream: int = STREAM_PRETRAINING,
    length_limit: int = DEFAULT_LENGTH_LIMIT,
) -> list[np.ndarray]:
    """Sentences ``start_index .. start_index + n - 1`` of the corpus ``(grammar, seed, stream)``.

    Each sentence is an int32 array of terminal ids (indices into ``grammar.terminals``).
    """
    if n < 0 or start_index < 0:
        raise ValueError("n and start_index must be non-negative")
    if length_limit < 2:
        raise ValueError("length_limit must be >= 2")
    table = _sampling_table(grammar)
    stop = start_index + n
    sentences: list[np.ndarray] = []
    for block in range(start_index // SAMPLER_BLOCK_SIZE, (stop - 1) // SAMPLER_BLOCK_SIZE + 1 if n else 0):
        block_start = block * SAMPLER_BLOCK_SIZE
        # Only the prefix of the block up to `stop` is needed: the stream is
        # sequential, so earlier sentences of a block never depend on later ones.
        count = min(SAMPLER_BLOCK_SIZE, stop - block_start)
        drawn = _sample_block(table, _block_generator(seed, stream, block), count, length_limit)
        sentences.extend(drawn[max(0, start_index - block_start) :])
    return sentences


def decode_sentence(grammar: Grammar, token_ids: Sequence[int]) -> list[str]:
    """Terminal ids to words."""
    return [grammar.terminals[int(i)] for i in token_ids]


def sentences_to_text(grammar: Grammar, sentences: Sequence[np.ndarray]) -> str:
    """One space-separated sentence per line (no blank lines), newline-terminated."""
    return "".join(" ".join(decode_sentence(grammar, s)) + "\n" for s in sentences)
