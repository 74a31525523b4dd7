"""Statistics the tables and findings share."""

from __future__ import annotations

import warnings
from collections.abc import Sequence


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (scipy; average ranks for ties); NaN for constant input."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input -> NaN, reported in the title instead
        return float(stats.spearmanr(x, y).statistic)
