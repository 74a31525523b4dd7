"""T5's span-corruption objective, ported to numpy (no TensorFlow, no seqio).

T5's `preprocessors.span_corruption` (the objective Wu et al. 2022 applied to the nesting
language, spec §3.5) is, in order:

1. `reduce_concat_tokens(batch_size=128)`: concatenate consecutive examples, no separator
   (it also drops every id 0, which it treats as padding)      -> `concat_groups`
2. `split_tokens(max_tokens_per_segment=W)`: cut each concatenation into windows of W
   tokens; only the final window of each concatenation may be shorter -> `split_into_windows`
3. `denoise` with `random_spans_noise_mask`, `noise_span_to_unique_sentinel` (inputs) and
   `nonnoise_span_to_unique_sentinel` (targets)                 -> `span_corrupt_windows`

W comes from `random_spans_helper` (`split_lengths_for_targets`). EOS is not added here: the
loaders append it, which is what T5's `append_eos_after_trim` does after this preprocessor.
Randomness comes only from the numpy Generator that is passed in (T5 uses stateless TF seeds,
so no bit-level match is possible; the distributions are the same).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline_lib.data.ragged import Ragged


# --- sizes ----------------------------------------------------------------------------------------
def noise_span_counts(
    length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """(number of noise tokens, number of noise spans) of one window, exactly as T5 computes them.

    T5 computes in float32 and rounds half to even (tf.round); float32 matters, e.g. 190 * 0.15
    is 28.5 in float64 (rounds to 28) but 28.500002 in float32 (rounds to 29). Lengths below 2 are
    raised to 2 first, as in T5 (the mask is cut back to the real length afterwards).
    """
    length = max(int(length), 2)
    scaled = np.float32(length) * np.float32(noise_density)
    num_noise = int(np.rint(scaled))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = int(np.rint(np.float32(num_noise) / np.float32(mean_noise_span_length)))
    return num_noise, max(num_spans, 1)


def split_lengths_for_targets(
    inputs_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """T5's `random_spans_helper`: (raw window length, targets length) for an inputs length.

    The raw window is the longest token count whose corrupted inputs (non-noise tokens, one
    sentinel per span, one EOS) still fit in `inputs_length`; the targets length counts the
    noise tokens, one sentinel per span and one EOS. E.g. 256 -> (284, 58), 512 -> (568, 114).
    This helper uses Python floats and round(), as T5's does (unlike the per-window mask).
    """

    def corrupted_lengths(tokens_length: int) -> tuple[int, int]:
        num_noise = int(round(tokens_length * noise_density))
        num_nonnoise = tokens_length - num_noise
        num_spans = int(round(num_noise / mean_noise_span_length))
        return num_nonnoise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while corrupted_lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = corrupted_lengths(tokens_length)
    # T5's "minor hack" for noise_density 0.5 (never hit at 0.15, kept for fidelity)
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


# --- noise masks ----------------------------------------------------------------------------------
def _sorted_random_subsets(
    rng: np.random.Generator, count: int, population: int, size: int
) -> np.ndarray:
    """[count, size]: per row a uniformly random `size`-subset of range(population), ascending.

    Sorted iid draws without a repeat are exactly a uniform subset, so when repeats are rare
    (acceptance >= 1/4) rows are drawn that way and the few with a repeat drawn again; else a
    random permutation (argsort of iid keys) picks the subset. Either way one fixed sequence
    of draws for a given rng state.
    """
    if size == 0:
        return np.zeros((count, 0), np.int64)
    acceptance = float(np.prod(1.0 - np.arange(size) / population))
    if acceptance < 0.25:
        chosen = np.argsort(rng.random((count, population)), axis=1)[:, :size]
        return np.sort(chosen, axis=1)
    out = np.empty((count, size), np.int64)
    pending = np.arange(count)
    while pending.size:
        draws = np.sort(rng.integers(0, population, (pending.size, size)), axis=1)
        distinct = (np.diff(draws, axis=1) != 0).all(axis=1)
        out[pending[distinct]] = draws[distinct]
        pending = pending[~distinct]
    return out


def _random_segmentations(
    rng: np.random.Generator, count: int, num_items: int, num_segments: int
) -> np.ndarray:
    """[count, num_segments] positive lengths summing to num_items, each row uniformly random.

    T5 shuffles an indicator holding num_segments-1 ones among num_items-1 slots (slot j set =
    a new segment starts at item j+1), i.e. a uniformly random subset of cut slots.
    """
    cuts = _sorted_random_subsets(rng, count, num_items - 1, num_segments - 1) + 1
    bounds = np.concatenate(
        [
            np.zeros((count, 1), np.int64),
            cuts,
            np.full((count, 1), num_items, np.int64),
        ],
        axis=1,
    )
    return np.diff(bounds, axis=1)


def random_spans_noise_masks(
    rng: np.random.Generator,
    count: int,
    length: int,
    noise_density: float,
    mean_noise_span_length: float,
) -> np.ndarray:
    """[count, length] bool: `count` independent T5 noise masks for windows of one length.

    Non-noise and noise spans alternate, starting with non-noise, so the mask always ends in
    noise (for length >= 2); every arrangement with T5's span counts is equally likely.
    """
    if noise_density == 0.0 or length == 0:
        return np.zeros((count, length), bool)
    padded = max(length, 2)
    num_noise, num_spans = noise_span_counts(length, noise_density, mean_noise_span_length)
    if padded - num_noise < num_spans:
        # T5 fails here too (its span-length tensors cannot be stacked)
        raise ValueError(
            f"{length} tokens at noise_density {noise_density} and mean_noise_span_length "
            f"{mean_noise_span_length} give {num_spans} noise spans but only "
            f"{padded - num_noise} non-noise tokens to separate them"
        )
    noise_lengths = _random_segmentations(rng, count, num_noise, num_spans)
    nonnoise_lengths = _random_segmentations(rng, count, padded - num_noise, num_spans)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=2).ravel()
    span_is_noise = np.tile(np.array([False, True]), count * num_spans)
    return np.repeat(span_is_noise, interleaved).reshape(count, padded)[:, :length]


def random_spans_noise_mask(
    rng: np.random.Generator,
    length: int,
    noise_density: float,
    mean_noise_span_length: float,
) -> np.ndarray:
    """One T5 noise mask of the given length (see `random_spans_noise_masks`)."""
    return random_spans_noise_masks(rng, 1, length, noise_density, mean_noise_span_length)[0]


# --- applying a mask ------------------------------------------------------------------------------
def _unique_sentinel_spans(
    windows: Ragged,
    row_starts_flag: np.ndarray,
    mask: np.ndarray,
    masked_per_row: np.ndarray,
    sentinel_ids: np.ndarray,
) -> Ragged:
    """T5's noise_span_to_unique_sentinel on every row of a flat batch.

    The first token of every run of `mask` tokens becomes the next sentinel of its row
    (sentinel_ids[0], [1], ...); the rest of the run is dropped. `masked_per_row` is the
    number of `mask` tokens in each row (the caller has it for free).
    """
    prev_is_masked = np.empty_like(mask)
    prev_is_masked[1:] = mask[:-1]
    prev_is_masked[:1] = False
    prev_is_masked[row_starts_flag] = False  # a row's first token has no predecessor
    first = np.flatnonzero(mask & ~prev_is_masked)
    # spans are few: their rows and ranks are computed on span starts only
    row = np.searchsorted(windows.offsets, first, side="right") - 1
    spans_per_row = np.bincount(row, minlength=windows.n)
    rank = np.arange(first.size) - np.repeat(
        np.cumsum(spans_per_row) - spans_per_row, spans_per_row
    )
    if rank.size and rank.max() >= sentinel_ids.size:
        raise ValueError(
            f"a window has {int(rank.max()) + 1} noise spans but only "
            f"{sentinel_ids.size} sentinel ids are available"
        )
    values = windows.values.copy()
    values[first] = sentinel_ids[rank]
    # every span keeps one token (its sentinel), every other masked token is dropped
    kept_per_row = windows.lengths - masked_per_row + spans_per_row
    return Ragged.from_lengths(values[~(mask & prev_is_masked)], kept_per_row)


def corrupt_with_masks(
    windows: Ragged, mask: np.ndarray, sentinel_ids: Sequence[int]
) -> tuple[Ragged, Ragged]:
    """(inputs, targets) of every window for a given flat noise mask (one bool per token).

    inputs: each noise span replaced by one sentinel; targets: each non-noise span replaced by
    one sentinel, i.e. `s0 span0 s1 span1 ...` when the mask starts with non-noise (as T5's do).
    """
    sentinels = np.asarray(sentinel_ids, dtype=windows.values.dtype)
    mask = np.asarray(mask, bool)
    nonempty = windows.lengths > 0
    row_starts_flag = np.zeros(windows.values.size, bool)
    row_starts_flag[windows.starts[nonempty]] = True
    noise_before = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
    noise_per_row = noise_before[windows.offsets[1:]] - noise_before[windows.offsets[:-1]]
    inputs = _unique_sentinel_spans(windows, row_starts_flag, mask, noise_per_row, sentinels)
    targets = _unique_sentinel_spans(
        windows, row_starts_flag, ~mask, windows.lengths - noise_per_row, sentinels
    )
    return inputs, targets


def span_corrupt_windows(
    rng: np.random.Generator,
    windows: Ragged,
    sentinel_ids: Sequence[int],
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> tuple[Ragged, Ragged]:
    """Span-corrupt every row of `windows` independently (masks drawn in batches per length)."""
    mask = np.zeros(windows.values.size, bool)
    lengths = windows.lengths
    # ascending unique lengths: a fixed draw order, so the same rng state gives the same masks
    for length in np.unique(lengths):
        rows = np.nonzero(lengths == length)[0]
        masks = random_spans_noise_masks(
            rng, rows.size, int(length), noise_density, mean_noise_span_length
        )
        positions = windows.starts[rows][:, None] + np.arange(int(length))[None, :]
        mask[positions.ravel()] = masks.ravel()
    return corrupt_with_masks(windows, mask, sentinel_ids)


def span_corruption(
    rng: np.random.Generator,
    tokens_1d: np.ndarray,
    sentinel_ids: Sequence[int],
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of one token window, T5-style, without EOS."""
    tokens = np.asarray(tokens_1d, dtype=np.int64)
    window = Ragged.from_lengths(tokens, np.array([tokens.size]))
    inputs, targets = span_corrupt_windows(
        rng, window, sentinel_ids, noise_density, mean_noise_span_length
    )
    return inputs.values, targets.values


# --- T5's concatenation and splitting -------------------------------------------------------------
def concat_groups(rows: Ragged, group_size: int) -> Ragged:
    """reduce_concat_tokens: rows [0, g), [g, 2g), ... each concatenated into one row.

    The last group may hold fewer rows. Pad ids (0) are not dropped here: callers that can emit
    0 must remove it first, as T5 does (the nesting generator never emits it).
    """
    if group_size < 1:
        raise ValueError(f"group_size must be positive, got {group_size}")
    group_offsets = rows.offsets[np.append(np.arange(0, rows.n, group_size), rows.n)]
    return Ragged(rows.values, group_offsets)


def split_into_windows(rows: Ragged, window_length: int) -> Ragged:
    """split_tokens: each row cut into windows of `window_length`; only its last may be shorter.

    T5 keeps that shorter final window (it pads to a multiple of the length, reshapes and then
    strips the padding), so it is kept here too. Empty rows give no window.
    """
    if window_length < 1:
        raise ValueError(f"window_length must be positive, got {window_length}")
    lengths = rows.lengths
    num_windows = -(-lengths // window_length)
    window_row = np.repeat(np.arange(rows.n), num_windows)
    first_window = np.repeat(np.cumsum(num_windows) - num_windows, num_windows)
    index_in_row = np.arange(window_row.size) - first_window
    starts = rows.starts[window_row] + index_in_row * window_length
    # the windows tile the values without gaps, so their starts plus the end are the offsets
    offsets = np.append(starts, rows.values.size).astype(np.int64)
    return Ragged(rows.values, offsets)
