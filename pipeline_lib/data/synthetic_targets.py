"""Vectorised task functions of the 18 simple Wu et al. (2022) tasks: arguments -> target.

Every function maps whole batches (`Ragged` rows) at once and reproduces the original
per-example semantics exactly (reference §1.2), including the quirks:
`set` keeps first occurrences, `deduplicate` collapses adjacent repeats only, `sort` orders by
position in the order argument (a duplicated token takes its *last* index), `delete` removes the
first occurrence only, set operations list CPython set iteration order. Empty outputs are
replaced by the empty marker by the caller (`synthetic.py`), as in the original.

`tests/test_synthetic_fidelity.py` checks these against the original sample files, and
`tests/test_synthetic_tasks.py` against the per-example reference in `synthetic_reference.py`.
"""

from __future__ import annotations


import numpy as np

from pipeline_lib.data.ragged import Ragged
from pipeline_lib.data.vocab import VocabLayout


def numerals(counts: np.ndarray, layout: VocabLayout) -> Ragged:
    """The numeral token rows of the integers `counts` (layout.numbers table)."""
    table = Ragged.from_rows([layout.number(n) for n in range(int(counts.max(initial=0)) + 1)])
    return table.take(counts)


# --- unary --------------------------------------------------------------------------------------
def identity(seq: Ragged, layout: VocabLayout) -> Ragged:
    return seq


def reverse(seq: Ragged, layout: VocabLayout) -> Ragged:
    return seq.reverse_rows()


def duplicate(seq: Ragged, layout: VocabLayout) -> Ragged:
    return Ragged(np.repeat(seq.values, 2), seq.offsets * 2)


def first_token(seq: Ragged, layout: VocabLayout) -> Ragged:
    _require_nonempty(seq, "first_token")
    return Ragged.singletons(seq.values[seq.starts])


def last_token(seq: Ragged, layout: VocabLayout) -> Ragged:
    _require_nonempty(seq, "last_token")
    return Ragged.singletons(seq.values[seq.offsets[1:] - 1])


def length(seq: Ragged, layout: VocabLayout) -> Ragged:
    return numerals(seq.lengths, layout)


def stable_rank_order(keys: Ragged, fill: int) -> np.ndarray:
    """Per row, the stable argsort of the row's keys, as an [n, width] matrix (padding last).

    Sorting each padded row (a radix sort when keys fit 16 bits) is several times faster than
    one global lexsort over (row, key, position).
    """
    dtype = np.uint16 if fill <= np.iinfo(np.uint16).max else np.int64
    padded = keys.to_padded(fill=fill, dtype=dtype)
    return padded, np.argsort(padded, axis=1, kind="stable")


def first_occurrence_mask(seq: Ragged) -> np.ndarray:
    """True at the first occurrence of each value within its row."""
    fill = int(seq.values.max(initial=0)) + 1
    padded, order = stable_rank_order(seq, fill)
    sorted_vals = np.take_along_axis(padded, order, axis=1)
    new_group = np.ones(sorted_vals.shape, bool)
    new_group[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    first = np.zeros(padded.shape, bool)
    np.put_along_axis(first, order, new_group, axis=1)
    return first[seq.valid_mask(padded.shape[1])]


def set_(seq: Ragged, layout: VocabLayout) -> Ragged:
    return seq.mask(first_occurrence_mask(seq))


def deduplicate(seq: Ragged, layout: VocabLayout) -> Ragged:
    keep = np.ones(seq.values.size, bool)
    keep[1:] = seq.values[1:] != seq.values[:-1]
    keep[seq.starts[seq.lengths > 0]] = True  # the first token of a row is always kept
    return seq.mask(keep)


def longest_word(seq: Ragged, layout: VocabLayout) -> Ragged:
    """The first longest run of non-divider tokens (ties go to the earlier word)."""
    is_sep = seq.values == layout.word_divider
    prev_is_sep = np.ones(seq.values.size, bool)
    prev_is_sep[1:] = is_sep[:-1]
    prev_is_sep[seq.starts[seq.lengths > 0]] = True
    word_start = ~is_sep & prev_is_sep
    word_of_token = np.cumsum(word_start) - 1  # global word index (valid where ~is_sep)
    n_words = int(word_start.sum())
    if n_words == 0:
        return seq.mask(np.zeros(seq.values.size, bool))
    word_len = np.bincount(word_of_token[~is_sep], minlength=n_words)
    word_row = seq.row_ids()[word_start]
    # per row: max length, then the smallest word index with it
    best = np.lexsort((np.arange(n_words), -word_len, word_row))
    first_of_row = np.ones(n_words, bool)
    first_of_row[1:] = word_row[best][1:] != word_row[best][:-1]
    chosen = np.zeros(n_words, bool)
    chosen[best[first_of_row]] = True
    keep = ~is_sep & chosen[np.where(is_sep, 0, word_of_token)]
    return seq.mask(keep)


# --- binary -------------------------------------------------------------------------------------
def count(seq: Ragged, query: Ragged, layout: VocabLayout) -> Ragged:
    _require_lengths(query, 1, "count query")
    q = np.repeat(query.values, seq.lengths)
    hits = (seq.values == q).astype(np.int64)
    counts = np.bincount(seq.row_ids(), weights=hits, minlength=seq.n).astype(np.int64)
    return numerals(counts, layout)


def first_match(seq: Ragged, query: Ragged) -> np.ndarray:
    """Per row, the index of the first contiguous occurrence of the query in seq, or -1.

    Candidates are the positions whose token equals the query's first token; each is then
    checked token by token, all candidates of all rows at once.
    """
    n = seq.n
    qlen = query.lengths
    first_q = np.where(qlen > 0, query.values[np.minimum(query.starts, query.values.size - 1)], -1)
    rows = seq.row_ids()
    pos = seq.positions()
    cand = (seq.values == first_q[rows]) & (pos + qlen[rows] <= seq.lengths[rows])
    cand_idx = np.nonzero(cand)[0]
    result = np.full(n, -1, np.int64)
    # An empty query matches at 0 (Python's list-slice semantics in the original).
    result[qlen == 0] = 0
    if cand_idx.size == 0:
        return result
    cand_rows = rows[cand_idx]
    k = qlen[cand_rows]
    # expand every candidate into its k comparisons
    cand_of_cmp = np.repeat(np.arange(cand_idx.size), k)
    within = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
    seq_tok = seq.values[cand_idx[cand_of_cmp] + within]
    q_tok = query.values[query.starts[cand_rows[cand_of_cmp]] + within]
    mismatches = np.bincount(cand_of_cmp, weights=seq_tok != q_tok, minlength=cand_idx.size)
    ok = mismatches == 0
    ok_idx = cand_idx[ok]
    ok_rows = cand_rows[ok]
    # the earliest matching candidate per row (candidates are in increasing position order)
    first = np.ones(ok_idx.size, bool)
    first[1:] = ok_rows[1:] != ok_rows[:-1]
    found = ok_rows[first]
    result[found] = pos[ok_idx[first]]
    result[qlen == 0] = 0
    return result


def search(seq: Ragged, query: Ragged, layout: VocabLayout) -> Ragged:
    found = first_match(seq, query) >= 0
    yes, no = Ragged.constant(layout.yes, 1), Ragged.constant(layout.no, 1)
    table = Ragged.from_rows([list(no.row(0)), list(yes.row(0))])
    return table.take(found.astype(np.int64))


def delete(seq: Ragged, query: Ragged, layout: VocabLayout) -> Ragged:
    idx = first_match(seq, query)
    rows, pos = seq.row_ids(), seq.positions()
    hit = idx[rows]
    drop = (hit >= 0) & (pos >= hit) & (pos < hit + query.lengths[rows])
    return seq.mask(~drop)


def replace(seq: Ragged, query: Ragged, layout: VocabLayout) -> Ragged:
    """Replace every occurrence of each key by its value; query = k1 v1 k2 v2 ... ."""
    if (query.lengths % 2).any():
        raise ValueError("replace: the query must hold key/value pairs")
    if (query.lengths == 2).all():  # the paper's task: one pair, fully vectorised
        key = query.values[query.starts]
        val = query.values[query.starts + 1]
        rows = seq.row_ids()
        out = np.where(seq.values == key[rows], val[rows], seq.values)
        return Ragged(out, seq.offsets)
    rows_out = []
    for s, q in zip(seq.to_rows(), query.to_rows(), strict=True):
        table = {q[i]: q[i + 1] for i in range(0, len(q), 2)}
        rows_out.append([table.get(t, t) for t in s])
    return Ragged.from_rows(rows_out, dtype=seq.values.dtype)


def sort(seq: Ragged, order: Ragged, layout: VocabLayout) -> Ragged:
    """Stable sort of seq by each token's position in `order` (last index for duplicates)."""
    span = np.int64(max(int(seq.values.max(initial=0)), int(order.values.max(initial=0))) + 1)
    # 1. per order row, sort tokens stably: the last entry of each equal-token group carries
    #    the token's last index, and keys (row, token) come out globally sorted.
    padded_order, by_token = stable_rank_order(order, fill=int(span))
    tokens_sorted = np.take_along_axis(padded_order, by_token, axis=1).astype(np.int64)
    valid = order.valid_mask(padded_order.shape[1])
    last = np.zeros(tokens_sorted.shape, bool)
    last[:, :-1] = tokens_sorted[:, 1:] != tokens_sorted[:, :-1]
    last[:, -1] = True
    keep = last & valid
    rows = np.broadcast_to(np.arange(order.n)[:, None], keep.shape)
    uniq_keys = rows[keep] * span + tokens_sorted[keep]
    uniq_pos = by_token[keep]
    # 2. look every seq token up, then sort each seq row stably by that position
    # Look the seq tokens up in row-major token order: sorted needles make searchsorted
    # cache-friendly (several times faster than looking them up in sequence order).
    padded_seq, seq_by_token = stable_rank_order(seq, fill=int(span))
    width = padded_seq.shape[1]
    seq_valid = seq.valid_mask(width)
    seq_rows = np.broadcast_to(np.arange(seq.n)[:, None], seq_valid.shape)
    seq_sorted = np.take_along_axis(padded_seq, seq_by_token, axis=1).astype(np.int64)
    seq_key = seq_rows[seq_valid] * span + seq_sorted[seq_valid]
    at = np.searchsorted(uniq_keys, seq_key)
    at_clipped = np.minimum(at, max(uniq_keys.size - 1, 0))
    if uniq_keys.size == 0 or (uniq_keys[at_clipped] != seq_key).any():
        raise ValueError("sort: a token of the sequence does not occur in the order argument")
    rank_by_token = np.zeros(seq_valid.shape, np.int64)
    rank_by_token[seq_valid] = uniq_pos[at]
    rank_padded = np.zeros(seq_valid.shape, np.int64)
    np.put_along_axis(rank_padded, seq_by_token, rank_by_token, axis=1)
    rank = Ragged(rank_padded[seq_valid], seq.offsets)
    padded_vals = seq.to_padded(fill=0)
    _, perm = stable_rank_order(rank, fill=int(rank.values.max(initial=0)) + 1)
    sorted_vals = np.take_along_axis(padded_vals, perm, axis=1)
    return Ragged(sorted_vals[seq.valid_mask(perm.shape[1])], seq.offsets)


def _set_op(seq1: Ragged, seq2: Ragged, op: str) -> Ragged:
    """Apply a Python set operation row by row.

    CPython set iteration order is part of the original targets (reference §1.2), so the very
    same Python sets are built (set(seq1), set(seq2), then the operation on the two sets) and
    CPython orders them; a few µs per example.
    """
    flat1, off1 = seq1.values.tolist(), seq1.offsets.tolist()
    flat2, off2 = seq2.values.tolist(), seq2.offsets.tolist()
    method = getattr(set, op)
    out_values: list[int] = []
    out_lengths: list[int] = []
    extend, append = out_values.extend, out_lengths.append
    for a, b, c, d in zip(off1, off1[1:], off2, off2[1:]):
        result = method(set(flat1[a:b]), set(flat2[c:d]))
        extend(result)
        append(len(result))
    return Ragged.from_lengths(
        np.asarray(out_values, dtype=seq1.values.dtype), np.asarray(out_lengths, np.int64)
    )


def union(seq1: Ragged, seq2: Ragged, layout: VocabLayout) -> Ragged:
    return _set_op(seq1, seq2, "union")


def intersect(seq1: Ragged, seq2: Ragged, layout: VocabLayout) -> Ragged:
    return _set_op(seq1, seq2, "intersection")


def set1_minus_set2(seq1: Ragged, seq2: Ragged, layout: VocabLayout) -> Ragged:
    return _set_op(seq1, seq2, "__sub__")


def set2_minus_set1(seq1: Ragged, seq2: Ragged, layout: VocabLayout) -> Ragged:
    return _set_op(seq2, seq1, "__sub__")


def _require_nonempty(seq: Ragged, what: str) -> None:
    if (seq.lengths == 0).any():
        raise ValueError(f"{what}: an input row is empty")


def _require_lengths(r: Ragged, n: int, what: str) -> None:
    if (r.lengths != n).any():
        raise ValueError(f"{what}: every row must hold exactly {n} token(s)")
