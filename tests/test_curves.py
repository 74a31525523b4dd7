"""Training curves for the report: metrics.jsonl -> curve records -> one PNG per table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_lib.report import curves
from pipeline_lib.report.table import TableError


def _jsonl(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _run(path: Path, scale: float) -> Path:
    return _jsonl(path, [
        {"step": 2, "split": "train", "loss": 3.0, "accuracy": 0.1},
        {"step": 4, "split": "eval", "loss": 2.0 * scale, "accuracy": 0.4 * scale},
        {"step": 8, "split": "eval", "loss": None, "accuracy": None},  # a NaN became null
        {"step": 12, "split": "eval", "loss": 1.0 * scale, "accuracy": 0.8 * scale},
        '{"step": 16, "split": "eval", "accu',  # cut by SIGKILL
    ])


def test_read_curve_keeps_the_finite_values_of_one_split(tmp_path):
    path = _run(tmp_path / "m.jsonl", 1.0)
    got = curves.read_curve(path, row="r", column="c", seed=0)
    assert [(r["step"], r["value"]) for r in got] == [(4, 0.4), (12, 0.8)]
    assert {(r["row"], r["column"], r["seed"]) for r in got} == {("r", "c", 0)}
    train = curves.read_curve(path, row="r", column="c", seed=0, metric="loss", split="train")
    assert [(r["step"], r["value"]) for r in train] == [(2, 3.0)]


def test_mean_curve_is_taken_where_every_seed_has_a_value():
    steps, mean = curves.mean_curve({0: {1: 1.0, 2: 2.0, 3: 3.0}, 1: {1: 3.0, 2: 4.0}})
    assert steps == [1, 2] and mean == [2.0, 3.0]
    assert curves.mean_curve({}) == ([], [])


def test_figure_is_deterministic_and_rejects_bad_records(tmp_path):
    records = [
        {"row": row, "column": col, "seed": seed, "step": step, "value": step * (1 + seed)}
        for row in ("a", "b") for col in ("x", "y") for seed in (0, 1, 2) for step in (1, 2, 3)
    ]
    one = curves.curves_figure(records, tmp_path / "one.png", "t", ylabel="acc",
                               thresholds={"x": (5.0, "stop at 5")}, columns=["y", "x", "z"])
    two = curves.curves_figure(records, tmp_path / "two.png", "t", ylabel="acc",
                               thresholds={"x": (5.0, "stop at 5")}, columns=["y", "x", "z"])
    assert one.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert one.read_bytes() == two.read_bytes()
    with pytest.raises(TableError, match="no curve records"):
        curves.curves_figure([], tmp_path / "empty.png", "t")
    with pytest.raises(TableError, match="no 'step'"):
        curves.curves_figure([{"row": 1, "column": 1, "seed": 1, "value": 1}], tmp_path / "b.png",
                             "t")


def test_transfer_curves_label_runs_as_the_table_rows(tmp_path):
    from pipeline_lib.experiments.transfer.curves import SOURCES_PANEL, curve_records

    root = tmp_path / "results" / "transfer"
    runs = [
        _run(root / "finetune" / "pcfg_swap" / "identity" / "pretrained" / "1" / "metrics.jsonl",
             1.0),
        _run(root / "finetune" / "pcfg_swap" / "none" / "random" / "0" / "metrics.jsonl", 0.5),
    ]
    source = _run(root / "pretrain" / "identity" / "metrics.jsonl", 1.0)
    got = curve_records("table2", runs, [source])
    keys = {(r["row"], r["column"], r["seed"]) for r in got}
    assert keys == {
        ("identity: Pretrained (all weights)", "pcfg_swap", 1),
        ("Random init", "pcfg_swap", 0),
        ("source identity", SOURCES_PANEL, 0),
    }


def test_report_curves_cli_names_rows_by_their_path(tmp_path):
    from pipeline_lib.cli import main
    from pipeline_lib.report.cli import run_of

    root = tmp_path / "pretrain"
    assert run_of(root / "base" / "adamw" / "2" / "metrics.jsonl", root) == ("base/adamw", "2")
    with pytest.raises(ValueError, match="not under --root"):
        run_of(tmp_path / "elsewhere" / "0" / "m.jsonl", root)
    paths = [_run(root / size / "adamw" / str(seed) / "metrics.jsonl", 1 + seed)
             for size in ("small", "base") for seed in (0, 1)]
    out = tmp_path / "curves.png"
    assert main(["report-curves", "--root", str(root), "--out", str(out), "--title", "t",
                 "--", *map(str, paths)]) == 0
    assert out.stat().st_size > 0
    # a path outside the root is one line on stderr and exit code 2, no traceback
    assert main(["report-curves", "--root", str(root / "small"), "--out", str(out),
                 "--title", "t", str(paths[-1])]) == 2
