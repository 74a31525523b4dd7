"""LIME (induct / deduct / abduct), as re-implemented by Wu, Li & Liang (2022).

Spec §1 (`lime_datagen/generate_data.py::gen_one_lime_data`, original vocabulary split). Per
example, 68 distinct data ids are drawn and split into 24 variables ("upper"), 24 "lower"
symbols and 20 "math" symbols. A pattern mixes 2n occurrences of the first n variables with
m math symbols; every used variable gets a substitution of 2..8 lower/math symbols; the
result is the pattern with the substitutions spliced in. The three modes show two of
(pattern, result, substitution string S) and ask for the third, after the header

    <UPPER> used variables <LOWER> 24 lower <MATH> 20 math <sep>

There is no task prefix and no EOS (loaders append EOS). Markers are layout.lime_marker_ids.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline_lib.data.ragged import Ragged, concat_rows, stack
from pipeline_lib.data.vocab import LIME_MARKERS, VocabLayout

LIME_MODES = ("induct", "deduct", "abduct")


@dataclasses.dataclass(frozen=True)
class LimeParams:
    num_chars_range: tuple[int, int] = (3, 5)  # n: variable slots (inclusive)
    pattern_length_range: tuple[int, int] = (5, 19)  # m: math symbols in the pattern
    substitution_length_range: tuple[int, int] = (2, 8)  # symbols per substitution
    num_upper: int = 24
    num_lower: int = 24
    num_math: int = 20
    # input and target word counts (counted as the original does, see `original_word_counts`)
    # must lie in this range, else the whole example is redrawn; never fires at (0, 220)
    length_range: tuple[int, int] = (0, 220)

    def __post_init__(self) -> None:
        # config files give lists; keep the params hashable and comparable
        ranges = ("num_chars_range", "pattern_length_range", "substitution_length_range")
        for name in (*ranges, "length_range"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ranges:
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"lime.{name} must satisfy 1 <= lo <= hi, got {(lo, hi)}")
        if self.num_chars_range[1] > self.num_upper:
            raise ValueError("lime.num_chars_range cannot exceed num_upper variables")
        if min(self.num_upper, self.num_lower, self.num_math) < 1:
            raise ValueError("lime needs at least one upper, lower and math symbol")
        if self.length_range[0] > self.length_range[1]:
            raise ValueError(f"lime.length_range is empty: {self.length_range}")


def lime_min_data_vocab(params: LimeParams = LimeParams()) -> int:
    """Distinct data ids drawn per example (68 by default)."""
    return params.num_upper + params.num_lower + params.num_math


# --- symbol codes ---------------------------------------------------------------------------------
# Inside this module a symbol is a small "code": 0..U-1 the variables, then the lower symbols,
# then the math symbols (the order of the 68 drawn ids), then the 7 markers. Each example maps
# its codes to token ids through its own alphabet row (its 68 ids followed by the marker ids).
@dataclasses.dataclass(frozen=True)
class _Codes:
    upper: int
    lower: int
    math: int

    @property
    def first_lower(self) -> int:
        return self.upper

    @property
    def first_math(self) -> int:
        return self.upper + self.lower

    @property
    def symbols(self) -> int:
        return self.upper + self.lower + self.math

    def marker(self, name: str) -> int:
        return self.symbols + LIME_MARKERS.index(name)

    def header_tail(self) -> list[int]:
        """Everything of the header after the used variables."""
        return (
            [self.marker("<LOWER>")]
            + list(range(self.first_lower, self.first_math))
            + [self.marker("<MATH>")]
            + list(range(self.first_math, self.symbols))
            + [self.marker("<sep>")]
        )


@dataclasses.dataclass(frozen=True)
class LimeDraw:
    """n draws in codes (row i = example i); all three modes are formatted from one draw."""

    symbols: np.ndarray  # [n, 68] token ids of each example's upper, lower and math symbols
    header: Ragged
    pattern: Ragged
    result: Ragged
    substitution: Ragged  # S: `u : [ body ]` blocks, no commas
    num_used: np.ndarray  # k: distinct variables in the pattern

    def replace_rows(self, rows: np.ndarray, other: LimeDraw) -> LimeDraw:
        """This draw with rows[j] replaced by row j of `other`."""
        source = np.arange(self.symbols.shape[0])
        source[rows] = source.size + np.arange(rows.size)

        def merge(a: Ragged, b: Ragged) -> Ragged:
            return stack([a, b]).take(source)

        return LimeDraw(
            symbols=np.concatenate([self.symbols, other.symbols])[source],
            header=merge(self.header, other.header),
            pattern=merge(self.pattern, other.pattern),
            result=merge(self.result, other.result),
            substitution=merge(self.substitution, other.substitution),
            num_used=np.concatenate([self.num_used, other.num_used])[source],
        )


def format_lime(draw: LimeDraw, mode: str, sep: int) -> tuple[Ragged, Ragged]:
    """(inputs, targets) codes of one mode (spec §1.3)."""
    sep_row = Ragged.constant([sep], draw.header.n)
    if mode == "induct":
        return concat_rows(draw.header, draw.result, sep_row, draw.substitution), draw.pattern
    if mode == "deduct":
        return concat_rows(draw.header, draw.pattern, sep_row, draw.substitution), draw.result
    if mode == "abduct":
        return concat_rows(draw.header, draw.pattern, sep_row, draw.result), draw.substitution
    raise ValueError(f"unknown LIME mode {mode!r}; expected one of {LIME_MODES}")


def original_word_counts(draw: LimeDraw, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Input and target lengths as the original's length filter counts them: S still holds
    its k-1 commas at that point (they are deleted only after the check)."""
    commas = draw.num_used - 1
    header = draw.header.lengths
    pattern, result, subst = draw.pattern.lengths, draw.result.lengths, draw.substitution.lengths
    if mode == "induct":
        return header + result + 1 + subst + commas, pattern
    if mode == "deduct":
        return header + pattern + 1 + subst + commas, result
    return header + pattern + 1 + result, subst + commas


# --- sampling -------------------------------------------------------------------------------------
def _distinct_rows(rng: np.random.Generator, n: int, k: int, pool: int) -> np.ndarray:
    """[n, k]: per row a uniformly random ordered sample of k distinct values of range(pool).

    That is random.sample: iid rows without a repeat are exactly such samples, so when repeats
    are rare (68 of 31,998 ids: ~7% of rows) rows with a repeat are simply drawn again; with
    a small pool a random permutation (argsort of iid keys) is used instead.
    """
    if k > pool:
        raise ValueError(f"LIME needs {k} distinct data ids but the layout has {pool}")
    acceptance = float(np.prod(1.0 - np.arange(k) / pool))
    if acceptance < 0.25:
        return np.argsort(rng.random((n, pool)), axis=1)[:, :k]
    out = np.empty((n, k), np.int64)
    pending = np.arange(n)
    while pending.size:
        draws = rng.integers(0, pool, (pending.size, k))
        distinct = (np.diff(np.sort(draws, axis=1), axis=1) != 0).all(axis=1)
        out[pending[distinct]] = draws[distinct]
        pending = pending[~distinct]
    return out


def used_in_set_order(symbols: np.ndarray, var_codes: np.ndarray, num_chars: np.ndarray) -> Ragged:
    """The codes of the variables a pattern uses, per example, in the original's order.

    AMBIGUOUS (spec §1.8): the original orders them as list(set(pattern_chars)) over the
    variables' token ids, i.e. CPython's set iteration order. Building that very set of the
    same ints, inserted in draw order, reproduces it exactly (as the spec recommends; not
    first-occurrence order). This is the generator's only per-example Python loop.
    """
    occurrence_ids = np.take_along_axis(symbols, var_codes, axis=1).tolist()
    rows = []
    for ids, codes, k in zip(occurrence_ids, var_codes.tolist(), num_chars.tolist()):
        code_of = dict(zip(ids, codes))
        rows.append([code_of[u] for u in set(ids[: 2 * k])])
    return Ragged.from_rows(rows)


def _expand(
    tokens: Ragged, expand: np.ndarray, length_of_var: np.ndarray, body_of_var: np.ndarray
) -> Ragged:
    """Every token flagged in `expand` (a variable code) replaced by its row's substitution.

    length_of_var [n, V] and body_of_var [n, V, max_len] are indexed by variable code.
    """
    rows = tokens.row_ids()
    var = np.where(expand, tokens.values, 0)
    piece_lengths = np.where(expand, length_of_var[rows, var], 1)
    piece_of = np.repeat(np.arange(tokens.values.size), piece_lengths)
    inner = np.arange(piece_of.size) - np.repeat(
        np.cumsum(piece_lengths) - piece_lengths, piece_lengths
    )
    body = body_of_var[rows[piece_of], var[piece_of], inner]
    values = np.where(expand[piece_of], body, tokens.values[piece_of])
    ends = np.concatenate([[0], np.cumsum(piece_lengths)])[tokens.offsets]
    return Ragged.from_lengths(values, np.diff(ends))


def draw_lime(
    rng: np.random.Generator, n: int, layout: VocabLayout, params: LimeParams = LimeParams()
) -> LimeDraw:
    """n independent LIME draws (spec §1.2); the same for every mode."""
    codes = _Codes(params.num_upper, params.num_lower, params.num_math)
    symbols = layout.data_lo + _distinct_rows(rng, n, codes.symbols, layout.num_data_ids)
    (n_lo, n_hi), (m_lo, m_hi) = params.num_chars_range, params.pattern_length_range
    s_lo, s_hi = params.substitution_length_range
    num_chars = rng.integers(n_lo, n_hi + 1, n)
    num_math = rng.integers(m_lo, m_hi + 1, n)

    # pattern: 2n variable occurrences (pc) from the first n variables plus m math symbols,
    # shuffled. Slots beyond an example's 2n and m get key 2.0, so the shuffle (argsort of
    # uniform keys) moves them past the end.
    var_codes = rng.integers(0, num_chars[:, None], (n, 2 * n_hi))
    math_codes = codes.first_math + rng.integers(0, params.num_math, (n, m_hi))
    in_use = np.concatenate(
        [
            np.arange(2 * n_hi)[None, :] < 2 * num_chars[:, None],
            np.arange(m_hi)[None, :] < num_math[:, None],
        ],
        axis=1,
    )
    keys = np.where(in_use, rng.random(in_use.shape), 2.0)
    slot_codes = np.concatenate([var_codes, math_codes], axis=1)
    shuffled = np.take_along_axis(slot_codes, np.argsort(keys, axis=1), axis=1)
    pattern_lengths = 2 * num_chars + num_math
    pattern = Ragged.from_lengths(
        shuffled[np.arange(shuffled.shape[1])[None, :] < pattern_lengths[:, None]],
        pattern_lengths,
    )

    # substitutions: the j-th used variable (set order) gets body j, of 2..8 symbols drawn
    # from LO ++ MA (44 symbols; the codes of LO ++ MA are contiguous)
    body_lengths = rng.integers(s_lo, s_hi + 1, (n, n_hi))
    body_codes = codes.first_lower + rng.integers(
        0, params.num_lower + params.num_math, (n, n_hi, s_hi)
    )
    used = used_in_set_order(symbols, var_codes, num_chars)
    rows, slot = used.row_ids(), used.positions()
    length_of_var = np.zeros((n, n_hi), np.int64)
    length_of_var[rows, used.values] = body_lengths[rows, slot]
    body_of_var = np.zeros((n, n_hi, s_hi), np.int64)
    body_of_var[rows, used.values] = body_codes[rows, slot]

    result = _expand(pattern, pattern.values < codes.upper, length_of_var, body_of_var)
    # S: a frame `u : [ u ]` per used variable, whose inner u is then expanded to its body
    frames = np.stack(
        [
            used.values,
            np.full(used.values.size, codes.marker(":")),
            np.full(used.values.size, codes.marker("[")),
            used.values,
            np.full(used.values.size, codes.marker("]")),
        ],
        axis=1,
    )
    frame_rows = Ragged.from_lengths(frames.ravel(), 5 * used.lengths)
    expand_inner = np.tile(np.array([False, False, False, True, False]), used.values.size)
    substitution = _expand(frame_rows, expand_inner, length_of_var, body_of_var)
    upper_marker = Ragged.constant([codes.marker("<UPPER>")], n)
    header = concat_rows(upper_marker, used, Ragged.constant(codes.header_tail(), n))
    return LimeDraw(symbols, header, pattern, result, substitution, used.lengths)


def _to_ids(codes: Ragged, alphabets: np.ndarray) -> Ragged:
    return Ragged(alphabets[codes.row_ids(), codes.values], codes.offsets)


def generate_lime(
    rng: np.random.Generator,
    n: int,
    mode: str,
    layout: VocabLayout,
    params: LimeParams = LimeParams(),
) -> tuple[Ragged, Ragged]:
    """n LIME examples of one mode: (inputs, targets) token ids, no EOS, no task prefix.

    Symbols are drawn from the layout's data ids [data_lo, data_hi). The draws do not depend
    on the mode, so the same rng state gives the three modes of the same examples (unless the
    length filter redraws one, which never happens at the default length_range).
    """
    if mode not in LIME_MODES:
        raise ValueError(f"unknown LIME mode {mode!r}; expected one of {LIME_MODES}")
    codes = _Codes(params.num_upper, params.num_lower, params.num_math)
    lo, hi = params.length_range

    def out_of_range(d: LimeDraw) -> np.ndarray:
        inputs, targets = original_word_counts(d, mode)
        return (inputs < lo) | (inputs > hi) | (targets < lo) | (targets > hi)

    draw = draw_lime(rng, n, layout, params)
    bad = np.flatnonzero(out_of_range(draw))
    while bad.size:  # the original redraws the whole example, its 68 symbols included
        redrawn = draw_lime(rng, bad.size, layout, params)
        draw = draw.replace_rows(bad, redrawn)
        bad = bad[out_of_range(redrawn)]

    inputs, targets = format_lime(draw, mode, codes.marker("<sep>"))
    markers = np.array([layout.lime_marker_ids[m] for m in LIME_MARKERS], np.int64)
    alphabets = np.concatenate([draw.symbols, np.broadcast_to(markers, (n, markers.size))], axis=1)
    return _to_ids(inputs, alphabets), _to_ids(targets, alphabets)
