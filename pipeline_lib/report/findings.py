"""A paper's claims checked against a table's records: measured value, 95 % interval, verdict.

Every family states its paper's qualitative findings the same way. A *claim* names what the
paper says (e.g. "Pretrained > Random init on the Average", "Per-Param Mean/SD recovers >= 70 %
of the benefit", "rho(trace, accuracy) < 0 at matched loss") and the paper's value; `check_*`
measures it on per-seed values and returns a `Finding`:

* `measured` and a 95 % interval `[low, high]`, with `interval` saying how it was computed;
* `verdict`: ``held`` (the whole interval is on the claimed side), ``not held`` (the whole
  interval is on the other side) or ``inconclusive`` (the interval straddles the threshold, or
  the quantity is not meaningful at this scale, e.g. a share of a benefit whose own interval
  includes 0).

Intervals:

* differences of two rows run with the same seeds: **paired by seed**, Student t over the
  per-seed differences (n - 1 degrees of freedom); rows without common seeds: Welch's t;
* a share of a benefit (A - base) / (B - base): **Fieller's interval** for a ratio of paired
  means, which is exactly "not meaningful" (unbounded) when the denominator's own t-interval
  includes 0;
* a rank correlation over points: a seeded **bootstrap** over the points (percentile interval),
  because the points (checkpoints) are not paired by seed.

With fewer than two seeds no interval exists: the verdict is ``inconclusive``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Hashable

import numpy as np

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Finding:
    """One claim of a paper, measured at this run's scale."""

    claim: str  # the paper's statement, in words
    paper: str  # the paper's value or direction, e.g. "> 70 %"
    measured: float | None  # None when the quantity is undefined here
    low: float | None
    high: float | None
    interval: str  # how [low, high] was computed
    verdict: str  # held | not held | inconclusive
    n: int  # seeds (or points) behind the interval
    unit: str = ""
    note: str = ""

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        for key in ("measured", "low", "high"):  # JSON has no NaN / Infinity
            value = out[key]
            if value is not None and not math.isfinite(value):
                out[key] = None
        return out

    def summary(self) -> str:
        """One line: the claim, the paper's value, the measured value with its interval."""
        if self.measured is None or not math.isfinite(self.measured):
            value = "not measurable"
        elif self.low is None or self.high is None:
            value = f"{self.measured:.1f}{self.unit} (no interval)"
        else:
            low = "-inf" if math.isinf(self.low) else f"{self.low:.1f}"
            high = "inf" if math.isinf(self.high) else f"{self.high:.1f}"
            value = f"{self.measured:.1f}{self.unit} [{low}, {high}]"
        note = f"; {self.note}" if self.note else ""
        return f"{self.claim} (paper: {self.paper}): {value}, {self.verdict}{note}"


def _t_quantile(dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof))


def _verdict(low: float, high: float, threshold: float, greater: bool) -> str:
    if greater:
        return HELD if low > threshold else NOT_HELD if high < threshold else INCONCLUSIVE
    return HELD if high < threshold else NOT_HELD if low > threshold else INCONCLUSIVE


def _paired(a: Mapping[Hashable, float], b: Mapping[Hashable, float]):
    common = [s for s in a if s in b]
    return np.array([a[s] for s in common], float), np.array([b[s] for s in common], float)


def mean_difference_interval(
    a: Mapping[Hashable, float], b: Mapping[Hashable, float]
) -> tuple[float, float, float, str, int]:
    """mean(a) - mean(b) with its 95 % interval: paired by seed where the seeds agree."""
    x, y = _paired(a, b)
    if len(x) == len(a) == len(b) and len(x) >= 2:
        d = x - y
        half = _t_quantile(len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        mean = float(d.mean())
        return mean, mean - half, mean + half, "paired by seed (t)", len(d)
    x, y = np.array(list(a.values()), float), np.array(list(b.values()), float)
    mean = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return mean, math.nan, math.nan, "none (fewer than 2 seeds)", min(len(x), len(y))
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    dof = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1)) if se > 0 else 1
    half = _t_quantile(max(1, int(dof))) * se
    return mean, mean - half, mean + half, "unpaired (Welch t)", min(len(x), len(y))


def fieller_ratio_interval(
    numerator: Sequence[float], denominator: Sequence[float]
) -> tuple[float, float, float, bool]:
    """mean(num) / mean(den) for paired samples with Fieller's 95 % interval.

    Returns (ratio, low, high, bounded). `bounded` is False when the denominator's mean is not
    distinguishable from 0 at this confidence (its t-interval includes 0): the ratio then has no
    finite interval and (-inf, inf) is returned.
    """
    u, v = np.asarray(numerator, float), np.asarray(denominator, float)
    n = len(u)
    m1, m2 = float(u.mean()), float(v.mean())
    ratio = m1 / m2 if m2 != 0 else math.nan
    if n < 2:
        return ratio, math.nan, math.nan, False
    t2 = _t_quantile(n - 1) ** 2
    c = np.cov(np.stack([u, v]), ddof=1) / n
    v11, v12, v22 = float(c[0, 0]), float(c[0, 1]), float(c[1, 1])
    a = m2 * m2 - t2 * v22
    b = -2.0 * (m1 * m2 - t2 * v12)
    cc = m1 * m1 - t2 * v11
    disc = b * b - 4 * a * cc
    if a <= 0 or disc < 0:
        return ratio, -math.inf, math.inf, False
    root = math.sqrt(disc)
    low, high = sorted(((-b - root) / (2 * a), (-b + root) / (2 * a)))
    return ratio, low, high, True


def check_greater(
    claim: str,
    paper: str,
    a: Mapping[Hashable, float],
    b: Mapping[Hashable, float],
    *,
    margin: float = 0.0,
    unit: str = "",
) -> Finding:
    """Claim: a > b (+ margin). Measured: mean(a) - mean(b) over seeds."""
    mean, low, high, how, n = mean_difference_interval(a, b)
    verdict = INCONCLUSIVE if math.isnan(low) else _verdict(low, high, margin, greater=True)
    return Finding(claim, paper, mean, _finite(low), _finite(high), how, verdict, n, unit)


def check_share_of_benefit(
    claim: str,
    paper: str,
    row: Mapping[Hashable, float],
    baseline: Mapping[Hashable, float],
    reference: Mapping[Hashable, float],
    *,
    at_least: float,
) -> Finding:
    """Claim: (row - baseline) / (reference - baseline) >= at_least (in %), paired by seed."""
    seeds = [s for s in row if s in baseline and s in reference]
    num = [row[s] - baseline[s] for s in seeds]
    den = [reference[s] - baseline[s] for s in seeds]
    if not seeds:
        return Finding(claim, paper, None, None, None, "none (no common seeds)", INCONCLUSIVE, 0,
                       "%")
    ratio, low, high, bounded = fieller_ratio_interval(num, den)
    ratio, low, high = 100 * ratio, 100 * low, 100 * high
    how = "Fieller, paired by seed"
    if len(seeds) < 2:
        return Finding(claim, paper, _finite(ratio), None, None, "none (fewer than 2 seeds)",
                       INCONCLUSIVE, len(seeds), "%")
    if not bounded:
        return Finding(
            claim, paper, _finite(ratio), None, None, how, INCONCLUSIVE, len(seeds), "%",
            note="not meaningful: the benefit it is a share of is not distinguishable from 0",
        )
    verdict = _verdict(low, high, at_least, greater=True)
    return Finding(claim, paper, ratio, low, high, how, verdict, len(seeds), "%")


def check_correlation(
    claim: str,
    paper: str,
    x: Sequence[float],
    y: Sequence[float],
    *,
    negative: bool = True,
    bootstrap: int = 2000,
    seed: int = 0,
) -> Finding:
    """Claim: Spearman rho(x, y) < 0 (or > 0), with a seeded percentile bootstrap over points."""
    from pipeline_lib.report.stats import spearman

    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 3:
        return Finding(claim, paper, None, None, None, "none (fewer than 3 points)",
                       INCONCLUSIVE, n)
    rho = spearman(x, y)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        idx = rng.integers(0, n, n)
        r = spearman(x[idx], y[idx])
        if math.isfinite(r):
            draws.append(r)
    if not draws or not math.isfinite(rho):
        return Finding(claim, paper, _finite(rho), None, None, "bootstrap over points",
                       INCONCLUSIVE, n, note="constant input")
    low, high = (float(q) for q in np.quantile(draws, [0.025, 0.975]))
    verdict = _verdict(low, high, 0.0, greater=not negative)
    return Finding(claim, paper, rho, low, high, f"bootstrap over {n} points", verdict, n)


def _finite(value: float) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def findings_json(findings: Sequence[Finding], **context) -> dict:
    """The `findings.json` document of one table: its claims and the scale they were run at."""
    return {"findings": [f.to_json() for f in findings], **context}


def findings_markdown(findings: Sequence[Finding]) -> str:
    """The footer lines a table's Markdown caption lists."""
    return "\n".join(f"- {f.summary()}" for f in findings)
