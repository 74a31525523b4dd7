"""Input pipeline over the memory-mapped corpora: numpy only (no TensorFlow, no seqio).

What seqio + T5X's `EncDecFeatureConverter` do, reimplemented on `Ragged` arrays:

* every example is trimmed to `length - 1` tokens and EOS (id 1) is appended (seqio's
  `append_eos_after_trim`; the store keeps examples without EOS), then padded with 0;
* `decoder_input_tokens` = targets shifted right with 0 (within each segment when packed);
* `decoder_loss_weights` = 1 on non-padding targets;
* optional packing (T5-style): several examples per row, with `*_segment_ids` (1, 2, ...; 0 =
  padding) and `*_positions` (restarting at 0 in every segment);
* several sources are mixed at equal (or given) rates, as the `lime` Mixture of its three modes
  (`default_rate=1`): every example's source is drawn at random.

Determinism and resume. The stream is a pure function of (seed, position): source `s` is read
in epochs, epoch `e` in the order of a permutation drawn from `numpy.random.default_rng((seed,
crc32(s), e))`; the source of the m-th mixed example comes from a table drawn per chunk of
`MIX_CHUNK` examples from `default_rng((seed, MIX_STREAM, chunk))`. The position is the small
JSON state `{"mixed": m, "positions": {source: [epoch, index]}}`; it is saved in every
checkpoint and restored, so a resumed run reads exactly the batches the original would have.

Other tasks (decoder-only LM, BERT MLM over pre-built instance arrays) plug in through the
`BatchPipeline` protocol; `ArrayPipeline` covers any dict of equal-length arrays.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from pipeline_lib.data.ragged import Ragged

PAD_ID = 0
EOS_ID = 1
MIX_CHUNK = 4096
MIX_STREAM = 0x4D4958  # "MIX": keeps the mixing draws apart from the per-source orders

Batch = dict[str, np.ndarray]


@runtime_checkable
class BatchPipeline(Protocol):
    """An endless, resumable stream of fixed-shape numpy batches.

    `get_state()` is a small JSON-able value describing the position *after* the last batch
    returned; `set_state(s)` on a fresh pipeline built with the same data and arguments makes
    the next batch the one the original pipeline would have returned next.
    """

    def __next__(self) -> Batch: ...

    def get_state(self) -> dict: ...

    def set_state(self, state: dict) -> None: ...


class DataStateError(ValueError):
    """A saved data position that does not belong to this pipeline's data."""


# --- example-level numerics (pure functions) -----------------------------------------------


def trim_with_eos(
    data: Ragged, rows: np.ndarray, length: int, eos_id: int = EOS_ID, pad_id: int = PAD_ID
) -> tuple[np.ndarray, np.ndarray]:
    """Rows `rows` of `data`, trimmed to length-1 tokens + EOS, padded: ([n, length] int32, lengths).

    Reads only the requested rows from (possibly memory-mapped) `data.values`.
    """
    if length < 1:
        raise ValueError(f"feature length must be >= 1, got {length}")
    rows = np.asarray(rows, np.int64)
    starts = data.offsets[rows]
    kept = np.minimum(data.offsets[rows + 1] - starts, length - 1)
    cols = np.arange(length - 1)
    valid = cols[None, :] < kept[:, None]
    out = np.full((rows.size, length), pad_id, np.int32)
    out[:, :-1][valid] = data.values[(starts[:, None] + cols[None, :])[valid]]
    out[np.arange(rows.size), kept] = eos_id
    return out, kept + 1


def shift_right(targets: np.ndarray, segment_ids: np.ndarray | None = None) -> np.ndarray:
    """Decoder inputs: targets shifted right by one with 0 in front (of every segment if packed)."""
    out = np.zeros_like(targets)
    out[:, 1:] = targets[:, :-1]
    if segment_ids is not None:
        starts = np.ones_like(segment_ids, bool)
        starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
        out[starts] = 0
    return out


def encdec_features(inputs: np.ndarray, targets: np.ndarray) -> Batch:
    """The unpacked T5 batch from padded [B, Li] inputs and [B, Lt] targets."""
    return {
        "encoder_input_tokens": inputs,
        "decoder_target_tokens": targets,
        "decoder_input_tokens": shift_right(targets),
        "decoder_loss_weights": (targets != PAD_ID).astype(np.float32),
    }


def greedy_pack(
    input_lengths: np.ndarray, target_lengths: np.ndarray, lengths: tuple[int, int], rows: int
) -> tuple[np.ndarray, int]:
    """Assign examples, in order, to `rows` packed rows: (row of each consumed example, count).

    An example goes into the current row if both of its features still fit, otherwise it opens
    the next row; packing stops at the first example that fits in no remaining row, which is
    then *not* consumed (it starts the next batch). Sequential, like seqio's TF-ops packer.
    """
    max_in, max_tg = lengths
    row, used_in, used_tg = 0, 0, 0
    assignment = []
    for li, lt in zip(input_lengths.tolist(), target_lengths.tolist()):
        if used_in + li > max_in or used_tg + lt > max_tg:
            row, used_in, used_tg = row + 1, 0, 0
            if row == rows:
                break
        assignment.append(row)
        used_in += li
        used_tg += lt
    return np.asarray(assignment, np.int64), len(assignment)


def _place_segments(
    padded: np.ndarray, lengths: np.ndarray, row_of: np.ndarray, rows: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate examples into their rows: (tokens, segment_ids, positions), each [rows, width]."""
    n = row_of.size
    # offset of each example inside its row = tokens of the earlier examples of that row
    ends = np.cumsum(lengths)
    row_first = np.searchsorted(row_of, row_of, side="left")  # row_of is non-decreasing
    before_row = np.where(row_first > 0, ends[row_first - 1], 0)
    offset = ends - lengths - before_row
    segment = np.arange(n) - row_first + 1
    tokens = np.zeros((rows, width), np.int32)
    segment_ids = np.zeros((rows, width), np.int32)
    positions = np.zeros((rows, width), np.int32)
    pos = np.arange(padded.shape[1])
    valid = pos[None, :] < lengths[:, None]
    r = np.broadcast_to(row_of[:, None], valid.shape)[valid]
    c = (offset[:, None] + pos[None, :])[valid]
    tokens[r, c] = padded[valid]
    segment_ids[r, c] = np.broadcast_to(segment[:, None], valid.shape)[valid]
    positions[r, c] = np.broadcast_to(pos[None, :], valid.shape)[valid]
    return tokens, segment_ids, positions


def packed_encdec_features(
    inputs: np.ndarray,
    input_lengths: np.ndarray,
    targets: np.ndarray,
    target_lengths: np.ndarray,
    row_of: np.ndarray,
    rows: int,
    lengths: tuple[int, int],
) -> Batch:
    enc, enc_seg, enc_pos = _place_segments(inputs, input_lengths, row_of, rows, lengths[0])
    dec, dec_seg, dec_pos = _place_segments(targets, target_lengths, row_of, rows, lengths[1])
    return {
        "encoder_input_tokens": enc,
        "encoder_segment_ids": enc_seg,
        "encoder_positions": enc_pos,
        "decoder_target_tokens": dec,
        "decoder_input_tokens": shift_right(dec, dec_seg),
        "decoder_segment_ids": dec_seg,
        "decoder_positions": dec_pos,
        "decoder_loss_weights": (dec != PAD_ID).astype(np.float32),
    }


# --- resumable example order ---------------------------------------------------------------


def _source_key(name: str) -> int:
    return zlib.crc32(name.encode())


class _Order:
    """Epoch-shuffled row order of one source, with the last few epochs' permutations cached."""

    def __init__(self, name: str, n: int, seed: int, shuffle: bool):
        if n <= 0:
            raise ValueError(f"source {name!r} has no examples")
        self.name, self.n, self.seed, self.shuffle = name, n, seed, shuffle
        self._cache: dict[int, np.ndarray] = {}

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            epoch = 0  # the same order every epoch
        if epoch not in self._cache:
            if not self.shuffle:
                self._cache[0] = np.arange(self.n, dtype=np.int64)
                return self._cache[0]
            rng = np.random.default_rng((self.seed, _source_key(self.name), epoch))
            self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}
            self._cache[epoch] = rng.permutation(self.n)
        return self._cache[epoch]

    def take(self, position: tuple[int, int], k: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The next k row indices from `position` = (epoch, index), and the position after."""
        epoch, index = position
        parts = []
        while k > 0:
            chunk = self.epoch_order(epoch)[index : index + k]
            parts.append(chunk)
            k -= chunk.size
            index += chunk.size
            if index == self.n:
                epoch, index = epoch + 1, 0
        rows = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return rows, (epoch, index)

    def advance(self, position: tuple[int, int], k: int) -> tuple[int, int]:
        """The position k examples after `position` (what `take` returns, without the rows)."""
        return divmod(position[0] * self.n + position[1] + k, self.n)


class _Mixture:
    """Which source each example of the mixed stream comes from (equal or given rates)."""

    def __init__(self, rates: np.ndarray, seed: int):
        self.p = rates / rates.sum()
        self.seed = seed
        self._chunk: tuple[int, np.ndarray] | None = None

    def _table(self, chunk: int) -> np.ndarray:
        if self._chunk is None or self._chunk[0] != chunk:
            rng = np.random.default_rng((self.seed, MIX_STREAM, chunk))
            self._chunk = (chunk, rng.choice(self.p.size, size=MIX_CHUNK, p=self.p))
        return self._chunk[1]

    def sources(self, start: int, k: int) -> np.ndarray:
        if self.p.size == 1:
            return np.zeros(k, np.int64)
        out = np.empty(k, np.int64)
        done = 0
        while done < k:
            chunk, off = divmod(start + done, MIX_CHUNK)
            part = self._table(chunk)[off : off + k - done]
            out[done : done + part.size] = part
            done += part.size
        return out


# --- the encoder-decoder pipeline ----------------------------------------------------------


class Seq2SeqPipeline:
    """Batches of T5 features from {source: (inputs Ragged, targets Ragged)} (see module doc).

    `sources` is what `pipeline_lib.data.corpus.load_corpus(dir, "train")` returns.
    """

    def __init__(
        self,
        sources: Mapping[str, tuple[Ragged, Ragged]],
        batch_size: int,
        feature_lengths: Mapping[str, int],
        seed: int,
        *,
        shuffle: bool = True,
        pack: bool = False,
        rates: Mapping[str, float] | None = None,
    ):
        if not sources:
            raise ValueError("no sources given")
        self.names = sorted(sources)
        self.data = [sources[s] for s in self.names]
        for name, (inputs, targets) in zip(self.names, self.data):
            if inputs.n != targets.n:
                raise ValueError(f"source {name!r}: {inputs.n} inputs but {targets.n} targets")
        self.batch_size = batch_size
        self.lengths = (int(feature_lengths["inputs"]), int(feature_lengths["targets"]))
        self.seed, self.pack = seed, pack
        self.orders = [_Order(s, d[0].n, seed, shuffle) for s, d in zip(self.names, self.data)]
        rate_list = [1.0 if rates is None else float(rates[s]) for s in self.names]
        self.mixture = _Mixture(np.asarray(rate_list, np.float64), seed)
        self.mixed = 0
        self.positions = [(0, 0) for _ in self.names]

    # state -------------------------------------------------------------------------------
    def get_state(self) -> dict:
        return {
            "mixed": self.mixed,
            "positions": {s: list(p) for s, p in zip(self.names, self.positions)},
        }

    def set_state(self, state: dict) -> None:
        saved = sorted(state.get("positions", {}))
        if saved != self.names:
            raise DataStateError(f"saved data state is for sources {saved}, not {self.names}")
        self.mixed = int(state["mixed"])
        self.positions = [tuple(int(v) for v in state["positions"][s]) for s in self.names]

    # reading -----------------------------------------------------------------------------
    def _peek(self, k: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """The next k examples without consuming them: (source of each, rows of each source)."""
        which = self.mixture.sources(self.mixed, k)
        rows = [
            order.take(self.positions[i], int(np.count_nonzero(which == i)))[0]
            for i, order in enumerate(self.orders)
        ]
        return which, rows

    def _features(self, which, rows, k):
        """Trimmed, EOS-terminated, padded inputs and targets of the first k peeked examples."""
        li, lt = self.lengths
        inputs = np.zeros((k, li), np.int32)
        targets = np.zeros((k, lt), np.int32)
        in_len = np.zeros(k, np.int64)
        tg_len = np.zeros(k, np.int64)
        which = which[:k]
        for i, (src_inputs, src_targets) in enumerate(self.data):
            slots = np.flatnonzero(which == i)
            if slots.size:
                r = rows[i][: slots.size]
                inputs[slots], in_len[slots] = trim_with_eos(src_inputs, r, li)
                targets[slots], tg_len[slots] = trim_with_eos(src_targets, r, lt)
        return inputs, in_len, targets, tg_len

    def _advance(self, which: np.ndarray, k: int) -> None:
        counts = np.bincount(which[:k], minlength=len(self.orders))
        for i, order in enumerate(self.orders):
            self.positions[i] = order.advance(self.positions[i], int(counts[i]))
        self.mixed += k

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        b = self.batch_size
        if not self.pack:
            which, rows = self._peek(b)
            inputs, _, targets, _ = self._features(which, rows, b)
            self._advance(which, b)
            return encdec_features(inputs, targets)
        ahead = 2 * b
        while True:
            which, rows = self._peek(ahead)
            inputs, in_len, targets, tg_len = self._features(which, rows, ahead)
            row_of, used = greedy_pack(in_len, tg_len, self.lengths, b)
            if used < ahead:  # the batch filled up before the look-ahead ran out
                break
            ahead *= 2
        batch = packed_encdec_features(
            inputs[:used], in_len[:used], targets[:used], tg_len[:used], row_of, b, self.lengths
        )
        self._advance(which, used)
        return batch


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """`x` with zero rows appended up to `rows` (a fixed batch shape: one compilation; zero
    rows have zero loss weight / are cut from the results by the caller)."""
    out = np.zeros((rows, *x.shape[1:]), x.dtype)
    out[: len(x)] = x
    return out


def padded_batches(arrays: Mapping[str, np.ndarray], batch: int) -> Iterator[Batch]:
    """All rows of equal-length `arrays` in order, in batches of `batch`, the last padded."""
    n = len(next(iter(arrays.values())))
    for start in range(0, n, batch):
        yield {k: pad_rows(np.asarray(v[start:start + batch]), batch) for k, v in arrays.items()}


def seq2seq_eval_batches(
    sources: Mapping[str, tuple[Ragged, Ragged]],
    batch_size: int,
    feature_lengths: Mapping[str, int],
    num_batches: int | None = None,
    seed: int = 42,
) -> Iterator[Batch]:
    """Validation batches for teacher-forced eval, unpacked.

    num_batches None: one ordered pass over every example of every source; the last batch is
    filled with empty rows (all-zero, loss weight 0) so every batch has the same shape (one
    compilation). num_batches given: the first `num_batches` batches of the shuffled mixture
    with `seed` (T5X's train_eval: EVAL_STEPS batches of validation, seed 42).
    """
    if num_batches is not None:
        pipe = Seq2SeqPipeline(sources, batch_size, feature_lengths, seed, shuffle=True)
        for _ in range(num_batches):
            yield next(pipe)
        return
    li, lt = int(feature_lengths["inputs"]), int(feature_lengths["targets"])
    for name in sorted(sources):
        src_inputs, src_targets = sources[name]
        for start in range(0, src_inputs.n, batch_size):
            rows = np.arange(start, min(start + batch_size, src_inputs.n))
            inputs = np.zeros((batch_size, li), np.int32)
            targets = np.zeros((batch_size, lt), np.int32)
            inputs[: rows.size] = trim_with_eos(src_inputs, rows, li)[0]
            targets[: rows.size] = trim_with_eos(src_targets, rows, lt)[0]
            yield encdec_features(inputs, targets)


# --- generic arrays (decoder-only LM, BERT MLM instances, ...) -----------------------------


class ArrayPipeline:
    """Epoch-shuffled batches of rows of equal-length arrays, e.g. the PCFG MLM instances.

    `arrays` maps feature name -> array with the example index first (memory-mapped is fine:
    only the rows of a batch are read). `transform(batch)` may rename or derive features (a
    deterministic function of the batch: randomness belongs in the data files or in the
    step's (seed, step) RNG, or resume would not be exact). State: {"epoch", "index"}.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        batch_size: int,
        seed: int,
        *,
        shuffle: bool = True,
        transform: Callable[[Batch], Batch] | None = None,
        name: str = "arrays",
    ):
        sizes = {k: len(v) for k, v in arrays.items()}
        if not sizes or len(set(sizes.values())) != 1:
            raise ValueError(f"arrays must be non-empty and have equal lengths, got {sizes}")
        self.arrays = dict(arrays)
        self.batch_size = batch_size
        self.transform = transform
        self.order = _Order(name, next(iter(sizes.values())), seed, shuffle)
        self.position = (0, 0)

    def get_state(self) -> dict:
        return {"epoch": self.position[0], "index": self.position[1]}

    def set_state(self, state: dict) -> None:
        if set(state) != {"epoch", "index"}:
            raise DataStateError(f"not an ArrayPipeline state: {state}")
        self.position = (int(state["epoch"]), int(state["index"]))

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        rows, self.position = self.order.take(self.position, self.batch_size)
        # sorted reads are kinder to memory maps; the batch keeps the shuffled order
        order = np.argsort(rows, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        batch = {k: np.asarray(v[rows[order]])[inverse] for k, v in self.arrays.items()}
        return self.transform(batch) if self.transform else batch
