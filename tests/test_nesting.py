"""Nesting language and T5 span corruption (spec §3, T5 preprocessors)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_lib.data import nesting as nest
from pipeline_lib.data import span_corruption as sc
from pipeline_lib.data.ragged import Ragged
from pipeline_lib.data.vocab import NUM_EXTRA_IDS, laptop_layout, paper_layout

PAPER = paper_layout()
LAPTOP = laptop_layout(1024)
SENTINELS = [PAPER.extra_id(k) for k in range(NUM_EXTRA_IDS)]
FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def is_well_nested(codes: list[int]) -> bool:
    """Every dependent (odd code 2t+1) closes the most recent unclosed head of type t."""
    stack: list[int] = []
    for c in codes:
        if c % 2 == 0:
            stack.append(c // 2)
        elif not stack or stack.pop() != c // 2:
            return False
    return not stack


def ri_nesting_moves(h: int, coins: list[float], open_prob: float) -> list[bool]:
    """Ri's build_nesting_parenthesis as written (the coin of step k is coins[k])."""
    todo, opened, moves = h, 0, []
    for coin in coins:
        if todo == 0:
            break
        if opened == 0 or coin < open_prob:
            todo, opened = todo - 1, opened + 1
            moves.append(True)
        else:
            opened -= 1
            moves.append(False)
    return moves + [False] * opened


# --- base language --------------------------------------------------------------------------------
def test_zipf_weights():
    w = nest.zipf_weights(8000)
    assert w[:4].tolist() == [8000, 4000, 2666, 2000] and w[-1] == 1
    share = w / w.sum()
    assert abs(share[0] - 0.109) < 0.001 and abs(share[:10].sum() - 0.32) < 0.005
    types = nest.sample_base_types(rng(1), 200_000, 50, "zipf")
    expected = nest.zipf_weights(50) / nest.zipf_weights(50).sum()
    observed = np.bincount(types, minlength=50) / types.size
    assert np.abs(observed - expected).max() < 0.004
    uniform = nest.sample_base_types(rng(1), 100_000, 10, "uniform")
    assert np.abs(np.bincount(uniform) / 1e5 - 0.1).max() < 0.006


def test_categorical_lookup_table_equals_binary_search(monkeypatch):
    weights = nest.zipf_weights(300)
    table = nest._sample_categorical(rng(2), weights, 5000)
    monkeypatch.setattr(nest, "_MAX_LOOKUP_TABLE", 0)
    assert np.array_equal(table, nest._sample_categorical(rng(2), weights, 5000))


def test_length_table_and_sentence_lengths():
    counts = np.array(nest.EMPIRICAL_LENGTH_COUNTS)
    assert (
        counts.size == 61 and counts.sum() == 10_000 and not counts[:6].any() and counts[6] == 303
    )
    h = nest.sample_num_pairs_per_sentence(rng(3), 100_000, nest.EMPIRICAL_LENGTH_COUNTS)
    assert h.min() == 3 and h.max() == 31  # floor(6/2) .. floor(60/2) + 1
    assert abs(2 * h.mean() - 23.2) < 0.1
    sentences = nest.nesting_sentences(rng(3), 20_000, nest.NestingParams(), PAPER)
    assert set(np.unique(sentences.lengths).tolist()) <= set(range(6, 63, 2))
    assert abs(sentences.lengths.mean() - 23.2) < 0.2


# --- nesting construction -------------------------------------------------------------------------
@pytest.mark.parametrize("open_prob", [0.0, 0.4, 0.9, 1.0])
def test_moves_equal_ris_loop_with_the_same_coins(open_prob):
    h = nest.sample_num_pairs_per_sentence(rng(4), 2000, nest.EMPIRICAL_LENGTH_COUNTS)
    moves = nest.nesting_moves(rng(5), h, open_prob)
    coins = rng(5).random(int(2 * h.sum())).tolist()
    start = 0
    for k in h.tolist():
        expected = ri_nesting_moves(k, coins[start : start + 2 * k], open_prob)
        assert moves[start : start + 2 * k].tolist() == expected
        start += 2 * k


def test_extreme_open_probabilities():
    h = np.array([4])
    assert nest.nesting_moves(rng(), h, 1.0).tolist() == [True] * 4 + [False] * 4
    assert nest.nesting_moves(rng(), h, 0.0).tolist() == [True, False] * 4


def test_sentences_are_well_nested_and_pairs_match():
    sentences = nest.nesting_sentences(rng(6), 5000, nest.NestingParams(), LAPTOP)
    for row in sentences.to_rows():
        assert is_well_nested([t - LAPTOP.data_lo for t in row])
    h = np.array([3, 1, 5])
    moves = nest.nesting_moves(rng(7), h, 0.4)
    opens, closes = nest.pair_moves(moves, 2 * h)
    assert moves[opens].all() and not moves[closes].any() and (opens < closes).all()
    # the same sentence: closes never pair across sentence boundaries
    bounds = np.cumsum(2 * h)
    assert (
        np.searchsorted(bounds, opens, "right") == np.searchsorted(bounds, closes, "right")
    ).all()


def test_symbol_ids_are_a_bijection_into_data_ids():
    params = nest.NestingParams()
    assert nest.resolve_num_pairs(params, PAPER) == 15_999  # min(16000, 31998 // 2)
    assert nest.resolve_num_pairs(params, LAPTOP) == 512
    assert nest.resolve_num_pairs(nest.NestingParams(num_pairs=100), LAPTOP) == 100
    with pytest.raises(ValueError):
        nest.resolve_num_pairs(nest.NestingParams(num_pairs=513), LAPTOP)
    assert nest.nesting_min_data_vocab(nest.NestingParams(num_pairs=100)) == 200
    small = laptop_layout(12)  # 6 pairs: every symbol gets used
    sentences = nest.nesting_sentences(rng(8), 3000, nest.NestingParams(), small)
    values = np.unique(sentences.values)
    assert values.tolist() == list(range(small.data_lo, small.data_lo + 12))
    forbidden = {small.pad_id, small.eos_id} | {small.extra_id(k) for k in range(NUM_EXTRA_IDS)}
    assert not forbidden & set(values.tolist())
    paper = nest.nesting_sentences(rng(8), 3000, params, PAPER)
    assert paper.values.min() >= 2 and paper.values.max() < 32000


# --- span corruption ------------------------------------------------------------------------------
def test_split_lengths_match_t5():
    assert sc.split_lengths_for_targets(256, 0.15, 3.0) == (284, 58)
    assert sc.split_lengths_for_targets(512, 0.15, 3.0) == (568, 114)
    assert sc.split_lengths_for_targets(128, 0.5, 3.0)[1] <= 128  # T5's 0.5 hack


def test_noise_span_counts_use_float32_like_t5():
    assert sc.noise_span_counts(284, 0.15, 3.0) == (43, 14)
    assert sc.noise_span_counts(568, 0.15, 3.0) == (85, 28)
    assert sc.noise_span_counts(190, 0.15, 3.0)[0] == 29  # float64 would round 28.5 to 28
    assert sc.noise_span_counts(1, 0.15, 3.0) == (1, 1)  # length raised to 2


@FAST
@given(
    length=st.integers(0, 700),
    density=st.sampled_from([0.15, 0.3, 0.5]),
    mean_span=st.sampled_from([1.0, 3.0, 5.5]),
    seed=st.integers(0, 2**16),
)
def test_noise_mask_invariants(length, density, mean_span, seed):
    num_noise, num_spans = sc.noise_span_counts(length, density, mean_span)
    if length and max(length, 2) - num_noise < num_spans:  # T5 cannot build such a mask
        with pytest.raises(ValueError):
            sc.random_spans_noise_mask(rng(seed), length, density, mean_span)
        return
    mask = sc.random_spans_noise_mask(rng(seed), length, density, mean_span)
    assert mask.shape == (length,) and mask.dtype == bool
    if length < 2:
        assert not mask.any()
        return
    assert mask.sum() == num_noise
    starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
    assert starts.size == num_spans
    assert not mask[0] and mask[-1]  # non-noise first, noise last


def test_noise_masks_are_uniform_over_arrangements():
    # 40 tokens: 6 noise tokens in 2 spans, 34 non-noise tokens in 2 spans; every split is
    # equally likely, so the first noise span has 1..5 tokens and the leading non-noise span
    # 1..33, uniformly
    masks = sc.random_spans_noise_masks(rng(9), 5000, 40, 0.15, 3.0)
    lead = np.argmax(masks, axis=1)
    first_noise = np.array([np.argmin(m[s:]) for m, s in zip(masks, lead)])
    assert np.array_equal(np.unique(first_noise), np.arange(1, 6))
    assert np.abs(np.bincount(first_noise)[1:] / 5000 - 0.2).max() < 0.025
    assert lead.min() == 1 and lead.max() == 33 and abs(lead.mean() - 17) < 0.5


def reconstruct(inputs: list[int], targets: list[int], sentinels: list[int]) -> list[int]:
    """Put every target span back at its sentinel in the inputs."""
    spans: dict[int, list[int]] = {}
    current = None
    for t in targets:
        if t in sentinels:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out: list[int] = []
    for t in inputs:
        out.extend(spans[t] if t in sentinels else [t])
    return out


@FAST
@given(
    tokens=st.lists(st.integers(2, 500), min_size=0, max_size=400),
    density=st.sampled_from([0.15, 0.3]),
    seed=st.integers(0, 2**16),
)
def test_span_corruption_round_trip(tokens, density, seed):
    inputs, targets = sc.span_corruption(
        rng(seed), np.array(tokens, np.int64), SENTINELS, density, 3.0
    )
    assert reconstruct(inputs.tolist(), targets.tolist(), SENTINELS) == tokens
    used = [t for t in inputs.tolist() if t in SENTINELS]
    assert used == SENTINELS[: len(used)], "extra_id_0, extra_id_1, ... in order"
    if len(tokens) == 1:  # T5: too short for noise; the lone non-noise span still gets s0
        assert inputs.tolist() == tokens and targets.tolist() == SENTINELS[:1]
    if len(tokens) >= 2:
        assert [t for t in targets.tolist() if t in SENTINELS] == used
        num_noise, num_spans = sc.noise_span_counts(len(tokens), density, 3.0)
        assert len(inputs) == len(tokens) - num_noise + num_spans
        assert len(targets) == num_noise + num_spans
        assert targets[0] == SENTINELS[0]


@FAST
@given(
    lengths=st.lists(st.integers(0, 300), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_batched_corruption_equals_per_window_semantics(lengths, seed):
    values = rng(seed).integers(2, 1000, sum(lengths))
    windows = Ragged.from_lengths(values, np.array(lengths))
    inputs, targets = sc.span_corrupt_windows(rng(seed), windows, SENTINELS)
    assert inputs.n == targets.n == len(lengths)
    for i in range(windows.n):
        assert (
            reconstruct(inputs.row(i).tolist(), targets.row(i).tolist(), SENTINELS)
            == windows.row(i).tolist()
        )


def test_degenerate_mask_parameters_are_an_error():
    # 3 tokens, density 0.5, spans of 1: 2 noise spans but 1 non-noise token (T5 fails too)
    with pytest.raises(ValueError):
        sc.random_spans_noise_mask(rng(), 3, 0.5, 1.0)


def test_too_few_sentinels_is_an_error():
    with pytest.raises(ValueError):
        sc.span_corruption(rng(), np.arange(2, 300), SENTINELS[:3])


def test_concat_groups_and_split_into_windows():
    rows = Ragged.from_lengths(np.arange(12), np.array([3, 4, 5]))
    groups = sc.concat_groups(rows, 2)
    assert groups.to_rows() == [list(range(7)), list(range(7, 12))]
    windows = sc.split_into_windows(groups, 3)
    assert windows.to_rows() == [[0, 1, 2], [3, 4, 5], [6], [7, 8, 9], [10, 11]]
    assert sc.split_into_windows(Ragged.from_lengths(np.arange(0), np.array([0])), 3).n == 0


# --- the span-corrupted corpus --------------------------------------------------------------------
def test_generate_nesting_examples():
    params = nest.NestingParams()
    inputs, targets = nest.generate_nesting(rng(10), 600, PAPER, params)
    assert inputs.n == targets.n == 600
    assert inputs.lengths.max() <= 255 and targets.lengths.max() <= 57  # + EOS = 256 / 58
    full = inputs.lengths == 255
    assert 0.8 < full.mean() < 0.97  # ~1 shorter final window per 128-sentence group
    for i in range(inputs.n):
        window = np.array(reconstruct(inputs.row(i).tolist(), targets.row(i).tolist(), SENTINELS))
        assert window.size <= 284
        if full[i]:
            assert window.size == 284 and targets.row(i).size == 57
        # only symbol ids: 15,999 pairs from id 2 on, no sentinel, pad or eos
        assert window.min() >= 2 and window.max() < 2 + 2 * 15_999


def test_generate_nesting_reconstructs_the_sentence_stream():
    params = nest.NestingParams(concat=16, inputs_length=64)
    window, _ = sc.split_lengths_for_targets(64, 0.15, 3.0)
    inputs, targets = nest.generate_nesting(rng(11), 40, LAPTOP, params)
    sentinels = [LAPTOP.extra_id(k) for k in range(NUM_EXTRA_IDS)]
    windows = [reconstruct(i, t, sentinels) for i, t in zip(inputs.to_rows(), targets.to_rows())]
    # consecutive windows rebuild whole groups: a short window ends a group, whose symbols
    # form 16 well-nested sentences back to back, i.e. one well-nested word
    group: list[int] = []
    closed = 0
    for w in windows:
        assert len(w) <= window
        group += w
        if len(w) < window:
            assert is_well_nested([t - LAPTOP.data_lo for t in group])
            group, closed = [], closed + 1
    assert closed >= 2


def test_generate_nesting_is_deterministic():
    a = nest.generate_nesting(rng(12), 100, LAPTOP)
    b = nest.generate_nesting(rng(12), 100, LAPTOP)
    c = nest.generate_nesting(rng(13), 100, LAPTOP)
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    assert not a[0].equals(c[0])
