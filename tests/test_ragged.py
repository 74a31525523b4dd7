import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_lib.data.ragged import Ragged, concat_rows, first_occurrences, stack

rows_st = st.lists(st.lists(st.integers(0, 6), max_size=8), max_size=12)


@given(rows_st)
def test_roundtrip_and_views(rows):
    r = Ragged.from_rows(rows)
    assert r.to_rows() == rows
    assert r.lengths.tolist() == [len(x) for x in rows]
    assert r.row_ids().tolist() == [i for i, x in enumerate(rows) for _ in x]
    assert r.positions().tolist() == [j for x in rows for j in range(len(x))]


@given(rows_st, st.data())
def test_take_mask_reverse(rows, data):
    r = Ragged.from_rows(rows)
    idx = data.draw(st.lists(st.integers(0, max(len(rows) - 1, 0)), max_size=10)) if rows else []
    assert r.take(np.array(idx, np.int64)).to_rows() == [rows[i] for i in idx]
    inc = sorted(set(idx))
    assert r.take_sorted(np.array(inc, np.int64)).to_rows() == [rows[i] for i in inc]
    keep = np.array([v % 2 == 0 for x in rows for v in x], bool)
    assert r.mask(keep).to_rows() == [[v for v in x if v % 2 == 0] for x in rows]
    assert r.reverse_rows().to_rows() == [x[::-1] for x in rows]
    assert r.fill_empty(99).to_rows() == [x or [99] for x in rows]


@given(rows_st, rows_st)
def test_concat_rows_and_stack(a, b):
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    assert concat_rows(Ragged.from_rows(a), Ragged.from_rows(b)).to_rows() == [
        x + y for x, y in zip(a, b)
    ]
    assert stack([Ragged.from_rows(a), Ragged.from_rows(b)]).to_rows() == a + b


@given(rows_st, st.integers(0, 2**32 - 1))
def test_permute_within_rows_is_a_permutation(rows, seed):
    r = Ragged.from_rows(rows)
    p = r.permute_within_rows(np.random.default_rng(seed)).to_rows()
    assert [sorted(x) for x in p] == [sorted(x) for x in rows]


def test_permute_within_rows_is_uniform():
    # all 6 orders of a 3-row should appear about equally often
    r = Ragged.from_rows([[0, 1, 2]] * 60000)
    p = np.array(r.permute_within_rows(np.random.default_rng(0)).to_rows())
    codes = p[:, 0] * 9 + p[:, 1] * 3 + p[:, 2]
    counts = np.unique(codes, return_counts=True)[1]
    assert counts.size == 6
    assert np.all(np.abs(counts - 10000) < 400)  # ~4 sigma


@settings(max_examples=200)
@given(st.lists(st.lists(st.integers(0, 2), max_size=3), max_size=30))
def test_first_occurrences_matches_python(rows):
    seen, expected = set(), []
    for i, x in enumerate(rows):
        if tuple(x) not in seen:
            seen.add(tuple(x))
            expected.append(i)
    assert first_occurrences(Ragged.from_rows(rows)).tolist() == expected


def test_first_occurrences_survives_hash_collisions(monkeypatch):
    # Force every row into one hash bucket: the exact comparison must still tell rows apart.
    from pipeline_lib.data import ragged

    monkeypatch.setattr(ragged, "row_hashes", lambda r: np.zeros(r.n, np.uint64))
    rows = [[1, 2], [2, 1], [1, 2], [], [3], [], [2, 1]]
    assert ragged.first_occurrences(Ragged.from_rows(rows)).tolist() == [0, 1, 3, 4]
