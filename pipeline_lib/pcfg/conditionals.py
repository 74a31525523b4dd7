"""Exact single-mask conditionals p(x_t = w | x_-t) and the optimal MLM loss.

With outside scores O(A, t, t+1) and lexical probabilities L[A, w]::

    p(x_t = w | x_-t)  =  sum_A O(A, t, t+1) L[A, w]  /  sum_w' (same)

O(., t, t+1) does not depend on x_t, so one inside pass plus one ``jax.grad``
gives the conditionals at every position (each position "masked once").
The gradient is O / Z, and Z cancels in the normalisation; this needs Z > 0,
so conditionals of zero-probability sentences are reported as undefined.

The optimal loss is the token-averaged expected cross-entropy of the ideal
single-mask predictor, ``sum_x sum_t H(p(. | x_-t)) / sum_x n``, which is what
the original ``calculate_loss.py`` computes with f = p* (reference §3.2-3.4).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from pipeline_lib.pcfg import chart
from pipeline_lib.pcfg.errors import PcfgError
from pipeline_lib.pcfg.grammar import Grammar
from pipeline_lib.pcfg.inside import DEFAULT_BATCH_SIZE, fast_batches


def conditionals_from_outside(grammar: Grammar, outside: np.ndarray) -> np.ndarray:
    """``(n, T)`` conditionals from ``(n, N)`` outside scores (any positive scaling).

    All-zero rows (contexts with probability zero) stay all-zero.
    """
    unnormalised = np.asarray(outside, dtype=np.float64) @ grammar.lexical_matrix()
    unnormalised = np.maximum(unnormalised, 0.0)  # float32 gradients can be -0.0 or -1e-45
    totals = unnormalised.sum(axis=1, keepdims=True)
    return np.divide(unnormalised, totals, out=np.zeros_like(unnormalised), where=totals > 0)


def exact_conditionals(
    grammar: Grammar,
    sentences: Sequence[np.ndarray],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    method: chart.InsideMethod = "dense",
) -> list[np.ndarray | None]:
    """Per sentence an ``(n, T)`` float64 array of p(x_t = w | x_-t) (columns: ``grammar.terminals``).

    ``None`` for sentences of probability zero (conditionals undefined there).
    """
    lexical = grammar.lexical_matrix()
    result: list[np.ndarray | None] = [None] * len(sentences)
    for batch, (log_z, gradient) in fast_batches(grammar, sentences, batch_size, "leaf_outside", method):
        # conditionals_from_outside for a whole batch at once: one float64 matmul.
        rows = np.flatnonzero((batch.indices >= 0) & np.isfinite(log_z))
        if not len(rows):
            continue
        unnormalised = gradient[rows].astype(np.float64) @ lexical  # (R, n, T)
        np.maximum(unnormalised, 0.0, out=unnormalised)
        totals = unnormalised.sum(axis=2, keepdims=True)
        probabilities = np.divide(unnormalised, totals, out=np.zeros_like(unnormalised), where=totals > 0)
        for row, table in zip(rows, probabilities):
            index = int(batch.indices[row])
            result[index] = table[: len(sentences[index])]
    return result


def entropy_nats(probabilities: np.ndarray) -> np.ndarray:
    """Entropy over the last axis, with 0 log 0 = 0."""
    p = np.asarray(probabilities, dtype=np.float64)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=-1)


@dataclass(frozen=True)
class OptimalLoss:
    """Optimal single-mask MLM loss on a set of sentences (all values in nats)."""

    expected_cross_entropy_per_token: float
    expected_cross_entropy_standard_error: float
    sampled_nll_per_token: float
    expected_cross_entropy_per_sentence_mean: float
    n_sentences: int
    n_tokens: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def optimal_mlm_loss(
    grammar: Grammar,
    sentences: Sequence[np.ndarray],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    method: chart.InsideMethod = "dense",
) -> OptimalLoss:
    """Optimal loss of the ideal single-mask predictor on ``sentences`` (terminal-id arrays).

    * expected cross-entropy per token: mean over all positions of H(p*(. | x_-t))
      (token-weighted, as ``calculate_loss.py``); its standard error treats
      sentences as independent (ratio estimator).
    * sampled NLL per token: mean of -log p*(x_t | x_-t) for the observed word.
    * per-sentence mean: E_x[mean_t H], the paper's "one uniform mask per sentence" weighting.
    """
    if not sentences:
        raise PcfgError("optimal loss needs at least one sentence")
    conditionals = exact_conditionals(grammar, sentences, batch_size=batch_size, method=method)
    entropy_sums, nll_sums, lengths = [], [], []
    for number, (words, probabilities) in enumerate(zip(sentences, conditionals)):
        if probabilities is None:
            raise PcfgError(f"sentence {number + 1} has probability zero under the grammar; its conditionals are undefined")
        entropy_sums.append(entropy_nats(probabilities).sum())
        observed = probabilities[np.arange(len(words)), words]
        nll_sums.append(-np.log(observed).sum())
        lengths.append(len(words))
    entropy_total, nll_total, length_array = np.asarray(entropy_sums), np.asarray(nll_sums), np.asarray(lengths, float)
    per_token = entropy_total.sum() / length_array.sum()
    return OptimalLoss(
        expected_cross_entropy_per_token=float(per_token),
        expected_cross_entropy_standard_error=ratio_standard_error(entropy_total, length_array, per_token),
        sampled_nll_per_token=float(nll_total.sum() / length_array.sum()),
        expected_cross_entropy_per_sentence_mean=float(np.mean(entropy_total / length_array)),
        n_sentences=len(sentences),
        n_tokens=int(length_array.sum()),
    )


def ratio_standard_error(numerators: np.ndarray, denominators: np.ndarray, ratio: float) -> float:
    """Delta-method standard error of sum(numerators) / sum(denominators)."""
    count = len(numerators)
    if count < 2:
        return math.nan
    residuals = numerators - ratio * denominators
    return float(np.sqrt(residuals.var(ddof=1) * count) / denominators.sum())
