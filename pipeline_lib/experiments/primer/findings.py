"""So et al.'s (2021) claim, measured: Primer-EZ reaches a baseline's loss with less compute.

Per seed, the FLOPs speed-up of primer_ez over each baseline (`speedup`); the claim is a
speed-up > 1. A speed-up is a ratio (2x and 0.5x are equally far from 1), so the measured
value is the geometric mean over seeds with a 95 % Student t interval on the per-seed log
factors (`report.findings.mean_difference_interval` of log factors against 0, paired by seed,
exponentiated back): the interval stays positive and symmetric in ratio terms. ``held`` if the
whole interval is above 1, ``not held`` if it is below, ``inconclusive`` if it straddles 1 or
there are fewer than 2 seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pipeline_lib.report.findings import (
    HELD,
    INCONCLUSIVE,
    NOT_HELD,
    Finding,
    mean_difference_interval,
)

CANDIDATE = "primer_ez"
PAPER = "> 1 (e.g. ~4x vs T5 at 500M on C4; grows with compute)"


def speedup_finding(baseline: str, factors: Mapping[int, float], axis: str = "FLOPs") -> Finding:
    claim = f"{CANDIDATE} reaches {baseline}'s final loss with less compute ({axis} speed-up > 1)"
    if not factors:
        return Finding(claim, PAPER, None, None, None, "none (no runs)", INCONCLUSIVE, 0, "x")
    logs = {s: math.log(f) for s, f in factors.items()}  # factors are > 0 (see speedup.py)
    diff, low, high, how, n = mean_difference_interval(logs, {s: 0.0 for s in logs})
    measured = math.exp(diff)
    if math.isnan(low):
        return Finding(claim, PAPER, measured, None, None, how, INCONCLUSIVE, n, "x")
    low, high = math.exp(low), math.exp(high)
    verdict = HELD if low > 1.0 else NOT_HELD if high < 1.0 else INCONCLUSIVE
    return Finding(claim, PAPER, measured, low, high,
                   "geometric mean, t over per-seed log factors (paired by seed)", verdict, n, "x")
