"""Inside and outside quantities for lists of sentences (host-side batching around :mod:`chart`).

Sentences are lists of terminal-id arrays (see :func:`batching.encode_sentences`);
ids equal to ``UNKNOWN_WORD_ID`` give an exact zero probability.  Results come
back as numpy arrays in the caller's sentence order.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

from pipeline_lib.pcfg import chart
from pipeline_lib.pcfg.batching import PaddedBatch, iterate_batches
from pipeline_lib.pcfg.grammar import Grammar

DEFAULT_BATCH_SIZE = 64
DEFAULT_LENGTH_MULTIPLE = 4


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


def sentence_log_probs(
    grammar: Grammar,
    sentences: Sequence[np.ndarray],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    method: chart.InsideMethod = "dense",
) -> np.ndarray:
    """``log P(x)`` summed over all trees, per sentence (``-inf`` if impossible)."""
    tensors = chart.chart_tensors(grammar)
    result = np.empty(len(sentences))
    compute = lambda b: chart.inside_log_chart(tensors, b.ids, b.lengths, method=method)[:1]  # noqa: E731
    for index, row, (log_z,) in map_batches(sentences, batch_size, compute):
        result[index] = log_z[row]
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
    tensors = chart.chart_tensors(grammar)
    charts: list[np.ndarray] = [np.empty(0)] * len(sentences)
    compute = lambda b: chart.inside_log_chart(tensors, b.ids, b.lengths, method=method)[1:]  # noqa: E731
    for index, row, (log_chart,) in map_batches(sentences, batch_size, compute):
        n = len(sentences[index])
        charts[index] = log_chart[row, :n, :n]
    return charts


def leaf_outside_scores(
    grammar: Grammar,
    sentences: Sequence[np.ndarray],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    method: chart.InsideMethod = "dense",
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(log Z per sentence, [(n, N) arrays of O(A, t, t+1) / Z])`` from ``jax.grad`` of ``log Z``.

    For zero-probability sentences the outside array is all zeros.
    """
    tensors = chart.chart_tensors(grammar)
    log_z = np.empty(len(sentences))
    outside: list[np.ndarray] = [np.empty(0)] * len(sentences)
    compute = lambda b: chart.leaf_outside(tensors, b.ids, b.lengths, method=method)  # noqa: E731
    for index, row, (batch_log_z, gradient) in map_batches(sentences, batch_size, compute):
        log_z[index] = batch_log_z[row]
        outside[index] = gradient[row, : len(sentences[index])]
    return log_z, outside


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
