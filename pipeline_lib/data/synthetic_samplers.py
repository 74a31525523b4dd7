"""Vectorised samplers of the 18 simple Wu et al. (2022) tasks (reference §1.2-1.3).

Each sampler draws the arguments of `n` examples at once from a numpy Generator and follows the
original sampler's distribution exactly, including its rejection loops:

* the original re-runs a sampler until the data part (arguments plus the argument divider) has
  a length in `length_range`; here the structural draws (coins, lengths) are made for a batch of
  candidates, the ones outside the range are dropped and more are drawn until `n` remain. Which
  candidate is kept depends only on its own draws, so the kept ones follow the same conditional
  distribution as the original loop;
* `search`/`delete` negatives are resampled while the query's list repr is a substring of the
  sequence's list repr (a string test, stricter than token containment), checked exactly.

The token pool is the layout's data ids [lo, hi), drawn uniformly with replacement.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline_lib.data.ragged import Ragged, concat_rows


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """What every sampler needs: the token pool, the length rule and the word divider id."""

    lo: int  # data ids [lo, hi)
    hi: int
    min_len: int
    max_len: int
    word_divider: int


def _randint(rng: np.random.Generator, low, high) -> np.ndarray:
    """Uniform integers in [low, high], both ends included (Python's random.randint)."""
    low = np.asarray(low, np.int64)
    high = np.asarray(high, np.int64)
    return rng.integers(low, high + 1)


def _tokens(rng: np.random.Generator, spec: SamplerSpec, lengths: np.ndarray) -> Ragged:
    lengths = np.asarray(lengths, np.int64)
    return Ragged.from_lengths(rng.integers(spec.lo, spec.hi, int(lengths.sum())), lengths)


def _multinomial_uniform(rng: np.random.Generator, balls: np.ndarray, bins: np.ndarray) -> Ragged:
    """Per row, `balls` items thrown uniformly into `bins` bins: multinomial(balls, 1/bins).

    Returns a Ragged of bin counts (row i has bins[i] entries).
    """
    balls = np.asarray(balls, np.int64)
    bins = np.asarray(bins, np.int64)
    out = Ragged.from_lengths(np.zeros(int(bins.sum()), np.int64), bins)
    ball_row = np.repeat(np.arange(balls.size), balls)
    which = np.floor(rng.random(ball_row.size) * bins[ball_row]).astype(np.int64)
    np.add.at(out.values, out.starts[ball_row] + which, 1)
    return out


def _runs(values_per_run: Ragged, run_lengths: Ragged) -> Ragged:
    """Row i: values_per_run.row(i)[j] repeated run_lengths.row(i)[j] times, concatenated."""
    values = np.repeat(values_per_run.values, run_lengths.values)
    lengths = np.bincount(
        run_lengths.row_ids(), weights=run_lengths.values, minlength=run_lengths.n
    ).astype(np.int64)
    return Ragged.from_lengths(values, lengths)


def _rejection(rng, n: int, propose, valid_len) -> dict[str, np.ndarray]:
    """Draw structural candidates in batches until `n` of them have a valid data length.

    `propose(rng, m)` returns a dict of per-candidate arrays including "data_len".
    """
    kept: list[dict[str, np.ndarray]] = []
    have = 0
    m = max(16, n)
    while have < n:
        cand = propose(rng, m)
        ok = valid_len(cand["data_len"])
        cand = {k: v[ok] for k, v in cand.items()}
        kept.append(cand)
        have += int(ok.sum())
        m = max(16, int((n - have) * 1.2 / max(ok.mean(), 1e-3)) + 16)
    out = {k: np.concatenate([c[k] for c in kept])[:n] for k in kept[0]}
    return out


def _in_range(spec: SamplerSpec):
    return lambda data_len: (data_len >= spec.min_len) & (data_len <= spec.max_len)


# --- unary samplers ---------------------------------------------------------------------------
def uniform_sequence(rng, n: int, spec: SamplerSpec) -> tuple[Ragged]:
    """L ~ U[min,max]; L uniform tokens (copy, reverse, duplicate, first/last, length)."""
    lengths = _randint(rng, np.full(n, spec.min_len), spec.max_len)
    return (_tokens(rng, spec, lengths),)


def _run_sequence(rng, spec: SamplerSpec, lengths: np.ndarray, run_tokens_from=None) -> Ragged:
    """The original `_generate_deduplicate_data` without the shuffle.

    num_parts ~ U[1, L] (or len(order) when tokens come from an order argument), the length is
    split into non-zero parts (multinomial + 1), and each part is a run of one token.
    """
    n = lengths.size
    if run_tokens_from is None:
        parts = _randint(rng, np.ones(n, np.int64), lengths)
        run_tokens = _tokens(rng, spec, parts)
    else:
        parts = run_tokens_from.lengths
        # random.choices(order, k=len(order)): uniform picks from the row's own order tokens
        pick = np.floor(rng.random(int(parts.sum())) * np.repeat(parts, parts)).astype(np.int64)
        run_tokens = Ragged(
            run_tokens_from.values[np.repeat(run_tokens_from.starts, parts) + pick],
            run_tokens_from.offsets,
        )
    sizes = _multinomial_uniform(rng, lengths - parts, parts)
    sizes = Ragged(sizes.values + 1, sizes.offsets)
    return _runs(run_tokens, sizes)


def runs_sequence(rng, n: int, spec: SamplerSpec) -> tuple[Ragged]:
    """deduplicate: runs of repeated tokens, runs kept in place."""
    lengths = _randint(rng, np.full(n, spec.min_len), spec.max_len)
    return (_run_sequence(rng, spec, lengths),)


def shuffled_runs_sequence(rng, n: int, spec: SamplerSpec) -> tuple[Ragged]:
    """set: the deduplicate sampler, then the whole sequence shuffled."""
    (seq,) = runs_sequence(rng, n, spec)
    return (seq.permute_within_rows(rng),)


def words_sequence(rng, n: int, spec: SamplerSpec) -> tuple[Ragged]:
    """longest_word: w ~ U[1, max//2] words of random tokens, joined by the word divider."""
    w = _randint(rng, np.ones(n, np.int64), spec.max_len // 2)
    n_sep = w - 1
    non_sep = _randint(rng, np.maximum(spec.min_len - n_sep, w), spec.max_len - n_sep)
    word_lengths = _multinomial_uniform(rng, non_sep - w, w)
    word_lengths = Ragged(word_lengths.values + 1, word_lengths.offsets)
    # each word is followed by a divider except the last: lay tokens out with slots for them
    slot_len = word_lengths.values + 1
    last_word = np.zeros(word_lengths.values.size, bool)
    last_word[word_lengths.offsets[1:] - 1] = True
    slot_len[last_word] -= 1
    flat_lengths = np.bincount(word_lengths.row_ids(), weights=slot_len, minlength=n)
    out = _tokens(rng, spec, flat_lengths.astype(np.int64))
    slot_end = np.cumsum(slot_len)
    out.values[(slot_end - 1)[~last_word]] = spec.word_divider
    return (out,)


# --- binary samplers --------------------------------------------------------------------------
def count_sequence(rng, n: int, spec: SamplerSpec) -> tuple[Ragged, Ragged]:
    """seq_len ~ U[min-2, max-2]; k ~ U[0, seq_len] copies of a query token + random, shuffled.

    Shuffling k copies of q among seq_len - k iid uniform tokens places q on a uniformly random
    k-subset of the positions, with iid uniform tokens elsewhere; the subset is drawn by
    selection sampling (Knuth's Algorithm S), vectorised over rows, instead of a permutation.
    """
    seq_len = _randint(rng, np.full(n, spec.min_len - 2), spec.max_len - 2)
    query = rng.integers(spec.lo, spec.hi, n)
    k = _randint(rng, np.zeros(n, np.int64), seq_len)
    seq = _tokens(rng, spec, seq_len)
    is_query = _random_subset_mask(rng, seq_len, k)
    seq.values[is_query] = np.repeat(query, seq_len)[is_query]
    return seq, Ragged.singletons(query)


def _random_subset_mask(rng, lengths: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per row, a uniform random k-subset of its positions, as a flat mask (Algorithm S)."""
    width = int(lengths.max(initial=0))
    u = rng.random((width, lengths.size))  # position-major: each step reads contiguous memory
    need = k.astype(np.float64)
    chosen = np.zeros((width, lengths.size), bool)
    for i in range(width):
        remaining = lengths - i  # positions left in the row, this one included
        take = (remaining > 0) & (u[i] * np.maximum(remaining, 1) < need)
        chosen[i] = take
        need = need - take
    return chosen.T[np.arange(width)[None, :] < lengths[:, None]]


def _query_structure(rng, m: int, spec: SamplerSpec, p_positive: float) -> dict[str, np.ndarray]:
    """Coins and lengths of the search/delete sampler for m candidates (before rejection)."""
    positive = rng.random(m) > 1.0 - p_positive  # original: uniform(0,1) > 0.5 / > 0.25
    max_total = spec.max_len - 1
    max_q = max_total // 3  # query_seq_max_proportion 0.5: max_q = max_total / (1 + 1/0.5)
    # positive branch
    q_pos = _randint(rng, np.ones(m, np.int64), max_q)
    s_pos = _randint(rng, 2 * q_pos, max_total - q_pos)
    # negative branch: 1 % query longer than the sequence, otherwise q_len <= seq_len
    longer = rng.random(m) < 0.01
    q_long = _randint(rng, np.full(m, spec.min_len + 1), spec.max_len)
    s_long = _randint(rng, np.zeros(m, np.int64), q_long - 1)
    s_neg = _randint(rng, np.full(m, spec.min_len), spec.max_len)
    q_neg = _randint(rng, np.full(m, spec.min_len), s_neg)
    q_len = np.where(positive, q_pos, np.where(longer, q_long, q_neg))
    s_len = np.where(positive, s_pos, np.where(longer, s_long, s_neg))
    return {
        "positive": positive,
        "q_len": q_len,
        "s_len": s_len,
        "data_len": s_len + 1 + q_len,
    }


def _list_repr_contains(seq: list[int], query: list[int]) -> bool:
    return str(query)[1:-1] in str(seq)


def query_sequence(
    rng, n: int, spec: SamplerSpec, p_positive: float
) -> tuple[Ragged, Ragged]:
    """search (p_positive 0.5) and delete (0.75): a sequence and a query that does or does not
    occur in it."""
    st = _rejection(rng, n, lambda r, m: _query_structure(r, m, spec, p_positive), _in_range(spec))
    positive, q_len, s_len = st["positive"], st["q_len"], st["s_len"]
    query = _tokens(rng, spec, q_len)
    seq = _tokens(rng, spec, s_len)
    pos = np.nonzero(positive)[0]
    if pos.size:
        seq = _plant_queries(rng, spec, seq, query, pos)
    neg = np.nonzero(~positive)[0]
    if neg.size:
        _resample_string_matches(rng, spec, seq, query, neg)
    return seq, query


def _plant_queries(rng, spec: SamplerSpec, seq: Ragged, query: Ragged, rows) -> Ragged:
    """Positive rows: n_occ ~ U[1, s//q] copies of the query, separated by random gaps whose
    sizes are multinomial(s - n_occ*q, n_occ + 1): gap0 q gap1 q ... gapK."""
    q_len = query.lengths[rows]
    s_len = seq.lengths[rows]
    n_occ = _randint(rng, np.ones(rows.size, np.int64), s_len // q_len)
    gaps = _multinomial_uniform(rng, s_len - n_occ * q_len, n_occ + 1)
    n_seg = 2 * n_occ + 1
    segments = Ragged.from_lengths(np.zeros(int(n_seg.sum()), np.int64), n_seg)
    is_query_seg = segments.positions() % 2 == 1
    seg_len = np.empty(segments.values.size, np.int64)
    seg_len[~is_query_seg] = gaps.values  # both are row-major, gaps in order
    seg_len[is_query_seg] = np.repeat(q_len, n_occ)
    tok_seg = np.repeat(np.arange(seg_len.size), seg_len)
    tok_off = np.arange(tok_seg.size) - np.repeat(np.cumsum(seg_len) - seg_len, seg_len)
    values = rng.integers(spec.lo, spec.hi, tok_seg.size)  # gap fillers
    in_query = is_query_seg[tok_seg]
    local_row = segments.row_ids()[tok_seg[in_query]]
    values[in_query] = query.values[query.starts[rows][local_row] + tok_off[in_query]]
    # every local row holds exactly s_len tokens, so `values` is row-major over the rows
    dest = np.repeat(seq.starts[rows], s_len) + (
        np.arange(values.size) - np.repeat(np.cumsum(s_len) - s_len, s_len)
    )
    out = seq.values.copy()
    out[dest] = values
    return Ragged(out, seq.offsets)


def _resample_string_matches(rng, spec: SamplerSpec, seq: Ragged, query: Ragged, rows) -> None:
    """Negative rows: redraw seq and query while repr(query)[1:-1] occurs in repr(seq).

    A string match needs the query's interior tokens (all but the first and the last, which may
    match the tail or head of a longer number) to appear verbatim in seq, so a row whose query
    has an interior token q[1] that does not occur in seq cannot match; every other row gets the
    exact string test.
    """
    rows = np.asarray(rows, np.int64)
    while rows.size:
        sub_seq, sub_query = seq.take(rows), query.take(rows)
        probe_at = np.minimum(sub_query.starts + 1, sub_query.offsets[1:] - 1)
        probe = sub_query.values[probe_at]
        hits = sub_seq.values == np.repeat(probe, sub_seq.lengths)
        has_probe = np.bincount(sub_seq.row_ids(), weights=hits, minlength=rows.size) > 0
        has_probe |= sub_query.lengths <= 2  # no interior token: always test the strings
        bad = [
            r
            for r in rows[has_probe].tolist()
            if _list_repr_contains(seq.row(r).tolist(), query.row(r).tolist())
        ]
        for r in bad:
            a, b = seq.offsets[r], seq.offsets[r + 1]
            seq.values[a:b] = rng.integers(spec.lo, spec.hi, b - a)
            a, b = query.offsets[r], query.offsets[r + 1]
            query.values[a:b] = rng.integers(spec.lo, spec.hi, b - a)
        rows = np.asarray(bad, np.int64)


def search_sequence(rng, n: int, spec: SamplerSpec) -> tuple[Ragged, Ragged]:
    return query_sequence(rng, n, spec, p_positive=0.5)


def delete_sequence(rng, n: int, spec: SamplerSpec) -> tuple[Ragged, Ragged]:
    return query_sequence(rng, n, spec, p_positive=0.75)


def replace_sequence(rng, n: int, spec: SamplerSpec) -> tuple[Ragged, Ragged]:
    """seq_len ~ U[min-3, max-3]; key uniform over the distinct tokens of seq; value random."""
    from pipeline_lib.data.synthetic_targets import first_occurrence_mask

    s_len = _randint(rng, np.full(n, spec.min_len - 3), spec.max_len - 3)
    seq = _tokens(rng, spec, s_len)
    distinct = seq.mask(first_occurrence_mask(seq))
    pick = np.floor(rng.random(n) * distinct.lengths).astype(np.int64)
    key = distinct.values[distinct.starts + pick]
    value = rng.integers(spec.lo, spec.hi, n)
    query = Ragged(np.stack([key, value], axis=1).reshape(-1), np.arange(n + 1) * 2)
    return seq, query


def sort_sequence(rng, n: int, spec: SamplerSpec) -> tuple[Ragged, Ragged]:
    """order_len ~ U[min//2, (max-1)//2] tokens with replacement; seq = shuffled runs of tokens
    chosen from order, seq_len ~ U[order_len, max-1-order_len]."""
    max_total = spec.max_len - 1
    o_len = _randint(rng, np.full(n, spec.min_len // 2), max_total // 2)
    order = _tokens(rng, spec, o_len)
    s_len = _randint(rng, o_len, max_total - o_len)
    seq = _run_sequence(rng, spec, s_len, run_tokens_from=order)
    return seq.permute_within_rows(rng), order


def set_op_sequences(rng, n: int, spec: SamplerSpec) -> tuple[Ragged, Ragged]:
    """total ~ U[min-1, max-1]; n1 ~ U[0,total]; both sequences drawn with replacement from a
    pool of total//2 distinct tokens (random.sample)."""
    total = _randint(rng, np.full(n, spec.min_len - 1), spec.max_len - 1)
    n1 = _randint(rng, np.zeros(n, np.int64), total)
    pool = _distinct_tokens(rng, spec, total // 2)
    both = total
    pick = np.floor(rng.random(int(both.sum())) * np.repeat(pool.lengths, both)).astype(np.int64)
    values = pool.values[np.repeat(pool.starts, both) + pick]
    flat = Ragged.from_lengths(values, both)
    in_first = flat.positions() < np.repeat(n1, both)
    seq1 = Ragged.from_lengths(values[in_first], n1)
    seq2 = Ragged.from_lengths(values[~in_first], total - n1)
    return seq1, seq2


def _distinct_tokens(rng, spec: SamplerSpec, k: np.ndarray) -> Ragged:
    """Per row, k distinct tokens in random order (random.sample): draw, then redraw repeats."""
    pool = _tokens(rng, spec, k)
    if int(k.max(initial=0)) > spec.hi - spec.lo:
        raise ValueError("set operations need a data vocabulary of at least max_len/2 tokens")
    from pipeline_lib.data.synthetic_targets import first_occurrence_mask

    rows = np.arange(pool.n)
    while rows.size:
        sub = pool.take(rows)
        dup = ~first_occurrence_mask(sub)
        if not dup.any():
            break
        # redraw only the repeats, in place, then re-check only the rows that had one
        dest = np.repeat(pool.starts[rows] - sub.starts, sub.lengths)[dup] + np.nonzero(dup)[0]
        pool.values[dest] = rng.integers(spec.lo, spec.hi, int(dup.sum()))
        rows = rows[np.bincount(sub.row_ids()[dup], minlength=rows.size) > 0]
    return pool


def join_arguments(args: tuple[Ragged, ...], arg_divider: int) -> Ragged:
    """The data part of an input: arg1 [divider] arg2 for binary tasks."""
    if len(args) == 1:
        return args[0]
    sep = Ragged.constant([arg_divider], args[0].n, dtype=args[0].values.dtype)
    return concat_rows(args[0], sep, args[1])
