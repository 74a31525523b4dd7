"""LIME generator: formats, substitution semantics, set order, lengths, determinism (spec §1)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline_lib.data.lime import (
    LIME_MODES,
    LimeParams,
    generate_lime,
    lime_min_data_vocab,
    original_word_counts,
    draw_lime,
    used_in_set_order,
)
from pipeline_lib.data.vocab import laptop_layout, paper_layout

PAPER = paper_layout()
MARK = PAPER.lime_marker_ids


def split_at(row: list[int], marker: int) -> list[list[int]]:
    parts, current = [], []
    for token in row:
        if token == marker:
            parts.append(current)
            current = []
        else:
            current.append(token)
    parts.append(current)
    return parts


def parse_header(row: list[int], layout=PAPER) -> tuple[list[int], list[int], list[int], list[int]]:
    """(used, lower, math, rest of the input) of a LIME input, checking the header's layout:
    <UPPER> used(k) <LOWER> 24 <MATH> 20 <sep>, 48 + k tokens."""
    mark = layout.lime_marker_ids
    assert row[0] == mark["<UPPER>"]
    k = row.index(mark["<LOWER>"]) - 1
    assert row[1 + k] == mark["<LOWER>"] and row[26 + k] == mark["<MATH>"]
    assert row[47 + k] == mark["<sep>"]
    return row[1 : 1 + k], row[2 + k : 26 + k], row[27 + k : 47 + k], row[48 + k :]


def parse_substitution(s: list[int], layout=PAPER) -> list[tuple[int, list[int]]]:
    """`u : [ body ]` blocks -> [(u, body)] in order, checking the frame."""
    mark = layout.lime_marker_ids
    blocks, i = [], 0
    while i < len(s):
        u = s[i]
        assert s[i + 1] == mark[":"] and s[i + 2] == mark["["]
        end = s.index(mark["]"], i + 3)
        blocks.append((u, s[i + 3 : end]))
        i = end + 1
    return blocks


def substitute(pattern: list[int], blocks: list[tuple[int, list[int]]]) -> list[int]:
    table = dict(blocks)
    out: list[int] = []
    for token in pattern:
        out.extend(table.get(token, [token]))
    return out


def lime_parts(mode: str, inputs: list[int], target: list[int]) -> dict[str, list]:
    used, lower, math, rest = parse_header(inputs)
    first, second = split_at(rest, MARK["<sep>"])
    if mode == "induct":
        parts = dict(result=first, s=second, pattern=target)
    elif mode == "deduct":
        parts = dict(pattern=first, s=second, result=target)
    else:
        parts = dict(pattern=first, result=second, s=target)
    return dict(used=used, lower=lower, math=math, **parts)


def generate_rows(seed: int, n: int, mode: str, layout=PAPER, params=LimeParams()):
    inputs, targets = generate_lime(np.random.default_rng(seed), n, mode, layout, params)
    return inputs.to_rows(), targets.to_rows()


@pytest.mark.parametrize("mode", LIME_MODES)
def test_header_structure_and_symbol_groups(mode):
    for inputs, target in zip(*generate_rows(1, 300, mode)):
        p = lime_parts(mode, inputs, target)
        assert len(p["lower"]) == 24 and len(p["math"]) == 20
        assert 1 <= len(p["used"]) <= 5
        symbols = p["used"] + p["lower"] + p["math"]
        assert len(set(symbols)) == len(symbols), "the 68 symbols of an example are distinct"
        assert all(PAPER.data_lo <= t < PAPER.data_hi for t in symbols)
        assert MARK["<sep>"] not in p["pattern"] + p["result"] + p["s"]
        # the pattern uses exactly the header's variables, and only math symbols besides
        pattern_vars = {t for t in p["pattern"] if t not in p["math"]}
        assert pattern_vars == set(p["used"])
        assert set(p["pattern"]) <= set(p["used"]) | set(p["math"])


@pytest.mark.parametrize("mode", LIME_MODES)
def test_result_is_pattern_with_substitutions_applied(mode):
    for inputs, target in zip(*generate_rows(2, 300, mode)):
        p = lime_parts(mode, inputs, target)
        blocks = parse_substitution(p["s"])
        assert [u for u, _ in blocks] == p["used"], "S lists the variables in header order"
        allowed_body = set(p["lower"]) | set(p["math"])
        for _, body in blocks:
            assert 2 <= len(body) <= 8 and set(body) <= allowed_body
        assert substitute(p["pattern"], blocks) == p["result"]


def test_modes_of_one_draw_are_consistent():
    rows = {mode: generate_rows(3, 200, mode) for mode in LIME_MODES}
    for i in range(200):
        parts = {m: lime_parts(m, rows[m][0][i], rows[m][1][i]) for m in LIME_MODES}
        for key in ("used", "lower", "math", "pattern", "result", "s"):
            assert parts["induct"][key] == parts["deduct"][key] == parts["abduct"][key], key
        assert rows["induct"][1][i] == parts["deduct"]["pattern"]
        assert rows["deduct"][1][i] == parts["induct"]["result"]
        assert rows["abduct"][1][i] == parts["induct"]["s"]


def test_used_variables_follow_cpython_set_order():
    """The header order is list(set(pc)) for the (unseen) draw order of the occurrences pc:
    some insertion order of the used ids must give it; often it is neither the ascending
    order nor the order in which the variables first occur in the (shuffled) pattern."""
    inputs, targets = generate_rows(4, 2000, "induct")
    unsorted = not_first_occurrence = 0
    for row, pattern in zip(inputs, targets):
        used = parse_header(row)[0]
        assert any(list(set(p)) == used for p in itertools.permutations(used))
        unsorted += used != sorted(used)
        first_occurrence = list(dict.fromkeys(t for t in pattern if t in used))
        not_first_occurrence += used != first_occurrence
    assert unsorted > 100 and not_first_occurrence > 100


def test_set_order_depends_on_insertion_only_through_collisions():
    # variable ids: code 0 -> 9, code 1 -> 1 (both hash to slot 1 of CPython's 8-slot table),
    # code 2 -> 3, code 3 -> 8
    symbols = np.array([[9, 1, 3, 8, 40, 41]])
    num_chars = np.array([2])
    nine_first = used_in_set_order(symbols, np.array([[0, 1, 0, 1]]), num_chars)
    one_first = used_in_set_order(symbols, np.array([[1, 0, 1, 0]]), num_chars)
    assert nine_first.to_rows() == [[0, 1]] and one_first.to_rows() == [[1, 0]]
    # 8 (slot 0) iterates before 3 (slot 3) whatever the insertion order: not first occurrence
    three_first = used_in_set_order(symbols, np.array([[2, 3, 2, 3]]), num_chars)
    assert three_first.to_rows() == [[3, 2]]
    # only the first 2n occurrences count
    assert used_in_set_order(symbols, np.array([[0, 0, 0, 0, 1, 1]]), np.array([2])).to_rows() == [
        [0]
    ]


@pytest.mark.parametrize("mode", LIME_MODES)
def test_lengths_within_spec_ranges(mode):
    draw = draw_lime(np.random.default_rng(5), 3000, PAPER)
    pattern = draw.pattern.to_rows()
    for row, k in zip(pattern, draw.num_used.tolist()):
        num_vars = sum(1 for t in row if t < 24)  # codes below 24 are variables
        assert num_vars in (6, 8, 10)  # 2n occurrences, n in 3..5
        assert 5 <= len(row) - num_vars <= 19
        assert 1 <= k <= num_vars // 2
    inputs, targets = generate_rows(5, 3000, mode)
    in_len = np.array([len(r) for r in inputs])
    tg_len = np.array([len(r) for r in targets])
    expected_mean = {"induct": (137, 20), "deduct": (105, 52), "abduct": (125, 32)}[mode]
    assert abs(in_len.mean() - expected_mean[0]) < 3 and abs(tg_len.mean() - expected_mean[1]) < 2
    assert in_len.max() <= 217 and tg_len.max() <= 99
    assert tg_len.min() >= {"induct": 11, "deduct": 17, "abduct": 6}[mode]


def test_length_filter_redraws_out_of_range_examples():
    params = LimeParams(length_range=(0, 110))
    draw_counts = original_word_counts(draw_lime(np.random.default_rng(6), 500, PAPER), "deduct")
    assert (draw_counts[0] > 110).any(), "the filter must have something to reject"
    inputs, targets = generate_lime(np.random.default_rng(6), 500, "deduct", PAPER, params)
    commas = np.array([len(parse_header(r)[0]) - 1 for r in inputs.to_rows()])
    assert inputs.n == 500
    assert (inputs.lengths + commas <= 110).all()


def test_determinism_and_seed_sensitivity():
    a = generate_lime(np.random.default_rng(7), 50, "abduct", PAPER)
    b = generate_lime(np.random.default_rng(7), 50, "abduct", PAPER)
    c = generate_lime(np.random.default_rng(8), 50, "abduct", PAPER)
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    assert not a[0].equals(c[0])


def test_small_laptop_layout_and_minimum_vocab():
    assert lime_min_data_vocab(LimeParams()) == 68
    layout = laptop_layout(68)  # every data id is used in every example
    inputs, targets = generate_lime(np.random.default_rng(9), 100, "deduct", layout)
    for row in inputs.to_rows():
        used, lower, math, _ = parse_header(row, layout)
        assert set(lower + math) <= set(range(layout.data_lo, layout.data_hi))
        assert len(set(used + lower + math)) == len(used) + 44
    with pytest.raises(ValueError):
        generate_lime(np.random.default_rng(9), 1, "deduct", laptop_layout(67))


def test_markers_are_the_layout_sentinels():
    # released code: ':' '<sep>' '<UPPER>' '[' '<LOWER>' '<MATH>' ']' -> 32000..32006
    order = (":", "<sep>", "<UPPER>", "[", "<LOWER>", "<MATH>", "]")
    assert [MARK[m] for m in order] == list(range(32000, 32007))
    inputs, _ = generate_lime(np.random.default_rng(10), 20, "induct", PAPER)
    assert set(MARK.values()) <= set(inputs.values.tolist())


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate_lime(np.random.default_rng(0), 1, "rewrite", PAPER)
    with pytest.raises(ValueError):
        LimeParams(num_chars_range=(3, 30))
