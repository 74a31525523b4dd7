"""The dependency nesting language (Ri & Tsuruoka 2022), span-corrupted as Wu et al. 2022 used it.

Spec §3 (Ri's `dependency_nesting_zipf` config). A sentence is built from h base types t drawn
from a Zipf distribution; each type gives a head symbol "(t" and a dependent symbol "t)", and
the 2h symbols are arranged so that every dependent closes the most recent unclosed head (a
typed Dyck word). Symbol ids: head(t) = data_lo + 2t, dependent(t) = data_lo + 2t + 1, a
bijection into the layout's data ids, so 0 (pad, which T5's concatenation would silently
delete), 1 (eos) and the sentinels are never emitted (spec §3.7).

Wu et al. then apply T5 span corruption (spec §3.5, `span_corruption.py`): sentences are
concatenated 128 at a time with no separator, cut into raw windows, and span-corrupted. (T5's
first step, select_random_chunk of at most 65,536 tokens, never cuts a sentence of <= 62
symbols, so it is omitted.)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline_lib.data.ragged import Ragged, stack
from pipeline_lib.data.span_corruption import (
    concat_groups,
    span_corrupt_windows,
    split_into_windows,
    split_lengths_for_targets,
)
from pipeline_lib.data.vocab import NUM_EXTRA_IDS, VocabLayout

#: Ri's empirical sentence-length counts (fit on English Wikipedia), index = base length L.
#: Lengths 0-5 never occur; the counts sum to 10,000 (spec §3.3).
EMPIRICAL_LENGTH_COUNTS: tuple[int, ...] = (
    (0,) * 6
    + (303, 303, 342, 308, 275, 310, 337, 356, 340, 309)  # 6-15
    + (321, 358, 319, 331, 343, 310, 310, 350, 284, 284)  # 16-25
    + (307, 252, 246, 255, 209, 207, 177, 168, 165, 128)  # 26-35
    + (149, 133, 109, 123, 102, 99, 81, 81, 73, 60)  # 36-45
    + (61, 44, 43, 43, 52, 39, 26, 30, 29, 24)  # 46-55
    + (34, 18, 8, 17, 15)  # 56-60
)

#: AMBIGUOUS (spec §3.7): Wu's data folder is named 32000, most plausibly Ri's vocab_size raised
#: to 32,000 symbols = 16,000 pairs. The paper layout has only 31,998 data ids (2..31999), so
#: the default (num_pairs=None) takes min(16000, data ids // 2) = 15,999 pairs there: a
#: bijection, which the spec recommends over accepting one collision.
PAPER_NUM_PAIRS = 16000
BASE_DISTRIBUTIONS = ("zipf", "uniform")


@dataclasses.dataclass(frozen=True)
class NestingParams:
    num_pairs: int | None = None  # None: min(PAPER_NUM_PAIRS, layout data ids // 2)
    open_prob: float = 0.4
    # AMBIGUOUS (spec §3.7): Zipf is the README's Nesting-Dep example; uniform is Ri's other
    # base language and is offered only as an ablation.
    base_distribution: str = "zipf"
    length_counts: tuple[int, ...] = EMPIRICAL_LENGTH_COUNTS
    concat: int = 128  # sentences per T5 concatenation (reduce_concat_tokens batch_size)
    inputs_length: int = 256  # T5 inputs feature length, EOS included
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0

    def __post_init__(self) -> None:
        # config files give a list; keep the params hashable and comparable
        object.__setattr__(self, "length_counts", tuple(int(c) for c in self.length_counts))
        if self.base_distribution not in BASE_DISTRIBUTIONS:
            raise ValueError(
                f"base_distribution must be one of {BASE_DISTRIBUTIONS}, "
                f"got {self.base_distribution!r}"
            )
        if self.num_pairs is not None and self.num_pairs < 1:
            raise ValueError(f"num_pairs must be positive, got {self.num_pairs}")
        if not 0.0 <= self.open_prob <= 1.0:
            raise ValueError(f"open_prob must be in [0, 1], got {self.open_prob}")
        if sum(self.length_counts) <= 0 or min(self.length_counts) < 0:
            raise ValueError("length_counts must be non-negative with a positive total")
        if self.concat < 1:
            raise ValueError(f"concat must be positive, got {self.concat}")


def nesting_min_data_vocab(params: NestingParams) -> int:
    """Data ids the layout must have: two per pair (with num_pairs=None, one pair suffices)."""
    return 2 * (params.num_pairs if params.num_pairs is not None else 1)


def resolve_num_pairs(params: NestingParams, layout: VocabLayout) -> int:
    available = layout.num_data_ids // 2
    if params.num_pairs is None:
        return min(PAPER_NUM_PAIRS, available)
    if params.num_pairs > available:
        raise ValueError(
            f"nesting: {params.num_pairs} pairs need {2 * params.num_pairs} data ids, the "
            f"{layout.name} layout has {layout.num_data_ids}"
        )
    return params.num_pairs


# --- base language --------------------------------------------------------------------------------
def zipf_weights(num_types: int) -> np.ndarray:
    """Ri's integer unigram weights: floor(N / rank), rank = t + 1."""
    return num_types // np.arange(1, num_types + 1, dtype=np.int64)


#: Largest total weight for which categorical draws go through a lookup table.
_MAX_LOOKUP_TABLE = 1 << 24


def _sample_categorical(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """Ri's sampler: u uniform in [0, sum w) -> the first index whose cumulative weight exceeds u.

    With integer weights that map is a table of sum(w) entries (index i repeated w_i times);
    a gather from it gives exactly what a binary search would, several times faster.
    """
    weights = np.asarray(weights, np.int64)
    total = int(weights.sum())
    draws = rng.integers(0, total, size)
    if total <= _MAX_LOOKUP_TABLE:
        table = np.repeat(np.arange(weights.size, dtype=np.int64), weights)
        return table[draws]
    return np.searchsorted(np.cumsum(weights), draws, side="right")


def sample_base_types(
    rng: np.random.Generator, size: int, num_types: int, distribution: str
) -> np.ndarray:
    weights = zipf_weights(num_types) if distribution == "zipf" else np.ones(num_types, np.int64)
    return _sample_categorical(rng, weights, size)


def sample_num_pairs_per_sentence(
    rng: np.random.Generator, n: int, length_counts: tuple[int, ...]
) -> np.ndarray:
    """h per sentence: base length L from the table, then h = max(floor(L/2) + Bern(0.5), 1).

    Ri draws L types and keeps the first h; the dropped draws are independent of the kept ones,
    so drawing only h types (below) gives the same distribution.
    """
    base_lengths = _sample_categorical(rng, np.asarray(length_counts, np.int64), n)
    return np.maximum(base_lengths // 2 + (rng.random(n) < 0.5), 1)


# --- nesting construction -------------------------------------------------------------------------
def _segment_cumsum(x: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum (int32) restarting at every row start (flat rows, non-empty)."""
    total = np.cumsum(x, dtype=np.int32)
    total -= np.repeat(total[starts] - x[starts], lengths)
    return total


def nesting_moves(rng: np.random.Generator, h: np.ndarray, open_prob: float) -> np.ndarray:
    """Flat bool over every sentence's 2h moves (sentence-major), True = open (emit a head).

    Ri's build_nesting_parenthesis, per step: open if nothing is open or a coin U < open_prob
    says so, else close the most recent open head; once all h pairs are open, close the rest.
    Before that point the depth is the walk of the coins (+1 / -1) reflected at 0 so that a
    "close" at depth 0 becomes an open. That reflection is closed-form: depth = walk +
    2 * ceil(-min(0, running minimum of walk) / 2) (each time the walk reaches a new odd low,
    -1, -3, ..., the reflection has added another 2), so a few segmented scans replace the
    per-step loop. Coin k of a sentence decides its step k; coins drawn at depth 0 go unused,
    as Ri's short-circuit never draws them, which does not change the distribution.
    """
    if (h < 1).any():
        raise ValueError("every sentence needs at least one pair")
    lengths = 2 * h
    starts = np.cumsum(lengths) - lengths
    step_sign = (rng.random(int(lengths.sum())) < open_prob).astype(np.int32) * 2 - 1
    walk = _segment_cumsum(step_sign, starts, lengths)
    # segmented running minimum: shifting every sentence below all earlier ones (|walk| <= 2h)
    # makes one plain running minimum restart at each sentence start
    gap = 4 * int(h.max(initial=0)) + 1
    shift_dtype = np.int32 if gap * h.size < 2**31 else np.int64
    shift = np.repeat(np.arange(h.size, dtype=shift_dtype) * gap, lengths)
    lowest = np.minimum(np.minimum.accumulate(walk - shift) + shift, 0)
    free_depth = walk + (((1 - lowest) >> 1) << 1)
    depth_before = np.empty_like(free_depth)
    depth_before[1:] = free_depth[:-1]
    depth_before[starts] = 0
    free_open = free_depth > depth_before
    opens_before = _segment_cumsum(free_open, starts, lengths) - free_open
    return free_open & (opens_before < np.repeat(h.astype(np.int32), lengths))


def pair_moves(is_open: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(opens, closes): flat indices of matching moves, closes[i] closing opens[i].

    In a Dyck word the moves at one nesting level of one sentence alternate open, close,
    open, close, ... and each close matches the open just before it at that level (level =
    depth before an open, after a close). A stable sort by level keeps sentence and position
    order, so sorted moves pair up consecutively.
    """
    starts = np.cumsum(lengths) - lengths
    depth_after = _segment_cumsum(is_open.astype(np.int32) * 2 - 1, starts, lengths)
    level = depth_after - is_open
    small = level.max(initial=0) < 256
    order = np.argsort(level.astype(np.uint8 if small else np.int64), kind="stable")
    return order[0::2], order[1::2]


def nesting_sentences(
    rng: np.random.Generator, n: int, params: NestingParams, layout: VocabLayout
) -> Ragged:
    """n sentences of the nesting language as layout data ids (never 0, 1 or a sentinel).

    Symbol codes: head(t) = 2t, dependent(t) = 2t + 1, shifted to start at layout.data_lo.
    Ri draws h iid base types per sentence and pops them from the end of the list as heads
    open; here the iid types are handed to the pairs in `pair_moves` order instead, which is
    the same distribution without a per-sentence reordering.
    """
    num_pairs = resolve_num_pairs(params, layout)
    h = sample_num_pairs_per_sentence(rng, n, params.length_counts)
    lengths = 2 * h
    opens, closes = pair_moves(nesting_moves(rng, h, params.open_prob), lengths)
    types = sample_base_types(rng, opens.size, num_pairs, params.base_distribution)
    ids = np.empty(2 * opens.size, np.int64)
    ids[opens] = layout.data_lo + 2 * types
    ids[closes] = layout.data_lo + 2 * types + 1
    return Ragged.from_lengths(ids, lengths)


# --- span-corrupted corpus ------------------------------------------------------------------------
#: Windows span-corrupted per batch: bounds the [windows, window_length] scratch matrices.
_WINDOWS_PER_BATCH = 16384


def _expected_sentence_length(params: NestingParams) -> float:
    counts = np.asarray(params.length_counts, np.float64)
    base_lengths = np.arange(counts.size)
    pairs = 0.5 * (np.maximum(base_lengths // 2, 1) + np.maximum(base_lengths // 2 + 1, 1))
    return float(2 * (counts * pairs).sum() / counts.sum())


def _raw_windows(
    rng: np.random.Generator,
    n: int,
    layout: VocabLayout,
    params: NestingParams,
    window: int,
) -> Ragged:
    """At least n raw windows: whole groups of `concat` sentences, each split like split_tokens."""
    tokens_per_group = params.concat * _expected_sentence_length(params)
    # E[ceil(T / W)] ~ T / W + 1/2 (the final, shorter window); an overestimate only costs
    # another (small) round of sentences, an underestimate discards a few surplus windows
    windows_per_group = tokens_per_group / window + 0.5
    parts: list[Ragged] = []
    have = 0
    while have < n:
        groups = max(1, int(np.ceil((n - have) / windows_per_group)))
        sentences = nesting_sentences(rng, groups * params.concat, params, layout)
        windows = split_into_windows(concat_groups(sentences, params.concat), window)
        parts.append(windows)
        have += windows.n
    return stack(parts)


def generate_nesting(
    rng: np.random.Generator,
    n: int,
    layout: VocabLayout,
    params: NestingParams = NestingParams(),
) -> tuple[Ragged, Ragged]:
    """Exactly n span-corrupted examples (inputs, targets), no EOS.

    Windows are taken in stream order; T5 keeps the shorter final window of each 128-sentence
    concatenation (split_tokens), and so does this. The windows beyond n of the last round of
    sentences are discarded. Inputs are at most inputs_length - 1 tokens and targets at most
    targets_length - 1 (the loader's EOS makes up the difference).
    """
    window, _ = split_lengths_for_targets(
        params.inputs_length, params.noise_density, params.mean_noise_span_length
    )
    sentinels = np.array([layout.extra_id(k) for k in range(NUM_EXTRA_IDS)], np.int64)
    inputs_parts: list[Ragged] = []
    targets_parts: list[Ragged] = []
    done = 0
    while done < n:
        batch = min(_WINDOWS_PER_BATCH, n - done)
        windows = _raw_windows(rng, batch, layout, params, window).take(np.arange(batch))
        inputs, targets = span_corrupt_windows(
            rng, windows, sentinels, params.noise_density, params.mean_noise_span_length
        )
        inputs_parts.append(inputs)
        targets_parts.append(targets)
        done += batch
    return stack(inputs_parts), stack(targets_parts)
