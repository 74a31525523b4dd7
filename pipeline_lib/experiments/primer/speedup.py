"""The speed-up factor of So et al. (2021), operationally: how much less compute a candidate
needs to reach a baseline's final validation loss.

Definition (issue 15; unverified against arXiv 2109.08668 Tables 1-2):

* the baseline b ends at loss L_b after compute C_b (its last evaluation);
* the candidate p's curve is replaced by its running minimum (a noisy eval never "un-reaches"
  a loss), and C_p* is the first compute at which it is <= L_b, interpolated linearly in
  log-compute between the two evaluations around the crossing (at or before its first
  evaluation: that evaluation's compute, no extrapolation);
* speed-up = C_b / C_p*.

If p never reaches L_b, the factor is "not reached"; the reverse factor (b's speed-up over p,
computed the same way, always defined then) is returned and `factor` = 1 / reverse, a value
< 1, so per-seed factors can still be averaged. "Compute" is any increasing axis: steps,
training FLOPs or wall seconds. Pure functions over plain sequences.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class SpeedUp:
    factor: float  # C_b / C_p*, or 1 / reverse when not reached
    reached: bool
    reverse: float | None  # b's speed-up over p when p never reached L_b
    compute_at_target: float | None  # C_p*


def _check(compute: Sequence[float], loss: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    c, y = np.asarray(compute, float), np.asarray(loss, float)
    if c.ndim != 1 or c.shape != y.shape or len(c) == 0:
        raise ValueError(f"{what}: compute and loss must be equal-length non-empty 1-d sequences")
    if not (np.all(np.isfinite(c)) and np.all(c > 0) and np.all(np.diff(c) > 0)):
        raise ValueError(f"{what}: compute must be positive, finite and increasing")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{what}: loss has non-finite values")
    return c, y


def compute_to_reach(compute: Sequence[float], loss: Sequence[float], target: float) -> float | None:
    """First compute at which the running minimum of `loss` is <= `target` (log-linear
    interpolation between evaluations); None if it never is."""
    c, y = _check(compute, loss, "curve")
    best = np.minimum.accumulate(y)
    hits = np.flatnonzero(best <= target)
    if not len(hits):
        return None
    i = int(hits[0])
    if i == 0:
        return float(c[0])
    hi, lo = best[i - 1], best[i]  # hi > target >= lo
    frac = (hi - target) / (hi - lo)
    return float(math.exp(math.log(c[i - 1]) + frac * (math.log(c[i]) - math.log(c[i - 1]))))


def speedup(baseline: tuple[Sequence[float], Sequence[float]],
            candidate: tuple[Sequence[float], Sequence[float]]) -> SpeedUp:
    """Speed-up of `candidate` over `baseline`, each a (compute, loss) curve."""
    cb, yb = _check(*baseline, "baseline")
    cp, yp = _check(*candidate, "candidate")
    at = compute_to_reach(cp, yp, float(yb[-1]))
    if at is not None:
        return SpeedUp(float(cb[-1]) / at, True, None, at)
    back = compute_to_reach(cb, yb, float(yp[-1]))
    assert back is not None  # p stays above L_b, so b's curve passes L_p by its end
    reverse = float(cp[-1]) / back
    return SpeedUp(1.0 / reverse, False, reverse, None)
