"""Ragged integer arrays: the in-memory form of a batch of variable-length token lists.

A `Ragged` is a flat `values` array plus `offsets` (length n+1, offsets[0] == 0): row i is
values[offsets[i]:offsets[i+1]]. Every generator in `pipeline_lib.data` works on whole batches
of rows at once with these helpers, so no Python loop runs per token (or, mostly, per example).
The same layout is what `store.py` writes to disk, so a split is memory-mapped without parsing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Ragged:
    values: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or self.offsets.size == 0 or self.offsets[0] != 0:
            raise ValueError("offsets must be 1-D, non-empty and start at 0")
        if self.offsets[-1] != self.values.size:
            raise ValueError(
                f"offsets end at {int(self.offsets[-1])} but there are {self.values.size} values"
            )

    # --- construction -----------------------------------------------------------------------
    @staticmethod
    def from_lengths(values: np.ndarray, lengths: np.ndarray) -> Ragged:
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return Ragged(np.asarray(values), offsets)

    @staticmethod
    def from_rows(rows: Sequence[Sequence[int]], dtype=np.int64) -> Ragged:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        flat = [t for r in rows for t in r]
        return Ragged.from_lengths(np.asarray(flat, dtype=dtype), lengths)

    @staticmethod
    def constant(row: Sequence[int], n: int, dtype=np.int64) -> Ragged:
        """n copies of the same row (a task prefix, a separator)."""
        row_arr = np.asarray(row, dtype=dtype)
        return Ragged.from_lengths(np.tile(row_arr, n), np.full(n, row_arr.size, np.int64))

    @staticmethod
    def singletons(values: np.ndarray) -> Ragged:
        """One-token rows."""
        return Ragged.from_lengths(np.asarray(values), np.ones(len(values), np.int64))

    # --- views --------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.offsets.size - 1

    def __len__(self) -> int:
        return self.n

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def starts(self) -> np.ndarray:
        return self.offsets[:-1]

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def to_rows(self) -> list[list[int]]:
        flat = self.values.tolist()
        offs = self.offsets.tolist()
        return [flat[offs[i] : offs[i + 1]] for i in range(self.n)]

    def row_ids(self) -> np.ndarray:
        """For every value, the index of the row it belongs to."""
        return np.repeat(np.arange(self.n, dtype=np.int64), self.lengths)

    def positions(self) -> np.ndarray:
        """For every value, its position inside its row."""
        return np.arange(self.values.size, dtype=np.int64) - np.repeat(self.starts, self.lengths)

    def astype(self, dtype) -> Ragged:
        return Ragged(self.values.astype(dtype, copy=False), self.offsets)

    def equals(self, other: Ragged) -> bool:
        return np.array_equal(self.offsets, other.offsets) and np.array_equal(
            self.values, other.values
        )

    # --- transformations ----------------------------------------------------------------------
    def take(self, rows: np.ndarray) -> Ragged:
        """Rows in the given order (a gather of whole rows)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        out = Ragged.from_lengths(np.empty(int(lengths.sum()), self.values.dtype), lengths)
        src = np.repeat(self.starts[rows] - out.starts, lengths) + np.arange(out.values.size)
        out.values[:] = self.values[src]
        return out

    def take_sorted(self, rows: np.ndarray) -> Ragged:
        """Rows with strictly increasing indices: a boolean mask, cheaper than a gather."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size > 1 and not (np.diff(rows) > 0).all():
            raise ValueError("take_sorted needs strictly increasing row indices")
        keep_row = np.zeros(self.n, bool)
        keep_row[rows] = True
        values = self.values[np.repeat(keep_row, self.lengths)]
        return Ragged.from_lengths(values, self.lengths[rows])

    def mask(self, keep: np.ndarray) -> Ragged:
        """Keep the values where `keep` (one bool per value) is true; rows may become empty."""
        kept_per_row = np.bincount(self.row_ids()[keep], minlength=self.n)
        return Ragged.from_lengths(self.values[keep], kept_per_row)

    def reverse_rows(self) -> Ragged:
        rows = self.row_ids()
        src = self.offsets[rows] + self.offsets[rows + 1] - 1 - np.arange(self.values.size)
        return Ragged(self.values[src], self.offsets)

    def permute_within_rows(self, rng: np.random.Generator) -> Ragged:
        """A uniform random permutation of every row.

        The rows are padded into a matrix, each matrix row is permuted (numpy's Fisher-Yates)
        and the padding is dropped again: the real entries end up in uniform random order.
        """
        padded = self.to_padded(fill=-1, dtype=np.int64)
        shuffled = rng.permuted(padded, axis=1)
        return Ragged(shuffled[shuffled >= 0].astype(self.values.dtype), self.offsets)

    def to_padded(self, fill: int, dtype=None, width: int | None = None) -> np.ndarray:
        """An [n, width] matrix with row i's values left-aligned and `fill` after them."""
        width = int(self.lengths.max(initial=0)) if width is None else width
        out = np.full((self.n, width), fill, dtype or self.values.dtype)
        out[self.valid_mask(width)] = self.values
        return out

    def valid_mask(self, width: int) -> np.ndarray:
        """[n, width] bool: True where a padded matrix holds a real value."""
        return np.arange(width)[None, :] < self.lengths[:, None]

    def fill_empty(self, marker: int) -> Ragged:
        """Replace empty rows by the one-token row [marker] (the Wu et al. empty-output rule)."""
        empty = self.lengths == 0
        if not empty.any():
            return self
        lengths = np.where(empty, 1, self.lengths)
        out = Ragged.from_lengths(np.empty(int(lengths.sum()), self.values.dtype), lengths)
        is_marker = np.repeat(empty, lengths)
        out.values[~is_marker] = self.values
        out.values[is_marker] = marker
        return out


def concat_rows(*parts: Ragged) -> Ragged:
    """Row-wise concatenation: row i of the result is parts[0].row(i) ++ parts[1].row(i) ++ ..."""
    n = parts[0].n
    if any(p.n != n for p in parts):
        raise ValueError("all parts must have the same number of rows")
    dtype = np.result_type(*[p.values.dtype for p in parts])
    lengths = sum(p.lengths for p in parts)
    out = Ragged.from_lengths(np.empty(int(lengths.sum()), dtype), lengths)
    shift = out.starts.copy()
    for part in parts:
        dest = np.repeat(shift - part.starts, part.lengths) + np.arange(part.values.size)
        out.values[dest] = part.values
        shift += part.lengths
    return out


def stack(parts: Sequence[Ragged]) -> Ragged:
    """Concatenation along rows: all rows of parts[0], then all rows of parts[1], ..."""
    if not parts:
        return Ragged(np.zeros(0, np.int64), np.zeros(1, np.int64))
    values = np.concatenate([p.values for p in parts])
    lengths = np.concatenate([p.lengths for p in parts])
    return Ragged.from_lengths(values, lengths)


def row_hashes(r: Ragged) -> np.ndarray:
    """A 64-bit hash per row (uint64, wrapping arithmetic): sum of mixed (value, position).

    Used only to find candidate duplicate rows quickly; `first_occurrences` confirms every
    candidate by comparing the rows themselves, so a hash collision never merges two rows.
    """
    out = np.zeros(r.n, np.uint64)
    nonempty = r.lengths > 0
    if r.values.size == 0:
        return out
    with np.errstate(over="ignore"):
        mixed = r.values.astype(np.uint64) + np.uint64(1)
        mixed *= np.uint64(0x9E3779B97F4A7C15)
        mixed ^= r.positions().astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        mixed ^= mixed >> np.uint64(31)
        out[nonempty] = np.add.reduceat(mixed, r.starts[nonempty])
        out ^= r.lengths.astype(np.uint64) * np.uint64(0x100000001B3)
    return out


def first_occurrences(r: Ragged, hashes: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of the rows that are the first occurrence of their content (exact).

    `hashes` (one uint64 per row, e.g. computed per block in worker processes) may be given;
    equal hashes are only candidates and are confirmed by comparing the rows.
    """
    if r.n == 0:
        return np.zeros(0, np.int64)
    h = row_hashes(r) if hashes is None else np.asarray(hashes, np.uint64)
    order = np.argsort(h, kind="stable")  # equal hashes keep increasing row order
    hs = h[order]
    same_as_prev = np.zeros(r.n, bool)
    same_as_prev[1:] = hs[1:] == hs[:-1]
    keep = np.ones(r.n, bool)
    candidates = np.nonzero(same_as_prev)[0]
    if candidates.size:
        group_start = np.maximum.accumulate(np.where(same_as_prev, 0, np.arange(r.n)))
        for pos in candidates:
            row = order[pos]
            content = r.row(row)
            # compare with every earlier kept member of the hash group (almost always one)
            for prev_pos in range(group_start[pos], pos):
                prev = order[prev_pos]
                if keep[prev] and np.array_equal(r.row(prev), content):
                    keep[row] = False
                    break
    return np.nonzero(keep)[0]
