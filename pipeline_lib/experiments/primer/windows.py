"""LM windows with the semantics of t5's `unsupervised` LM objective (Primer's `objectives/lm.gin`).

t5 runs, per document, `select_random_chunk(max_length=65536)` -> `reduce_concat_tokens` ->
`split_tokens_to_targets_length`, then seqio appends EOS (`append_eos_after_trim`). Here:

* **select_random_chunk**: a document longer than `max_chunk` tokens keeps one chunk of it,
  chosen by a seeded generator among its `ceil(n / max_chunk)` aligned chunks (t5 draws the
  chunk index uniformly the same way). PCFG sentences and text lines are far shorter than
  65,536 tokens, so at laptop scale this keeps every document whole.
* **reduce_concat_tokens**: the documents are concatenated into one stream, with no separator
  between them in t5. The laptop PCFG stream ends each sentence with `[SEP]` (issue 15's
  laptop corpus); a text corpus ends each line with its EOS id. Attention crosses document
  boundaries, as in T5 (no segment masks). t5 concatenates groups of 128 documents and pads the
  last window of each group; one stream for the whole split drops that padding (only the final
  partial window of the split is dropped).
* **split_tokens_to_targets_length**: t5 cuts `length - 1` tokens when the targets feature
  adds EOS (it "leaves room to insert an EOS token"), then appends EOS. **The EOS decision**:
  we follow t5, so every window is `length - 1` stream tokens + `eos_id`; its last target is
  always that EOS (a token the stream does not contain there). The model input is the window
  shifted right with 0 (T5's decoder start id) in front, and every position is a target: no
  padding, no loss weights below 1.

Validation is disjoint from training at the document level: the last documents are held out
before any concatenation (the LM1B task's `train[98%:]` is also a document split). Pure numpy,
no randomness beyond `select_random_chunk`'s seeded generator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

MAX_CHUNK = 65_536  # objectives/lm.gin: select_random_chunk.max_length


def select_random_chunk(doc: np.ndarray, max_chunk: int, rng: np.random.Generator) -> np.ndarray:
    """One aligned chunk of at most `max_chunk` tokens (the whole document if it fits)."""
    if len(doc) <= max_chunk:
        return doc
    n_chunks = -(-len(doc) // max_chunk)
    start = int(rng.integers(n_chunks)) * max_chunk
    return doc[start:start + max_chunk]


def token_stream(docs: Sequence[np.ndarray], end_id: int | None, *, max_chunk: int = MAX_CHUNK,
                 seed: int = 0) -> np.ndarray:
    """The documents' chunks concatenated in order, each followed by `end_id` (None: nothing,
    as t5)."""
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    tail = np.asarray([] if end_id is None else [end_id], np.int32)
    for doc in docs:
        parts.append(select_random_chunk(np.asarray(doc, np.int32), max_chunk, rng))
        parts.append(tail)
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def split_windows(stream: np.ndarray, length: int, eos_id: int) -> np.ndarray:
    """[n, length] int32: consecutive `length - 1` token pieces of `stream`, each + `eos_id`.

    The final piece shorter than `length - 1` is dropped (no padding anywhere).
    """
    if length < 2:
        raise ValueError(f"length {length}: a window needs at least one token and its EOS")
    body = length - 1
    n = len(stream) // body
    pieces = np.asarray(stream[: n * body], np.int32).reshape(n, body)
    return np.concatenate([pieces, np.full((n, 1), eos_id, np.int32)], axis=1)


def held_out_split(lengths: Sequence[int], windows: int, length: int, extra: int) -> int:
    """How many documents, taken from the end, yield at least `windows` validation windows
    (each document contributes its length + `extra` end tokens); all of them if too few."""
    need = windows * (length - 1)
    total = 0
    for count, n in enumerate(reversed(lengths), start=1):
        total += int(n) + extra
        if total >= need:
            return count
    return len(lengths)


def lm_inputs(windows: np.ndarray) -> dict[str, np.ndarray]:
    """t5 decoder-only features: inputs = windows shifted right (0 first), targets = windows,
    every position weighted 1."""
    windows = np.asarray(windows)
    tokens = np.zeros_like(windows)
    tokens[:, 1:] = windows[:, :-1]
    return {"tokens": tokens, "targets": windows,
            "weights": np.ones(windows.shape, np.float32)}


def windows_hash(windows: np.ndarray) -> str:
    """sha256 of the windows (shape and little-endian int32 bytes): the validation set's id."""
    array = np.ascontiguousarray(windows, dtype="<i4")
    digest = hashlib.sha256(f"{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()
