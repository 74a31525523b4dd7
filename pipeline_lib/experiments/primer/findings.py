"""So et al.'s (2021) claim, measured: Primer-EZ reaches a baseline's loss with less compute.

Per seed, the FLOPs speed-up of primer_ez over each baseline (`speedup`); the claim is a
speed-up > 1. The measured value is the mean over seeds with a 95 % Student t interval over
the per-seed factors (`report.findings.mean_difference_interval` of the factors against 1,
paired by seed, shifted back by 1): ``held`` if the whole interval is above 1, ``not held`` if
it is below, ``inconclusive`` if it straddles 1 or there are fewer than 2 seeds.
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
    ones = {s: 1.0 for s in factors}
    diff, low, high, how, n = mean_difference_interval(dict(factors), ones)
    measured = diff + 1.0
    if math.isnan(low):
        return Finding(claim, PAPER, measured, None, None, how, INCONCLUSIVE, n, "x")
    low, high = low + 1.0, high + 1.0
    verdict = HELD if low > 1.0 else NOT_HELD if high < 1.0 else INCONCLUSIVE
    return Finding(claim, PAPER, measured, low, high, "t over per-seed factors (paired by seed)",
                   verdict, n, "x")
