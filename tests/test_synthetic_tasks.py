"""Vectorised samplers and task functions against the per-example reference and invariants."""

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_lib.data.ragged import Ragged
from pipeline_lib.data.synthetic import (
    SIMPLE_TASKS,
    generate_simple,
    sampler_spec,
    split_arguments,
    strip_prefix,
)
from pipeline_lib.data.synthetic_reference import REFERENCE, reference_example
from pipeline_lib.data.vocab import laptop_layout

LAYOUT = laptop_layout(16)  # tiny vocabulary: many repeats, collisions and ties
WD = LAYOUT.word_divider
LENGTHS = (10, 40)

small_tokens = st.integers(LAYOUT.data_lo, LAYOUT.data_lo + 5)
seq_st = st.lists(small_tokens, min_size=1, max_size=12)


def _vectorised(task_id, *rows_per_arg):
    args = tuple(Ragged.from_rows(rows) for rows in rows_per_arg)
    return SIMPLE_TASKS[task_id].target(*args, LAYOUT).fill_empty(LAYOUT.empty_marker).to_rows()


def _reference(task_id, *rows_per_arg):
    fn = REFERENCE[task_id][1]
    return [fn(*row_args, LAYOUT) or [LAYOUT.empty_marker] for row_args in zip(*rows_per_arg)]


UNARY = ["identity", "reverse", "duplicate", "first_token", "last_token", "length", "set",
         "deduplicate"]
SET_OPS = ["union", "intersect", "set1_minus_set2", "set2_minus_set1"]


@pytest.mark.parametrize("task_id", UNARY)
@given(rows=st.lists(seq_st, min_size=1, max_size=6))
def test_unary_tasks_match_reference(task_id, rows):
    assert _vectorised(task_id, rows) == _reference(task_id, rows)


@given(st.lists(st.lists(st.one_of(small_tokens, st.just(WD)), max_size=14), min_size=1,
                max_size=6))
def test_longest_word_matches_reference(rows):
    assert _vectorised("longest_word", rows) == _reference("longest_word", rows)


@pytest.mark.parametrize("task_id", SET_OPS)
@given(a=st.lists(st.lists(small_tokens, max_size=10), min_size=1, max_size=5), data=st.data())
def test_set_ops_match_reference(task_id, a, data):
    b = data.draw(st.lists(st.lists(small_tokens, max_size=10), min_size=len(a), max_size=len(a)))
    assert _vectorised(task_id, a, b) == _reference(task_id, a, b)


@pytest.mark.parametrize("task_id", ["search", "delete"])
@given(seqs=st.lists(st.lists(small_tokens, max_size=12), min_size=1, max_size=6), data=st.data())
def test_query_tasks_match_reference(task_id, seqs, data):
    queries = [data.draw(st.lists(small_tokens, min_size=1, max_size=3)) for _ in seqs]
    assert _vectorised(task_id, seqs, queries) == _reference(task_id, seqs, queries)


@given(seqs=st.lists(seq_st, min_size=1, max_size=6), data=st.data())
def test_count_replace_sort_match_reference(seqs, data):
    q = [[data.draw(small_tokens)] for _ in seqs]
    assert _vectorised("count", seqs, q) == _reference("count", seqs, q)
    kv = [[data.draw(st.sampled_from(s)), data.draw(small_tokens)] for s in seqs]
    assert _vectorised("replace", seqs, kv) == _reference("replace", seqs, kv)
    orders = [data.draw(st.permutations(sorted(set(s)) * 2)) for s in seqs]  # duplicated order
    assert _vectorised("sort", seqs, orders) == _reference("sort", seqs, orders)


def test_sort_uses_last_index_of_duplicated_order_token():
    # order [a b a]: a's position is 2 (its last index), so b sorts before a
    a, b = LAYOUT.data_lo, LAYOUT.data_lo + 1
    assert _vectorised("sort", [[a, b, a, b]], [[a, b, a]]) == [[b, b, a, a]]


def test_quirks_on_hand_made_cases():
    a, b, c = LAYOUT.data_lo, LAYOUT.data_lo + 1, LAYOUT.data_lo + 2
    assert _vectorised("set", [[b, a, b, c, a]]) == [[b, a, c]]  # first occurrences
    assert _vectorised("deduplicate", [[a, a, b, b, b, c, b, b]]) == [[a, b, c, b]]  # adjacent
    assert _vectorised("delete", [[a, b, a, b]], [[a, b]]) == [[a, b]]  # first occurrence only
    assert _vectorised("delete", [[a, a]], [[b]]) == [[a, a]]  # absent: unchanged
    assert _vectorised("delete", [[a, b]], [[a, b]]) == [[LAYOUT.empty_marker]]  # empty marker
    assert _vectorised("intersect", [[a]], [[b]]) == [[LAYOUT.empty_marker]]
    assert _vectorised("longest_word", [[a, WD, b, c, WD, c, a]]) == [[b, c]]  # first longest


# --- samplers --------------------------------------------------------------------------------
@pytest.mark.parametrize("task_id", sorted(SIMPLE_TASKS))
def test_generated_examples_follow_the_task(task_id):
    layout = laptop_layout(64)
    inputs, targets = generate_simple(task_id, np.random.default_rng(1), 400, layout, LENGTHS)
    assert inputs.n == targets.n == 400
    task = SIMPLE_TASKS[task_id]
    data = strip_prefix(task, inputs, layout)
    assert data.lengths.min() >= LENGTHS[0] and data.lengths.max() <= LENGTHS[1]
    args = split_arguments(task, data, layout)
    fn = REFERENCE[task_id][1]
    expected = [fn(*[a.row(i).tolist() for a in args], layout) or [layout.empty_marker]
                for i in range(inputs.n)]
    assert targets.to_rows() == expected
    tokens = np.concatenate([a.values for a in args])
    is_data = (tokens >= layout.data_lo) & (tokens < layout.data_hi)
    assert (is_data | (tokens == layout.word_divider)).all()


def test_generation_is_deterministic_and_seed_dependent():
    a = generate_simple("sort", np.random.default_rng(5), 300, LAYOUT, LENGTHS)
    b = generate_simple("sort", np.random.default_rng(5), 300, LAYOUT, LENGTHS)
    c = generate_simple("sort", np.random.default_rng(6), 300, LAYOUT, LENGTHS)
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    assert not a[0].equals(c[0])


def _distribution(task_id, n=4000):
    layout = laptop_layout(2000)
    inputs, targets = generate_simple(task_id, np.random.default_rng(2), n, layout, (10, 220))
    data = strip_prefix(SIMPLE_TASKS[task_id], inputs, layout)
    return layout, split_arguments(SIMPLE_TASKS[task_id], data, layout), targets


def _reference_distribution(task_id, n=4000):
    layout = laptop_layout(2000)
    r = random.Random(3)
    return [reference_example(task_id, r, layout, (10, 220), SIMPLE_TASKS[task_id].internal_name)
            for _ in range(n)]


@pytest.mark.parametrize("task_id,p_yes", [("search", 0.5)])
def test_search_yes_rate_matches_reference_sampler(task_id, p_yes):
    layout, _, targets = _distribution(task_id)
    yes = np.mean([t == list(layout.yes) for t in targets.to_rows()])
    ref = np.mean([t == list(layout.yes) for _, t in _reference_distribution(task_id)])
    # both estimate the same rate (after the length rejection, which removes many negatives)
    assert abs(yes - ref) < 0.04
    assert yes > p_yes  # rejection of over-long negatives tilts the mix towards positives


@pytest.mark.parametrize(
    "task_id", ["set", "deduplicate", "longest_word", "count", "delete", "sort", "union"]
)
def test_length_distribution_matches_reference_sampler(task_id):
    layout, args, targets = _distribution(task_id, 3000)
    ours = np.concatenate([[a.lengths for a in args][0], targets.lengths])
    ref = _reference_distribution(task_id, 3000)
    ref_inputs = [x for x, _ in ref]
    prefix = len(layout.prefix(SIMPLE_TASKS[task_id].internal_name)) + 1
    ref_first_arg = []
    for x in ref_inputs:
        data = x[prefix:]
        cut = data.index(layout.arg_divider) if layout.arg_divider in data else len(data)
        ref_first_arg.append(cut)
    ref_all = np.concatenate([ref_first_arg, [len(t) for _, t in ref]])
    # same mean and spread within a few standard errors
    se = ref_all.std() / np.sqrt(len(ref_all)) * 2
    assert abs(ours.mean() - ref_all.mean()) < 4 * se + 0.5
    assert abs(ours.std() - ref_all.std()) < 0.1 * ref_all.std() + 0.5


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_negative_queries_never_string_match(seed):
    layout = laptop_layout(12)  # tiny vocab: string matches are common and must be resampled
    spec = sampler_spec(layout, (4, 12))
    from pipeline_lib.data.synthetic_samplers import query_sequence

    seq, query = query_sequence(np.random.default_rng(seed), 200, spec, p_positive=0.0)
    for s, q in zip(seq.to_rows(), query.to_rows()):
        assert str(q)[1:-1] not in str(s)


def test_random_subset_mask_is_uniform_k_subset():
    from pipeline_lib.data.synthetic_samplers import _random_subset_mask

    n = 40000
    lengths = np.full(n, 4)
    k = np.full(n, 2)
    mask = _random_subset_mask(np.random.default_rng(0), lengths, k).reshape(n, 4)
    assert (mask.sum(axis=1) == 2).all()
    codes = mask @ np.array([8, 4, 2, 1])
    counts = np.unique(codes, return_counts=True)[1]
    assert counts.size == 6  # C(4,2) subsets, each about n/6 times
    assert np.all(np.abs(counts - n / 6) < 4 * np.sqrt(n / 6))
    ragged = _random_subset_mask(np.random.default_rng(1), np.array([3, 0, 5]), np.array([3, 0, 0]))
    assert ragged.tolist() == [True] * 3 + [False] * 5
