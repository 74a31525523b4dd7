"""Inside quantities and span marginals for lists of sentences (host-side batching around :mod:`fastchart`).

Sentences are grouped into batches of one padded length each
(:func:`batching.iterate_length_buckets`); batches are dispatched ahead so
JAX computes while the host unpacks.  Span marginals still use the
reference :mod:`chart`.

Sentences are lists of terminal-id arrays (see :func:`batching.encode_sentences`);
ids equal to ``UNKNOWN_WORD_ID`` give an exact zero probability.  Results come
back as numpy arrays in the caller's sentence order.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterator, Sequence

import numpy as np

from pipeline_lib.pcfg import chart, fastchart
from pipeline_lib.pcfg.batching import PaddedBatch, iterate_batches, iterate_length_buckets
from pipeline_lib.pcfg.grammar import Grammar

DEFAULT_BATCH_SIZE = 64
DEFAULT_LENGTH_MULTIPLE = 4
# Batches dispatched ahead of the one being read back: JAX runs them
# asynchronously while the host unpacks earlier results.
_IN_FLIGHT = 4


def map_batches(
    sentences: Sequence[np.ndarray],
    batch_size: int,
    compute: Callable[[PaddedBatch], tuple[np.ndarray, ...]],
) -> Iterator[tuple[int, int, tuple[np.ndarray, ...]]]:
    """Yield ``(sentence_index, row, batch_outputs)`` for every real row of every batch."""
    for batch in iterate_batches(sentences, batch_size, DEFAULT_LENGTH_MULTIPLE):
        outputs = tuple(np.asarray(x) for x in compute(batch))
        for row, index in enumerate(batch.indices):
            if index >= 0:
                yield int(index), row, outputs


def fast_batches(
    grammar: Grammar,
    sentences: Sequence[np.ndarray],
    batch_size: int,
    kind: str,
    method: chart.InsideMethod = "dense",
) -> Iterator[tuple[PaddedBatch, tuple[np.ndarray, ...]]]:
    """``(batch, numpy outputs)`` of :func:`fastchart.compiled` ``kind`` over length-bucketed batches.

    Up to ``_IN_FLIGHT`` batches are dispatched before the oldest is read
    back, so device work overlaps the caller's host-side processing.
    """
    queue: deque = deque()
    for batch in iterate_length_buckets(sentences, batch_size, DEFAULT_LENGTH_MULTIPLE):
        function = fastchart.compiled(grammar, batch.ids.shape[1], kind, method)
        queue.append((batch, function(batch.ids, batch.lengths)))
        if len(queue) > _IN_FLIGHT:
            done, outputs = queue.popleft()
            yield done, tuple(np.asarray(x) for x in _as_tuple(outputs))
    while queue:
        done, outputs = queue.popleft()
        yield done, tuple(np.asarray(x) for x in _as_tuple(outputs))


def _as_tuple(outputs) -> tuple:
    return outputs if isinstance(outputs, tuple) else (outputs,)


def _real_rows(batch: PaddedBatch) -> tuple[np.ndarray, np.ndarray]:
    """(rows, sentence indices) of the non-dummy rows of ``batch``."""
    rows = np.flatnonzero(batch.indices >= 0)
    return rows, batch.indices[rows]


def sentence_log_probs(
    grammar: Grammar,
    sentences: Sequence[np.ndarray],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    method: chart.InsideMethod = "dense",
) -> np.ndarray:
    """``log P(x)`` summed over all trees, per sentence (``-inf`` if impossible)."""
    result = np.empty(len(sentences))
    # The "prefix" program (log Z and the cells [0, w)) is the one task labels use:
    # sharing it saves a compilation per padded length.
    for batch, (log_z, _) in fast_batches(grammar, sentences, batch_size, "prefix", method):
        rows, indices = _real_rows(batch)
        result[indices] = log_z[rows]
    return result


def inside_log_charts(
    grammar: Grammar,
    sentences: Sequence[np.ndarray],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    method: chart.InsideMethod = "dense",
) -> list[np.ndarray]:
    """Per sentence of length n, the ``(n, n, N)`` log-inside chart ``[i, w - 1, A] = log I(A, i, i + w)``.

    Inside scores include unary chains (post-unary), as in the original labeller.
    """
    charts: list[np.ndarray] = [np.empty(0)] * len(sentences)
    for batch, (_, log_chart) in fast_batches(grammar, sentences, batch_size, "log_chart", method):
        for row, index in zip(*_real_rows(batch)):
            n = len(sentences[index])
            charts[index] = log_chart[row, :n, :n]
    return charts


def posterior_span_marginals(
    grammar: Grammar,
    sentences: Sequence[np.ndarray],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    method: chart.InsideMethod = "dense",
) -> list[np.ndarray]:
    """Per sentence, ``(n, n, N)``: ``[i, w - 1, A]`` = P(a node A expanded by a binary or lexical rule spans [i, i + w) | x)."""
    tensors = chart.chart_tensors(grammar)
    marginals: list[np.ndarray] = [np.empty(0)] * len(sentences)
    compute = lambda b: chart.span_marginals(tensors, b.ids, b.lengths, method=method)[1:]  # noqa: E731
    for index, row, (batch_marginals,) in map_batches(sentences, batch_size, compute):
        n = len(sentences[index])
        marginals[index] = batch_marginals[row, :n, :n]
    return marginals
