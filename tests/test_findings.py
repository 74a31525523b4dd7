"""The findings module: known answers for each claim type, including the inconclusive cases."""

import math

import numpy as np
import pytest
from scipy import stats

from pipeline_lib.report import findings as F


def test_greater_paired_by_seed_matches_a_hand_computed_t_interval():
    a = {0: 10.0, 1: 12.0, 2: 11.0}
    b = {0: 5.0, 1: 6.0, 2: 7.0}
    f = F.check_greater("a > b", "a > b", a, b)
    d = np.array([5.0, 6.0, 4.0])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert f.measured == pytest.approx(5.0)
    assert (f.low, f.high) == pytest.approx((5.0 - half, 5.0 + half))
    assert f.interval == "paired by seed (t)" and f.verdict == F.HELD and f.n == 3


def test_greater_not_held_and_inconclusive():
    low = {0: 1.0, 1: 1.1, 2: 0.9}
    high = {0: 5.0, 1: 5.2, 2: 4.9}
    assert F.check_greater("x", "x", low, high).verdict == F.NOT_HELD
    noisy = {0: 1.0, 1: 9.0, 2: 2.0}
    assert F.check_greater("x", "x", noisy, {0: 3.0, 1: 4.0, 2: 3.5}).verdict == F.INCONCLUSIVE
    one_seed = F.check_greater("x", "x", {0: 2.0}, {0: 1.0})
    assert one_seed.verdict == F.INCONCLUSIVE and one_seed.low is None


def test_unpaired_rows_use_welch():
    f = F.check_greater("x", "x", {0: 10.0, 1: 11.0, 2: 12.0}, {5: 1.0, 6: 2.0, 7: 3.0})
    assert f.interval == "unpaired (Welch t)" and f.verdict == F.HELD


def test_fieller_interval_contains_the_ratio_and_matches_the_delta_method_when_precise():
    rng = np.random.default_rng(0)
    den = 10 + 0.01 * rng.standard_normal(50)
    num = 0.7 * den + 0.01 * rng.standard_normal(50)
    ratio, low, high, bounded = F.fieller_ratio_interval(num, den)
    assert bounded and low < ratio < high
    assert ratio == pytest.approx(0.7, abs=0.01)
    assert high - low < 0.01  # precise denominators: a narrow interval


def test_share_of_benefit_held_not_held_and_not_meaningful():
    base = {0: 0.0, 1: 1.0, 2: 0.5}
    ref = {0: 50.0, 1: 52.0, 2: 49.0}
    most = {0: 45.0, 1: 47.0, 2: 44.5}  # ~90 % of the benefit
    f = F.check_share_of_benefit("share", "> 70 %", most, base, ref, at_least=70)
    assert f.verdict == F.HELD and f.measured == pytest.approx(89.6, abs=1) and f.unit == "%"
    little = {0: 5.0, 1: 6.0, 2: 5.5}
    assert F.check_share_of_benefit("s", "p", little, base, ref, at_least=70).verdict == F.NOT_HELD
    # a benefit not distinguishable from 0: no finite interval, never "held"
    flat_ref = {0: 1.0, 1: -1.0, 2: 1.5}
    f = F.check_share_of_benefit("s", "p", most, base, flat_ref, at_least=70)
    assert f.verdict == F.INCONCLUSIVE and f.low is None and "not meaningful" in f.note


def test_correlation_bootstrap_verdicts_and_determinism():
    x = np.arange(12.0)
    y = -x + np.random.default_rng(1).normal(0, 0.5, 12)
    f = F.check_correlation("rho < 0", "negative", x, y, negative=True)
    assert f.verdict == F.HELD and f.measured < -0.9 and f.high < 0
    assert F.check_correlation("rho < 0", "negative", x, -y).verdict == F.NOT_HELD
    noise = np.random.default_rng(2).normal(size=12)
    assert F.check_correlation("r", "p", x, noise).verdict == F.INCONCLUSIVE
    assert F.check_correlation("r", "p", x, y) == F.check_correlation("r", "p", x, y)
    assert F.check_correlation("r", "p", [1, 2], [2, 1]).verdict == F.INCONCLUSIVE


def test_json_has_no_nan_and_markdown_lists_every_claim():
    import json

    f = F.check_share_of_benefit("s", "p", {0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.0},
                                 {0: 1.0, 1: -1.0}, at_least=70)
    text = json.dumps(F.findings_json([f], table="t"), allow_nan=False)
    assert "NaN" not in text and "Infinity" not in text
    md = F.findings_markdown([f, F.check_greater("a > b", "yes", {0: 2.0, 1: 3.0},
                                                 {0: 1.0, 1: 1.5})])
    assert md.count("\n- ") == 1 and "(paper: yes)" in md
