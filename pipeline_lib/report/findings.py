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

With fewer than two seeds no interval exists: the verdict is ``inconclusive``. Differences
of rows without common seeds use Welch's t rather than a bootstrap: with the 3-5 seeds of a
laptop table a percentile bootstrap of a mean has a handful of distinct resamples and covers far
less than 95 %.

Claims over a table's long-form records (`report.table`: ``{"row", "column", "seed",
"value"}`` or any keys you name) are the `claim_*` functions; they pick the per-seed values
out of the records and call the `check_*` function of the claim type:

* `claim_greater(records, claim, paper, a, b, column=None)`: row a > row b on `column`
  (None: each seed's mean over the columns, the table's Average);
* `claim_share_of_benefit(records, claim, paper, row, baseline, reference, at_least=70)`;
* `claim_correlation_at_matched_loss(records, claim, paper, x=..., y=..., loss=...,
  tolerance=...)`: **Spearman rho(x, y) < 0 over rows at matched loss**. Each record is one
  point (e.g. one checkpoint: ``{"trace": 12.1, "probe_acc": 0.81, "loss": 2.301, "seed":
  0}``). The points kept are the largest set whose `loss` values lie within `tolerance`
  (absolute, in the loss's units) of each other (the window [l, l + tolerance] holding the
  most points; ties: the lowest l), so every kept model has (nearly) the same pre-training
  loss. rho over the kept points with a seeded bootstrap: resampling whole seeds when
  `cluster` names a key shared by several points (checkpoints of one seed are not
  independent) and there are >= 3 such groups, else over points. The note states the window
  and how many of the points it kept. `negative=False` claims rho > 0.

Every `Finding` says how its interval was computed in `interval` ("paired by seed (t)",
"unpaired (Welch t)", "Fieller, paired by seed", "bootstrap over N points", "bootstrap over
K seeds (N points)").
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
        """One line: the claim, the paper's value, the measured value with its 95 % interval
        (and how it was computed), the verdict."""
        if self.measured is None or not math.isfinite(self.measured):
            value = "not measurable"
        elif self.low is None or self.high is None:
            value = f"{format_number(self.measured)}{self.unit} (no interval: {self.interval})"
        else:
            value = (f"{format_number(self.measured)}{self.unit} [{format_number(self.low)}, "
                     f"{format_number(self.high)}] (95 %, {self.interval})")
        note = f"; {self.note}" if self.note else ""
        return f"{self.claim} (paper: {self.paper}): {value}, {self.verdict}{note}"


def format_number(value: float) -> str:
    """A measured value for a caption: 1 decimal from 10 on, else 2 (a correlation, a small
    difference)."""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


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
    clusters: Sequence[Hashable] | None = None,
    note: str = "",
) -> Finding:
    """Claim: Spearman rho(x, y) < 0 (or > 0), with a seeded percentile bootstrap.

    The bootstrap resamples points, or whole `clusters` (e.g. each point's seed) when given
    with >= 3 distinct values: points of one cluster move together.
    """
    from pipeline_lib.report.stats import spearman

    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 3:
        return Finding(claim, paper, None, None, None, "none (fewer than 3 points)",
                       INCONCLUSIVE, n, note=note)
    rho = spearman(x, y)
    rng = np.random.default_rng(seed)
    groups = None
    if clusters is not None:
        labels = list(dict.fromkeys(clusters))
        if len(labels) >= 3:
            groups = [np.flatnonzero([c == g for c in clusters]) for g in labels]
    if groups is None:
        how = f"bootstrap over {n} points"
        draws = _bootstrap_spearman(x, y, [rng.integers(0, n, n) for _ in range(bootstrap)])
    else:
        how = f"bootstrap over {len(groups)} seeds ({n} points)"
        picks = rng.integers(0, len(groups), (bootstrap, len(groups)))
        draws = _bootstrap_spearman(x, y, [np.concatenate([groups[g] for g in p]) for p in picks])
    extra = f"; {note}" if note else ""
    if draws.size == 0 or not math.isfinite(rho):
        return Finding(claim, paper, _finite(rho), None, None, how, INCONCLUSIVE, n,
                       note=f"constant input{extra}")
    low, high = (float(q) for q in np.quantile(draws, [0.025, 0.975]))
    verdict = _verdict(low, high, 0.0, greater=not negative)
    return Finding(claim, paper, rho, low, high, how, verdict, n, note=note)


def _bootstrap_spearman(x: np.ndarray, y: np.ndarray, indices: list[np.ndarray]) -> np.ndarray:
    """Spearman rho of every resample (rows of equal length are ranked in one vectorised
    call; a resample with a constant side is dropped, as its rho is undefined)."""
    from scipy import stats

    out = []
    by_length: dict[int, list[np.ndarray]] = {}
    for idx in indices:
        by_length.setdefault(len(idx), []).append(idx)
    for idx in by_length.values():
        idx = np.stack(idx)
        rx, ry = stats.rankdata(x[idx], axis=1), stats.rankdata(y[idx], axis=1)
        rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
        den = np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
        ok = den > 0
        out.append((rx * ry).sum(1)[ok] / den[ok])
    return np.concatenate(out) if out else np.zeros(0)


# --- claims over a table's long-form records ------------------------------------------------


def seed_values(
    records: Sequence[Mapping],
    row: Hashable,
    column: Hashable | None = None,
    *,
    row_key: str = "row",
    column_key: str = "column",
    seed_key: str = "seed",
    value_key: str = "value",
) -> dict[Hashable, float]:
    """{seed: value} of one row: the value in `column`, or (column None) the seed's mean over
    the row's columns (the table's Average). A seed that lacks some of the row's columns is
    left out of the Average rather than averaged over fewer tasks."""
    picked = [r for r in records if r[row_key] == row
              and (column is None or r[column_key] == column)]
    if column is not None:
        return {r[seed_key]: float(r[value_key]) for r in picked}
    columns = set(r[column_key] for r in picked)
    per_seed: dict[Hashable, dict] = {}
    for r in picked:
        per_seed.setdefault(r[seed_key], {})[r[column_key]] = float(r[value_key])
    return {s: float(np.mean(list(v.values()))) for s, v in per_seed.items()
            if set(v) == columns}


def claim_greater(
    records: Sequence[Mapping],
    claim: str,
    paper: str,
    a: Hashable,
    b: Hashable,
    *,
    column: Hashable | None = None,
    margin: float = 0.0,
    unit: str = "",
    **keys: str,
) -> Finding:
    """Claim: row `a` > row `b` (+ margin) on `column` (None: the Average), over seeds."""
    return check_greater(claim, paper, seed_values(records, a, column, **keys),
                         seed_values(records, b, column, **keys), margin=margin, unit=unit)


def claim_share_of_benefit(
    records: Sequence[Mapping],
    claim: str,
    paper: str,
    row: Hashable,
    baseline: Hashable,
    reference: Hashable,
    *,
    at_least: float,
    column: Hashable | None = None,
    **keys: str,
) -> Finding:
    """Claim: (row - baseline) / (reference - baseline) >= at_least % on `column` (None: the
    Average), paired by seed."""
    return check_share_of_benefit(
        claim, paper,
        *(seed_values(records, r, column, **keys) for r in (row, baseline, reference)),
        at_least=at_least,
    )


def matched_loss_window(
    losses: Sequence[float], tolerance: float
) -> tuple[float, float, np.ndarray]:
    """(low, high, indices): the largest set of points whose losses lie within `tolerance` of
    each other (ties: the lowest losses). `indices` are in the input order."""
    loss = np.asarray(losses, float)
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    finite = np.flatnonzero(np.isfinite(loss))
    if finite.size == 0:
        return math.nan, math.nan, finite
    ordered = np.sort(loss[finite])
    # for each start point, how many sorted losses fall in [start, start + tolerance]
    counts = np.searchsorted(ordered, ordered + tolerance, side="right") - np.arange(ordered.size)
    best = int(np.argmax(counts))  # first maximum: the lowest window among ties
    low, high = float(ordered[best]), float(ordered[best + counts[best] - 1])
    keep = finite[(loss[finite] >= low) & (loss[finite] <= high)]
    return low, high, keep


def claim_correlation_at_matched_loss(
    records: Sequence[Mapping],
    claim: str,
    paper: str,
    *,
    x: str,
    y: str,
    loss: str,
    tolerance: float,
    negative: bool = True,
    cluster: str | None = "seed",
    bootstrap: int = 2000,
    seed: int = 0,
) -> Finding:
    """Claim: Spearman rho(record[x], record[y]) < 0 (negative=False: > 0) over the records
    whose record[loss] lie within `tolerance` of each other (`matched_loss_window`).

    Records missing x, y or loss (or with a non-finite value) are ignored. The bootstrap
    resamples `cluster` groups (default: seeds) when the kept points carry that key with >= 3
    distinct values, points otherwise; `interval` says which.
    """
    usable = [
        r for r in records
        if all(isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) for k in (x, y, loss))
    ]
    if not usable:
        return Finding(claim, paper, None, None, None, "none (no points)", INCONCLUSIVE, 0,
                       note=f"no record has finite {x}, {y} and {loss}")
    low, high, keep = matched_loss_window([r[loss] for r in usable], tolerance)
    kept = [usable[i] for i in keep]
    note = (f"{len(kept)} of {len(usable)} points at matched {loss} "
            f"[{low:.4g}, {high:.4g}] (tolerance {tolerance:g})")
    clusters = None
    if cluster is not None and all(cluster in r for r in kept):
        clusters = [r[cluster] for r in kept]
    return check_correlation(
        claim, paper, [r[x] for r in kept], [r[y] for r in kept], negative=negative,
        bootstrap=bootstrap, seed=seed, clusters=clusters, note=note,
    )


def _finite(value: float) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def findings_json(findings: Sequence[Finding], **context) -> dict:
    """The `findings.json` document of one table: its claims and the scale they were run at."""
    return {"findings": [f.to_json() for f in findings], **context}


def findings_markdown(findings: Sequence[Finding]) -> str:
    """The footer lines a table's Markdown caption lists."""
    return "\n".join(f"- {f.summary()}" for f in findings)
