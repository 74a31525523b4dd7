"""Length-pruned, batch-minor JAX charts: the fast path behind :mod:`inside`, :mod:`viterbi`, :mod:`labels`, :mod:`conditionals`.

:mod:`chart` keeps the reference implementation (a dense ``(B, n, n, N)``
chart updated width by width).  This module computes the same quantities
much faster by exploiting three facts:

* **Yield lengths are static.**  Whether nonterminal ``A`` can derive *some*
  string of ``w`` words depends only on the grammar, not on the sentence.  A
  boolean CYK over lengths (done once per grammar and padded length on the
  host) gives, for every width ``w``, the nonterminals that can be non-zero
  and, for every split ``(w, k)``, the binary rules whose children can both
  be non-zero.  Everything else is an exact zero in the reference chart and
  is never computed.  On the released grammar (levels S_i -> A1 -> A2 -> A3 ->
  A4, widths <= 16, 8, 4, 2, 1) this removes ~86% of the (span, split, rule)
  terms, and a width-16 cell has only 9 live rule terms instead of 556 x 15.
* **Cells are stored per width**, as ``(rows, spans, batch)`` arrays holding
  only the live nonterminals of that width, each also padded to ``n`` spans
  twice: indexed by start and by end.  The left children of all spans of
  width ``w`` at every split are then one concatenation of start-indexed
  arrays and one static slice, and the right children (which end where the
  span ends) the same with end-indexed arrays.  There is no scatter or
  diagonal gather over a ``(B, n, n, N)`` chart (the reference's
  ``.at[].set`` and gathers, whose transposes dominate its gradient), and the
  program size grows with the number of widths, not of splits, which keeps
  compilation time in check.
* **Live terms only**: each width gathers the children of its live
  ``(split, rule)`` terms, multiplies them and sums them into their
  left-hand sides: ``"sparse"`` per rule with a segment sum, ``"dense"`` per
  distinct child pair ``(B, C)`` (262 on the released grammar, for 556
  rules) followed by a dense ``(lhs x pair)`` matmul.
* **The batch is the minor axis**, so every gather over rule children copies
  contiguous ``(spans x batch)`` rows and every elementwise op is vectorised
  over the batch.

Numerics are those of :mod:`chart`: the inside chart is a linear-space vector
with a log-space scale per cell (``max(vec) == 1``, scales are
``stop_gradient`` constants), so ``jax.grad`` of ``log Z`` with respect to the
leaf vectors is exactly the outside score ``O(A, t, t+1) / Z``; zero cells
are exact zeros with scale ``-inf``; Viterbi runs in log space.

Compiled programs are cached per ``(grammar, padded length, kind, method)``;
jit caches per batch size on top of that.  Set ``JAX_COMPILATION_CACHE_DIR``
to keep the compiled programs across processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pipeline_lib.pcfg.chart import _unary_closures
from pipeline_lib.pcfg.grammar import Grammar

Method = Literal["dense", "sparse"]


# ---------------------------------------------------------------------------
# Static plan (numpy, host side)


@dataclass(frozen=True)
class _SplitTerms:
    """Binary-rule terms of one split ``k`` of width ``w`` (indices are local rows)."""

    k: int
    left_rows: np.ndarray  # (T_k,) row of B in the post-unary rows of width k
    right_rows: np.ndarray  # (T_k,) row of C in the post-unary rows of width w - k
    rules: np.ndarray  # (T_k,) binary rule index


@dataclass(frozen=True)
class _Closure:
    """How the post-unary rows of a width are formed from its pre-unary rows."""

    copy_rows: np.ndarray  # post rows equal to one pre row (no unary chain into a live row)
    copy_sources: np.ndarray  # their pre rows
    mix_rows: np.ndarray  # post rows reached through unary chains
    mix_matrix: np.ndarray  # (n_mix, P) closure sums U*[A, B] over the pre rows
    mix_max_log: np.ndarray  # (n_mix, J) best-chain log-probabilities (padded with -inf)
    mix_max_source: np.ndarray  # (n_mix, J) pre rows of those candidates (padded with 0)
    permutation: np.ndarray  # (A,) index into concat([pre rows' copies, mix rows])


@dataclass(frozen=True)
class _WidthPlan:
    width: int
    pre: np.ndarray  # nonterminals that can be non-zero before the unary closure
    post: np.ndarray  # nonterminals that can be non-zero after it
    splits: tuple[_SplitTerms, ...]
    term_rules: np.ndarray  # (T,) rule of each term, all splits concatenated
    term_split: np.ndarray  # (T,) left-child width k of each term
    term_lhs_row: np.ndarray  # (T,) pre row of each term's left-hand side
    left_row_split: np.ndarray  # split index (into ``splits``) of every row of that concatenation
    term_left: np.ndarray  # (T,) row of the left child in the concatenation of all splits' left rows
    term_right: np.ndarray  # (T,) same for the right child
    term_prob: np.ndarray  # (T,) P(rule)
    term_tie_rank: np.ndarray  # (T,) rank of (rule, split): Viterbi ties go to the lowest, like chart.viterbi_chart
    pair_term: np.ndarray  # (Q,) pair id of each (split, child pair) term
    pair_left: np.ndarray  # (Q,) its left row (as term_left)
    pair_right: np.ndarray  # (Q,) its right row
    pair_matrix: np.ndarray  # (P, n_pairs) P(A -> B C) summing distinct child pairs into their left-hand side
    term_log_prob: np.ndarray  # (T,) log P(rule)
    lhs_terms: np.ndarray  # (P, J) term indices per pre row, padded with T (a dummy)
    lhs_matrix: np.ndarray  # (P, T) rule probabilities summing terms into their left-hand side
    closure: _Closure


@dataclass(frozen=True, eq=False)
class _ChartPlan:
    n: int
    n_nonterminals: int
    start: int
    widths: tuple[_WidthPlan, ...]  # widths[w - 1] for w = 1..n

    def post_row(self, width: int, symbol: int) -> int:
        rows = self.widths[width - 1].post
        position = int(np.searchsorted(rows, symbol))
        return position if position < len(rows) and rows[position] == symbol else -1


@lru_cache(maxsize=64)
def chart_plan(grammar: Grammar, n: int, all_leaves: bool = False) -> _ChartPlan:
    """The static pruning plan for sentences padded to ``n`` words.

    ``all_leaves`` treats every nonterminal as a possible leaf (needed when
    differentiating with respect to the leaf vectors: a zero leaf entry still
    has a non-zero outside score); otherwise only lexical left-hand sides are.
    """
    n_nt = grammar.n_nonterminals
    closure_sum, closure_max_log, _ = _unary_closures(grammar)
    reach = closure_sum > 0  # [A, B]: A =>* B (including A == B)
    np.fill_diagonal(reach, True)
    rules = grammar.binary_rules
    probs = np.exp(grammar.binary_log_probs)
    log_probs = grammar.binary_log_probs

    widths: list[_WidthPlan] = []
    post_live: list[np.ndarray] = []  # boolean (N,) per width
    row_of: list[np.ndarray] = []  # (N,) local post row or -1
    post_of: list[np.ndarray] = []
    for width in range(1, n + 1):
        splits: list[_SplitTerms] = []
        if width == 1:
            pre_live = np.ones(n_nt, bool) if all_leaves else np.zeros(n_nt, bool)
            pre_live[grammar.lexical_rules[:, 0]] = True
        else:
            pre_live = np.zeros(n_nt, bool)
            for k in range(1, width):
                active = post_live[k - 1][rules[:, 1]] & post_live[width - k - 1][rules[:, 2]]
                if not active.any():
                    continue
                chosen = np.flatnonzero(active)
                pre_live[rules[chosen, 0]] = True
                splits.append(
                    _SplitTerms(
                        k,
                        row_of[k - 1][rules[chosen, 1]].astype(np.int32),
                        row_of[width - k - 1][rules[chosen, 2]].astype(np.int32),
                        chosen.astype(np.int32),
                    )
                )
        pre = np.flatnonzero(pre_live)
        live = reach[:, pre].any(axis=1) if len(pre) else np.zeros(n_nt, bool)
        post = np.flatnonzero(live)
        rows = np.full(n_nt, -1, dtype=np.int64)
        rows[post] = np.arange(len(post))
        post_live.append(live)
        post_of.append(post)
        row_of.append(rows)
        split_rows = [(len(post_of[s.k - 1]), len(post_of[width - s.k - 1])) for s in splits]
        widths.append(_width_plan(width, pre, post, splits, split_rows, rules, probs, log_probs, closure_sum, closure_max_log))
    return _ChartPlan(n, n_nt, grammar.start, tuple(widths))


def _width_plan(width, pre, post, splits, split_rows, rules, probs, log_probs, closure_sum, closure_max_log) -> _WidthPlan:
    pre_row = {int(a): i for i, a in enumerate(pre)}
    if splits:
        term_rules = np.concatenate([s.rules for s in splits])
        term_split = np.concatenate([np.full(len(s.rules), s.k, np.int32) for s in splits])
    else:
        term_rules = np.zeros(0, np.int32)
        term_split = np.zeros(0, np.int32)
    term_lhs_row = np.asarray([pre_row[int(a)] for a in rules[term_rules, 0]], dtype=np.int32)
    n_terms = len(term_rules)
    per_lhs = [np.flatnonzero(term_lhs_row == p) for p in range(len(pre))]
    j = max([1] + [len(t) for t in per_lhs])
    lhs_terms = np.full((len(pre), j), n_terms, dtype=np.int32)
    for p, t in enumerate(per_lhs):
        lhs_terms[p, : len(t)] = t
    lhs_matrix = np.zeros((len(pre), n_terms))
    lhs_matrix[term_lhs_row, np.arange(n_terms)] = probs[term_rules]
    term_left, term_right, left_offset, right_offset = [], [], 0, 0
    for s, (n_left, n_right) in zip(splits, split_rows):
        term_left.append(s.left_rows + left_offset)
        term_right.append(s.right_rows + right_offset)
        left_offset += n_left
        right_offset += n_right
    term_left = np.concatenate(term_left) if splits else np.zeros(0, np.int64)
    term_right = np.concatenate(term_right) if splits else np.zeros(0, np.int64)
    # Distinct (split, left row, right row) products, and distinct child pairs (B, C) per width.
    child_pairs = [(int(rules[r, 1]), int(rules[r, 2])) for r in term_rules]
    pair_ids = {p: i for i, p in enumerate(dict.fromkeys(child_pairs))}
    products = dict.fromkeys(zip(term_split.tolist(), term_left.tolist(), term_right.tolist(), (pair_ids[p] for p in child_pairs)))
    pair_term = np.asarray([q for _, _, _, q in products], dtype=np.int64)
    pair_left = np.asarray([l for _, l, _, _ in products], dtype=np.int64)
    pair_right = np.asarray([r for _, _, r, _ in products], dtype=np.int64)
    pair_matrix = np.zeros((len(pre), len(pair_ids)))
    for t, r in enumerate(term_rules):
        pair_matrix[term_lhs_row[t], pair_ids[child_pairs[t]]] = probs[r]
    return _WidthPlan(
        width=width,
        pre=pre,
        post=post,
        splits=tuple(splits),
        term_rules=term_rules,
        term_split=term_split,
        term_lhs_row=term_lhs_row,
        left_row_split=np.repeat(np.arange(len(splits)), [a for a, _ in split_rows]).astype(np.int32),
        term_left=term_left,
        term_right=term_right,
        term_prob=probs[term_rules],
        term_tie_rank=np.lexsort((term_split, term_rules)).argsort().astype(np.int32),
        pair_term=pair_term,
        pair_left=pair_left,
        pair_right=pair_right,
        pair_matrix=pair_matrix,
        term_log_prob=log_probs[term_rules],
        lhs_terms=lhs_terms,
        lhs_matrix=lhs_matrix,
        closure=_closure_plan(pre, post, closure_sum, closure_max_log),
    )


def _closure_plan(pre, post, closure_sum, closure_max_log) -> _Closure:
    pre_row = {int(a): i for i, a in enumerate(pre)}
    copy_rows, copy_sources, mix_rows = [], [], []
    for row, a in enumerate(post.tolist()):
        reached = [b for b in pre.tolist() if b != a and closure_sum[a, b] > 0]
        if not reached and a in pre_row:
            copy_rows.append(row)
            copy_sources.append(pre_row[a])
        else:
            mix_rows.append(row)
    mix_matrix = closure_sum[np.ix_(post[mix_rows], pre)] if mix_rows else np.zeros((0, len(pre)))
    candidates = [[(closure_max_log[post[r], b], i) for i, b in enumerate(pre) if np.isfinite(closure_max_log[post[r], b])] for r in mix_rows]
    j = max([1] + [len(c) for c in candidates])
    mix_max_log = np.full((len(mix_rows), j), -np.inf)
    mix_max_source = np.zeros((len(mix_rows), j), dtype=np.int32)
    for r, c in enumerate(candidates):
        for i, (value, source) in enumerate(c):
            mix_max_log[r, i] = value
            mix_max_source[r, i] = source
    permutation = np.empty(len(post), dtype=np.int32)
    permutation[copy_rows] = copy_sources
    permutation[mix_rows] = len(pre) + np.arange(len(mix_rows))
    return _Closure(
        np.asarray(copy_rows, np.int32),
        np.asarray(copy_sources, np.int32),
        np.asarray(mix_rows, np.int32),
        mix_matrix,
        mix_max_log,
        mix_max_source,
        permutation,
    )


# ---------------------------------------------------------------------------
# Inside (sum-product) in scaled linear space


class _Cells(NamedTuple):
    vec: jax.Array  # (rows, spans, B), max over rows 1 (or all zero)
    scale: jax.Array  # (spans, B), -inf for all-zero cells


class _Aligned(NamedTuple):
    """A width's cells padded to ``n`` spans, indexed by start and by end (``end - 1``)."""

    by_start: jax.Array  # (rows, n, B)
    by_end: jax.Array  # (rows, n, B)


def _align(values: jax.Array, width: int, fill: float) -> _Aligned:
    pad = [(0, 0)] * values.ndim
    after, before = list(pad), list(pad)
    after[-2] = (0, width - 1)
    before[-2] = (width - 1, 0)
    if width == 1:
        return _Aligned(values, values)
    return _Aligned(jnp.pad(values, after, constant_values=fill), jnp.pad(values, before, constant_values=fill))


def _children(wp: _WidthPlan, aligned: list[_Aligned], width: int, n: int) -> tuple[jax.Array, jax.Array]:
    """Left and right children of every live split of ``width``, rows concatenated split by split.

    The left child of span ``s`` at split ``k`` starts at ``s`` (width ``k``);
    the right child ends where the span ends, ``s + width - 1`` (width
    ``width - k``), so both are one concatenation and one static slice.
    """
    spans = n - width + 1
    lefts = [aligned[s.k - 1].by_start for s in wp.splits]
    rights = [aligned[width - s.k - 1].by_end for s in wp.splits]
    left = jnp.concatenate(lefts, axis=0) if len(lefts) > 1 else lefts[0]
    right = jnp.concatenate(rights, axis=0) if len(rights) > 1 else rights[0]
    return left[..., :spans, :], right[..., width - 1 :, :]


def _close_and_normalise(plan: _WidthPlan, raw: jax.Array, base: jax.Array) -> _Cells:
    closure = plan.closure
    if len(closure.mix_rows):
        mixed = jnp.einsum("ap,psb->asb", jnp.asarray(closure.mix_matrix, raw.dtype), raw)
        closed = jnp.take(jnp.concatenate([raw, mixed], axis=0), closure.permutation, axis=0)
    elif np.array_equal(closure.permutation, np.arange(len(plan.pre))):
        closed = raw
    else:
        closed = jnp.take(raw, closure.permutation, axis=0)
    peak = jax.lax.stop_gradient(jnp.max(closed, axis=0))
    positive = peak > 0
    safe_peak = jnp.where(positive, peak, 1.0)
    # No where(positive, ., 0) / -inf for empty cells: their value is 0 either way, but the
    # gradient of log Z through them (the outside score of a word that would make the span
    # possible) must survive, or exact conditionals lose every word only such a span yields.
    vec = closed / safe_peak
    scale = base + jnp.log(safe_peak)
    return _Cells(vec, jax.lax.stop_gradient(scale))


def _empty_cells(spans: int, batch: int, dtype) -> _Cells:
    return _Cells(jnp.zeros((0, spans, batch), dtype), jnp.full((spans, batch), -jnp.inf, dtype))


def inside_cells(plan: _ChartPlan, leaf: jax.Array, method: Method = "dense") -> list[_Cells]:
    """Per width ``w`` (list index ``w - 1``) the live post-unary cells of all spans of width ``w``.

    ``leaf`` is ``(N, n, B)``: P(A -> x_t) for every nonterminal (rows outside
    the plan's width-1 pre rows are ignored).
    """
    n_nt, n, batch = leaf.shape
    dtype = leaf.dtype
    first = plan.widths[0]
    raw = jnp.take(leaf, first.pre, axis=0) if len(first.pre) < n_nt else leaf
    cells = [_close_and_normalise(first, raw, jnp.zeros((n, batch), dtype))]
    vectors = [_align(cells[0].vec, 1, 0.0)]
    scales = [_align(cells[0].scale[None], 1, -jnp.inf)]
    for width in range(2, n + 1):
        wp = plan.widths[width - 1]
        spans = n - width + 1
        if not wp.splits:
            cells.append(_empty_cells(spans, batch, dtype))
        else:
            left_scale, right_scale = _children(_SplitScales(wp.splits), scales, width, n)
            split_scale = left_scale + right_scale  # (K, S, B)
            peak = jnp.max(split_scale, axis=0)
            base = jax.lax.stop_gradient(jnp.where(jnp.isfinite(peak), peak, 0.0))
            weight = jnp.exp(split_scale - base)
            left, right = _children(wp, vectors, width, n)
            left = left * jnp.take(weight, wp.left_row_split, axis=0)
            if method == "dense":
                products = jnp.take(left, wp.pair_left, axis=0) * jnp.take(right, wp.pair_right, axis=0)
                pairs = jax.ops.segment_sum(products, wp.pair_term, num_segments=wp.pair_matrix.shape[1])
                raw = jnp.einsum("pq,qsb->psb", jnp.asarray(wp.pair_matrix, dtype), pairs)
            else:
                products = jnp.take(left, wp.term_left, axis=0) * jnp.take(right, wp.term_right, axis=0)
                weighted = products * jnp.asarray(wp.term_prob, dtype)[:, None, None]
                raw = jax.ops.segment_sum(weighted, wp.term_lhs_row, num_segments=len(wp.pre))
            cells.append(_close_and_normalise(wp, raw, base))
        vectors.append(_align(cells[-1].vec, width, 0.0))
        scales.append(_align(cells[-1].scale[None], width, -jnp.inf))
    return cells


class _SplitScales(NamedTuple):
    """Adapter so :func:`_children` stacks one scale row per split."""

    splits: tuple


def _root_log_partition(plan: _ChartPlan, cells: list[_Cells], lengths: jax.Array) -> jax.Array:
    n = plan.n
    batch = cells[0].scale.shape[1]
    dtype = cells[0].vec.dtype
    values, scales = [], []
    for width in range(1, n + 1):
        row = plan.post_row(width, plan.start)
        values.append(cells[width - 1].vec[row, 0] if row >= 0 else jnp.zeros((batch,), dtype))
        scales.append(cells[width - 1].scale[0])
    index = (lengths - 1)[None, :]
    root = jnp.take_along_axis(jnp.stack(values), index, axis=0)[0]
    root_scale = jnp.take_along_axis(jnp.stack(scales), index, axis=0)[0]
    positive = root > 0
    return jnp.where(positive, root_scale + jnp.log(jnp.where(positive, root, 1.0)), -jnp.inf)


# ---------------------------------------------------------------------------
# Viterbi (max-product) in log space


class ViterbiCells(NamedTuple):
    best: jax.Array  # (post rows, S, B) post-unary best log-probability
    term: jax.Array  # (pre rows, S, B) int32 best term of each pre-unary cell (width >= 2)
    source: jax.Array  # (mix rows, S, B) int32 pre row at the bottom of the best unary chain


def _max_closure(wp: _WidthPlan, pre: jax.Array) -> tuple[jax.Array, jax.Array]:
    closure = wp.closure
    if not len(closure.mix_rows):
        post = pre if np.array_equal(closure.permutation, np.arange(len(wp.pre))) else jnp.take(pre, closure.permutation, axis=0)
        return post, jnp.zeros((0,) + pre.shape[1:], jnp.int32)
    candidate = jnp.take(pre, closure.mix_max_source, axis=0) + jnp.asarray(closure.mix_max_log, pre.dtype)[:, :, None, None]
    best = jnp.max(candidate, axis=1)
    choice = jnp.argmax(candidate, axis=1)
    source = jnp.take_along_axis(
        jnp.broadcast_to(jnp.asarray(closure.mix_max_source)[:, :, None, None], candidate.shape), choice[:, None], axis=1
    )[:, 0]
    post = jnp.take(jnp.concatenate([pre, best], axis=0), closure.permutation, axis=0)
    return post, source.astype(jnp.int32)


def viterbi_cells(plan: _ChartPlan, leaf_log: jax.Array) -> list[ViterbiCells]:
    """Per width the live cells of the max-product chart; ``leaf_log`` is ``(N, n, B)``."""
    _, n, batch = leaf_log.shape
    first = plan.widths[0]
    post, source = _max_closure(first, jnp.take(leaf_log, first.pre, axis=0))
    cells = [ViterbiCells(post, jnp.zeros((len(first.pre), n, batch), jnp.int32), source)]
    aligned = [_align(post, 1, -jnp.inf)]
    for width in range(2, n + 1):
        wp = plan.widths[width - 1]
        spans = n - width + 1
        if not wp.splits:
            empty = jnp.zeros((0, spans, batch), jnp.int32)
            cells.append(ViterbiCells(jnp.zeros((0, spans, batch), leaf_log.dtype), empty, empty))
            aligned.append(_align(cells[-1].best, width, -jnp.inf))
            continue
        left_all, right_all = _children(wp, aligned, width, n)
        terms = jnp.take(left_all, wp.term_left, axis=0) + jnp.take(right_all, wp.term_right, axis=0)
        terms = terms + jnp.asarray(wp.term_log_prob, terms.dtype)[:, None, None]  # (T, S, B)
        pre = jax.ops.segment_max(terms, wp.term_lhs_row, num_segments=len(wp.pre))
        hit = terms >= jnp.take(pre, wp.term_lhs_row, axis=0)
        rank = jnp.where(hit, jnp.asarray(wp.term_tie_rank)[:, None, None], len(wp.term_rules))
        best_rank = jax.ops.segment_min(rank, wp.term_lhs_row, num_segments=len(wp.pre))
        best_term = jnp.take(jnp.asarray(np.argsort(wp.term_tie_rank).astype(np.int32)), best_rank)
        post, source = _max_closure(wp, pre)
        cells.append(ViterbiCells(post, best_term.astype(jnp.int32), source))
        aligned.append(_align(post, width, -jnp.inf))
    return cells


def _leaf(lexical: np.ndarray, ids: jax.Array, dtype, fill: float = 0.0) -> jax.Array:
    """``(N, n, B)`` leaf vectors; ``fill`` (zero probability) for unknown (negative) ids."""
    table = jnp.asarray(lexical.T, dtype)  # (T, N)
    leaf = jnp.take(table, jnp.maximum(ids, 0), axis=0)  # (B, n, N)
    leaf = jnp.where((ids >= 0)[..., None], leaf, fill)
    return jnp.transpose(leaf, (2, 1, 0))


def _log_cells(cells: _Cells) -> jax.Array:
    positive = cells.vec > 0
    return jnp.where(positive, cells.scale[None] + jnp.log(jnp.where(positive, cells.vec, 1.0)), -jnp.inf)


@lru_cache(maxsize=256)
def compiled(grammar: Grammar, n: int, kind: str, method: Method = "dense", dtype: str = "float32") -> Callable:
    """A jitted ``f(ids (B, n) int32, lengths (B,) int32)`` for one padded length.

    Kinds: ``"log_z"`` -> (B,); ``"log_chart"`` -> (log Z, (B, n, n, N));
    ``"prefix"`` -> (log Z, (B, n, N) log I(A, 0, w)); ``"leaf_outside"`` ->
    (log Z, d log Z / d leaf (B, n, N)).
    """
    lexical = grammar.lexical_matrix()
    n_nt = grammar.n_nonterminals
    plan = chart_plan(grammar, n, all_leaves=(kind == "leaf_outside"))
    if kind == "viterbi":
        plan = chart_plan(grammar, n, all_leaves=False)

    def log_z_of(leaf: jax.Array, lengths: jax.Array) -> tuple[jax.Array, list[_Cells]]:
        cells = inside_cells(plan, leaf, method)
        return _root_log_partition(plan, cells, lengths), cells

    def dense_rows(values: jax.Array, width: int) -> jax.Array:
        """(rows, ...) live rows -> (N, ...) with -inf elsewhere."""
        post = plan.widths[width - 1].post
        full = jnp.full((n_nt,) + values.shape[1:], -jnp.inf, values.dtype)
        return full.at[post].set(values) if len(post) else full

    if kind == "log_z":

        def run(ids, lengths):
            return log_z_of(_leaf(lexical, ids, dtype), lengths)[0]

    elif kind == "log_chart":

        def run(ids, lengths):
            log_z, cells = log_z_of(_leaf(lexical, ids, dtype), lengths)
            batch = ids.shape[0]
            columns = []
            for width in range(1, n + 1):
                values = dense_rows(_log_cells(cells[width - 1]), width)  # (N, S, B)
                pad = jnp.full((n_nt, width - 1, batch), -jnp.inf, values.dtype)
                columns.append(jnp.concatenate([values, pad], axis=1))
            return log_z, jnp.transpose(jnp.stack(columns), (3, 2, 0, 1))  # (B, start, width, N)

    elif kind == "prefix":

        def run(ids, lengths):
            log_z, cells = log_z_of(_leaf(lexical, ids, dtype), lengths)
            columns = [dense_rows(_log_cells(cells[w - 1])[:, 0], w) for w in range(1, n + 1)]  # (N, B) each
            return log_z, jnp.transpose(jnp.stack(columns), (2, 0, 1))  # (B, width, N)

    elif kind == "leaf_outside":

        def run(ids, lengths):
            def objective(leaf):
                log_z = log_z_of(leaf, lengths)[0]
                return jnp.sum(jnp.where(jnp.isfinite(log_z), log_z, 0.0)), log_z

            gradient, log_z = jax.grad(objective, has_aux=True)(_leaf(lexical, ids, dtype))
            return log_z, jnp.transpose(gradient, (2, 1, 0))  # (B, n, N)

    elif kind == "viterbi":
        lexical_log = np.where(lexical > 0, np.log(np.where(lexical > 0, lexical, 1.0)), -np.inf)

        def run(ids, lengths):
            leaf = _leaf(lexical_log, ids, dtype, fill=-jnp.inf)
            cells = viterbi_cells(plan, leaf)
            batch = ids.shape[0]
            roots = []
            for width in range(1, n + 1):
                row = plan.post_row(width, plan.start)
                roots.append(cells[width - 1].best[row, 0] if row >= 0 else jnp.full((batch,), -jnp.inf, leaf.dtype))
            best = jnp.take_along_axis(jnp.stack(roots), (lengths - 1)[None, :], axis=0)[0]
            terms = [c.term.reshape(-1, batch) for c in cells[1:]]
            sources = [c.source.reshape(-1, batch) for c in cells]
            flat = lambda parts: jnp.concatenate(parts, axis=0).T if parts else jnp.zeros((batch, 0), jnp.int32)
            return best, flat(terms), flat(sources)

    else:
        raise ValueError(f"unknown kind {kind!r}")
    return jax.jit(run)
