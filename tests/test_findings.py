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


# --- claims over long-form records ------------------------------------------------------------


def _records(rows: dict[str, dict[int, list[float]]]) -> list[dict]:
    """{row: {seed: [value per column]}} -> the table's long-form records."""
    return [
        {"row": row, "column": f"task{j}", "seed": seed, "value": v}
        for row, by_seed in rows.items() for seed, values in by_seed.items()
        for j, v in enumerate(values)
    ]


def test_records_claim_greater_uses_the_average_or_one_column_paired_by_seed():
    records = _records({
        "pre": {0: [10.0, 20.0], 1: [12.0, 22.0], 2: [11.0, 19.0]},
        "random": {0: [5.0, 5.0], 1: [6.0, 6.0], 2: [7.0, 5.0]},
    })
    avg = F.claim_greater(records, "pre > random", "helps", "pre", "random")
    # per-seed averages 15, 17, 15 vs 5, 6, 6: differences 10, 11, 9
    direct = F.check_greater("pre > random", "helps", {0: 15.0, 1: 17.0, 2: 15.0},
                             {0: 5.0, 1: 6.0, 2: 6.0})
    assert avg == direct and avg.measured == pytest.approx(10.0) and avg.verdict == F.HELD
    one = F.claim_greater(records, "c", "p", "random", "pre", column="task0")
    assert one.measured == pytest.approx(-5.0) and one.verdict == F.NOT_HELD
    assert one.interval == "paired by seed (t)"


def test_records_claim_share_of_benefit_and_its_inconclusive_case():
    records = _records({
        "random": {0: [0.0], 1: [1.0], 2: [0.5]},
        "pretrained": {0: [50.0], 1: [52.0], 2: [49.0]},
        "mean_sd": {0: [45.0], 1: [47.0], 2: [44.5]},
        "flat": {0: [1.0], 1: [-1.0], 2: [1.5]},
    })
    held = F.claim_share_of_benefit(records, "s", "> 70 %", "mean_sd", "random", "pretrained",
                                    at_least=70)
    assert held.verdict == F.HELD and held.measured == pytest.approx(89.6, abs=1)
    assert held.interval == "Fieller, paired by seed"
    flat = F.claim_share_of_benefit(records, "s", "> 70 %", "mean_sd", "random", "flat",
                                    at_least=70)
    assert flat.verdict == F.INCONCLUSIVE and "not meaningful" in flat.note


def test_matched_loss_window_keeps_the_largest_set_within_tolerance():
    losses = [2.00, 2.50, 2.31, 2.30, 2.33, 3.0, 2.32, float("nan")]
    low, high, keep = F.matched_loss_window(losses, 0.035)
    assert (low, high) == (2.30, 2.33) and keep.tolist() == [2, 3, 4, 6]
    # ties: the lowest window wins
    low, high, keep = F.matched_loss_window([1.0, 1.01, 5.0, 5.01], 0.05)
    assert (low, high) == (1.0, 1.01) and keep.tolist() == [0, 1]
    with pytest.raises(ValueError, match="tolerance"):
        F.matched_loss_window([1.0], -1)


def _checkpoints(rho_sign: float, noise: float, seeds=(0, 1, 2, 3), per_seed=4):
    """Checkpoints at (nearly) one loss whose probe accuracy falls (rho_sign -1) with the
    trace, plus far-off-loss checkpoints whose trend is the opposite (must be ignored)."""
    rng = np.random.default_rng(7)
    out = []
    for s in seeds:
        for k in range(per_seed):
            trace = 10.0 + 3 * k + s
            out.append({"seed": s, "trace": trace, "loss": 2.30 + 0.001 * k,
                        "acc": 80 + rho_sign * trace + noise * rng.normal()})
        out.append({"seed": s, "trace": 100.0 + s, "loss": 4.0, "acc": 100.0 - rho_sign * 50})
    return out


def test_correlation_at_matched_loss_held_not_held_inconclusive():
    kwargs = dict(x="trace", y="acc", loss="loss", tolerance=0.01)
    held = F.claim_correlation_at_matched_loss(_checkpoints(-1, 0.1), "rho < 0", "< 0", **kwargs)
    assert held.verdict == F.HELD and held.measured < -0.9 and held.high < 0
    assert held.n == 16 and "16 of 20 points" in held.note  # the loss-4.0 points are dropped
    assert held.interval == "bootstrap over 4 seeds (16 points)"
    not_held = F.claim_correlation_at_matched_loss(_checkpoints(+1, 0.1), "r", "p", **kwargs)
    assert not_held.verdict == F.NOT_HELD and not_held.low > 0
    noisy = F.claim_correlation_at_matched_loss(_checkpoints(-1, 1000.0), "r", "p", **kwargs)
    assert noisy.verdict == F.INCONCLUSIVE and noisy.low < 0 < noisy.high
    # without a shared cluster key (or fewer than 3 seeds): a bootstrap over points
    points = [{k: v for k, v in r.items() if k != "seed"} for r in _checkpoints(-1, 0.1)]
    f = F.claim_correlation_at_matched_loss(points, "r", "p", **kwargs)
    assert f.interval == "bootstrap over 16 points" and f.verdict == F.HELD
    # a tolerance that matches only two points: no interval, inconclusive
    two = F.claim_correlation_at_matched_loss(
        [{"trace": 1, "acc": 2, "loss": 1.0}, {"trace": 2, "acc": 1, "loss": 1.0},
         {"trace": 3, "acc": 0, "loss": 9.0}], "r", "p", x="trace", y="acc", loss="loss",
        tolerance=0.1)
    assert two.verdict == F.INCONCLUSIVE and two.n == 2
    empty = F.claim_correlation_at_matched_loss([{"loss": 1.0}], "r", "p", **kwargs)
    assert empty.verdict == F.INCONCLUSIVE and empty.measured is None


def test_bootstrap_spearman_matches_scipy_per_resample():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=9), rng.normal(size=9)
    idx = [rng.integers(0, 9, 9) for _ in range(20)]
    fast = F._bootstrap_spearman(x, y, idx)
    slow = [stats.spearmanr(x[i], y[i]).statistic for i in idx]
    slow = [r for r in slow if math.isfinite(r)]
    assert fast == pytest.approx(slow)


# --- the findings page -------------------------------------------------------------------------


def test_findings_page_lists_every_table_with_the_paper_value_beside_the_measured(tmp_path):
    from pipeline_lib.cli import main
    from pipeline_lib.files import write_json_atomic

    held = F.check_greater("A <beats> B", "> 0", {0: 3.0, 1: 4.0, 2: 5.0}, {0: 1.0, 1: 1.5, 2: 2.0})
    flat = F.check_share_of_benefit("share | of benefit", "> 70 %", {0: 1.0, 1: 2.0},
                                    {0: 0.0, 1: 0.0}, {0: 1.0, 1: -1.0}, at_least=70)
    write_json_atomic(tmp_path / "table2.findings.json", F.findings_json(
        [held, flat], table="table2", caption="Laptop scale.", warnings=["source x: WARNING"]))
    write_json_atomic(tmp_path / "primer.findings.json", F.findings_json([], table="primer"))
    md, page = tmp_path / "findings.md", tmp_path / "findings.html"
    paths = [str(tmp_path / "table2.findings.json"), str(tmp_path / "primer.findings.json")]
    assert main(["report-findings", "--md", str(md), "--html", str(page), "--", *paths]) == 0
    text = md.read_text()
    assert "| table2 | 1 | 0 | 1 |" in text and "| primer | 0 | 0 | 0 |" in text
    assert "| A <beats> B | > 0 | 2.50 [" in text and "paired by seed (t)" in text
    assert "share \\| of benefit" in text and "not meaningful" in text
    assert "source x: WARNING" in text and "No claim could be checked" in text
    html = page.read_text()
    assert "A &lt;beats&gt; B" in html and "<b style='color:#1a7f37'>held</b>" in html
    assert html.index("table2") < html.index("primer")
    # a file that is not a findings file is one error naming it, and nothing is written
    (tmp_path / "bad.findings.json").write_text('{"table": "x"}')
    md.unlink()
    assert main(["report-findings", "--md", str(md), "--html", str(page), "--",
                 str(tmp_path / "bad.findings.json")]) == 2
    assert not md.exists()


def test_the_findings_and_curves_targets_are_planned(tmp_path):
    """`findings` collects every findings file a rule declares (Tables 1-3, primer, ...);
    every table target also draws its curves."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bin_dir / "snakemake"), "--snakefile", str(repo / "Snakefile"), "-n", "findings",
         "table2", "pcfg_tables", "--configfile", str(repo / "config.yaml"),
         "--directory", str(tmp_path)],
        capture_output=True, text=True, cwd=repo,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = proc.stdout.split("\nrule ")
    page, = [j for j in jobs if j.startswith("findings:")]
    inputs = page.split("input: ", 1)[1].split("\n", 1)[0].split(", ")
    assert inputs[:3] == [f"results/tables/table{i}.findings.json" for i in (1, 2, 3)]
    assert "results/tables/primer.findings.json" in inputs
    assert "output: results/tables/findings.md, results/tables/findings.html" in page
    assert any(j.startswith("transfer_curves:") and "table2.curves.png" in j for j in jobs)
    assert any(j.startswith("implicit_bias_curves:") for j in jobs)
