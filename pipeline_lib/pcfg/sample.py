"""Seeded, shard-independent sampling of sentences from a grammar.

Sentence ``i`` of a corpus belongs to block ``i // SAMPLER_BLOCK_SIZE``; each
block has its own random stream derived from ``(seed, stream, block)`` through
``numpy.random.SeedSequence``.  Any shard ``[start, stop)`` regenerates the
blocks it overlaps, so the corpus is identical however it is split into shards.

Expansion is top-down and vectorised with numpy: a block draws its candidate
sentences together, level by level, each open nonterminal of every sentence
picking a rule with probability proportional to its stored probability (like
the original ``random.choices``) by an inverse-CDF lookup in one table.
Sentences with ``length >= length_limit`` are rejected and redrawn from the
same stream (further rounds of candidates), matching the original
``len < 32`` filter.
Each sentence is one training example (the reference's "one sentence per
example"), so sentences are returned separately, never packed.
"""

from __future__ import annotations

import itertools
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
# Candidates drawn in round i of a block: SAMPLER_BLOCK_SIZE * 2**i, capped.  The
# schedule depends only on the block's own history, never on how many of its
# sentences were asked for, so any prefix of a block is reproduced exactly.
_MAX_ROUND = 1 << 20
# Buckets of the guide table that turns the inverse-CDF search into a lookup
# plus (rarely more than one) step forward.
_GUIDE = 256
# Word positions are keyed by their root-to-leaf path, one bit per binary
# branching; a sentence of fewer than 32 words has at most 30 of them, so
# int64 keys cover every length_limit up to 64.
_MAX_PATH_BITS = 62


@dataclass(frozen=True)
class _SamplingTable:
    """Every rule of every left-hand side in one inverse-CDF table.

    Rules are grouped by left-hand side ``a``; ``edges`` holds, for each ``a``
    in turn, ``a + F_a(j)`` for the inner cumulative edges of its rules and
    then ``a + 1``.  ``searchsorted(edges, a + u, "right")`` for ``u ~ U[0, 1)``
    is then the global index of the rule chosen for ``a`` (proportionally to
    the stored probabilities, like the original ``random.choices``), so one
    call draws a rule for every open nonterminal of a batch at once.
    """

    start: int
    edges: np.ndarray  # (R,) float64
    guide: np.ndarray  # (N, _GUIDE) searchsorted(edges, a + m / _GUIDE, "right"): where a search may start
    last: np.ndarray  # (N,) global index of each left-hand side's last rule
    kind: np.ndarray  # (R,) 0 = word, 1 = unary, 2 = binary
    first: np.ndarray  # (R,) word id, unary child or left child
    second: np.ndarray  # (R,) right child of binary rules (else -1)


@lru_cache(maxsize=16)
def _sampling_table(grammar: Grammar) -> _SamplingTable:
    n = grammar.n_nonterminals
    options: list[list[tuple[float, int, int, int]]] = [[] for _ in range(n)]
    for (a, w), lp in zip(grammar.lexical_rules.tolist(), grammar.lexical_log_probs.tolist()):
        options[a].append((float(np.exp(lp)), 0, w, -1))
    for (a, b), lp in zip(grammar.unary_rules.tolist(), grammar.unary_log_probs.tolist()):
        options[a].append((float(np.exp(lp)), 1, b, -1))
    for (a, b, c), lp in zip(grammar.binary_rules.tolist(), grammar.binary_log_probs.tolist()):
        options[a].append((float(np.exp(lp)), 2, b, c))
    edges, last, kind, first, second = [], [], [], [], []
    for a, rules in enumerate(options):
        weights = np.array([p for p, *_ in rules])
        cdf = np.cumsum(weights) / weights.sum() if len(rules) else np.zeros(0)
        edges.extend((a + cdf[:-1]).tolist())
        edges.append(a + 1.0)
        last.append(len(kind) + len(rules) - 1)
        for _, k, b, c in rules:
            kind.append(k)
            first.append(b)
            second.append(c)
    edge_array = np.asarray(edges)
    bucket_starts = np.arange(n)[:, None] + np.arange(_GUIDE)[None, :] / _GUIDE  # exact in float64
    return _SamplingTable(
        start=grammar.start,
        edges=edge_array,
        guide=np.searchsorted(edge_array, bucket_starts, side="right"),
        last=np.asarray(last, dtype=np.int64),
        kind=np.asarray(kind, dtype=np.int8),
        first=np.asarray(first, dtype=np.int32),
        second=np.asarray(second, dtype=np.int32),
    )


def _block_generator(seed: int, stream: int, block: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=seed, spawn_key=(stream, block))))


def _sample_round(table: _SamplingTable, rng: np.random.Generator, size: int, length_limit: int) -> list[np.ndarray]:
    """Draw ``size`` candidate sentences top-down, one tree level at a time; keep those shorter than ``length_limit``.

    Only open nonterminals are carried from level to level, each with its
    sentence and its path from the root as bits (left = 0, right = 1) plus
    the number of binary branchings on it.  Left-aligned, the path is the
    word's position key, so sorting the emitted words by (sentence, key)
    gives every sentence in left-to-right order.  A sentence has
    ``1 + (binary expansions so far)`` items (open symbols plus words), each
    yielding at least one word, so it is rejected as soon as that reaches
    ``length_limit`` (the original ``len < limit`` filter).  Each open node
    uses one uniform, drawn level by level in node order.
    """
    # Beyond 62 branchings the keys no longer fit in int64: use Python integers (slow, but exact).
    wide = length_limit - 2 > _MAX_PATH_BITS
    path_bits = length_limit if wide else _MAX_PATH_BITS
    symbols = np.full(size, table.start, dtype=np.int64)
    owner = np.arange(size, dtype=np.int64)
    path = np.zeros(size, dtype=object if wide else np.int64)
    depth = np.zeros(size, dtype=np.int64)
    items = np.ones(size, dtype=np.int64)  # open symbols + words per sentence
    rejected = np.zeros(size, dtype=bool)
    word_owner, word_key, word_id = [], [], []
    while len(symbols):
        rules = _choose_rules(table, symbols, rng.random(len(symbols)))
        kinds = table.kind[rules]
        first = table.first[rules]
        lexical = kinds == 0
        word_owner.append(owner[lexical])
        word_key.append(path[lexical] << (path_bits - depth[lexical]))
        word_id.append(first[lexical])
        binary = kinds == 2
        if binary.any():
            items += np.bincount(owner[binary], minlength=size)
            rejected |= items >= length_limit
        unary = kinds == 1
        b_owner, b_path, b_depth = owner[binary], path[binary] << 1, depth[binary] + 1
        symbols = np.concatenate([first[unary], first[binary], table.second[rules[binary]]])
        owner = np.concatenate([owner[unary], b_owner, b_owner])
        path = np.concatenate([path[unary], b_path, b_path | 1])
        depth = np.concatenate([depth[unary], b_depth, b_depth])
        alive = ~rejected[owner]
        if not alive.all():
            symbols, owner, path, depth = symbols[alive], owner[alive], path[alive], depth[alive]
    owners = np.concatenate(word_owner)
    keep = ~rejected[owners]
    owners, keys, words = owners[keep], np.concatenate(word_key)[keep], np.concatenate(word_id)[keep]
    if wide:
        order = np.asarray(sorted(range(len(keys)), key=lambda i: (owners[i], keys[i])), dtype=np.int64)
    else:
        order = np.lexsort((keys, owners))
    owners, words = owners[order], words[order].astype(np.int32)
    if not len(words):
        return []
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(owners)) + 1, [len(words)]]).tolist()
    return [words[a:b] for a, b in itertools.pairwise(bounds)]


def _choose_rules(table: _SamplingTable, symbols: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """``searchsorted(edges, symbols + uniforms, "right")`` (clamped to each symbol's rules), via the guide table."""
    targets = symbols + uniforms
    rules = table.guide[symbols, (uniforms * _GUIDE).astype(np.int64)]
    last = table.last[symbols]
    rules = np.minimum(rules, last)
    while True:
        behind = (table.edges[rules] <= targets) & (rules < last)
        if not behind.any():
            return rules
        rules[behind] += 1


def _sample_block(table: _SamplingTable, rng: np.random.Generator, count: int, length_limit: int) -> list[np.ndarray]:
    """The first ``count`` sentences of a block (always the same for the same stream)."""
    sentences: list[np.ndarray] = []
    drawn = 0
    round_number = 0
    while len(sentences) < count:
        size = min(SAMPLER_BLOCK_SIZE << round_number, _MAX_ROUND)
        kept = _sample_round(table, rng, size, length_limit)
        sentences.extend(kept)
        drawn += size
        round_number += 1
        if len(sentences) < count and drawn - len(sentences) > _MAX_REJECTIONS_PER_SENTENCE * count:
            raise SamplingError(f"could not draw sentences shorter than {length_limit} words; raise length_limit")
    return sentences[:count]


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
