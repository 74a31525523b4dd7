"""The ``pcfg`` CLI verbs end to end on a small generated grammar."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import nltk
import numpy as np
import pytest

from pipeline_lib.cli import main as cli_main
from pipeline_lib.pcfg.cli import register_cli


def main(argv: list[str]) -> int:
    return cli_main(["pcfg", *argv])
from test_pcfg_support import fast_jax_compilation


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    with fast_jax_compilation():
        yield


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("pcfg_cli")
    grammar, sentences = directory / "g.pcfg", directory / "sents.txt"
    assert main(["generate-grammar", "--out", str(grammar), "--seed", "3", "--levels", "3", "--terminals", "30"]) == 0
    assert main(["sample", "--grammar", str(grammar), "--n", "12", "--seed", "0", "--out", str(sentences)]) == 0
    return directory


def test_register_cli_adds_the_pcfg_verb_with_all_sub_verbs() -> None:
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    usages = {
        "generate-grammar": "--out g",
        "sample": "--grammar G --n 1000 --seed 0 --out sents.txt",
        "parse": "--grammar G --sentences sents.txt --out parses.jsonl --conditionals",
        "labels": "--grammar G --sentences sents.txt --task B --out labels.csv",
        "optimal-loss": "--grammar G --sentences sents.txt",
        "mlm": "--grammar G --sentences sents.txt --out m.npz --seed 0",
    }
    for verb, usage in usages.items():
        args = parser.parse_args(["pcfg", verb, *usage.split()])
        assert args.command == "pcfg" and args.pcfg_verb == verb and callable(args.func)


def test_sample_then_parse_with_conditionals(workdir: Path, capsys) -> None:
    lines = (workdir / "sents.txt").read_text().splitlines()
    assert len(lines) == 12
    out = workdir / "parses.jsonl"
    code, _, err = run(capsys, "parse", "--grammar", str(workdir / "g.pcfg"), "--sentences", str(workdir / "sents.txt"),
                       "--out", str(out), "--conditionals", "--batch-size", "8")
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["sentence"] for r in records] == lines
    for record in records:
        tree = nltk.Tree.fromstring(record["best_tree"])
        assert " ".join(tree.leaves()) == record["sentence"]
        assert record["best_log_prob"] <= record["log_prob"] + 1e-4 and not record["zero_probability"]
        table = np.asarray(record["conditionals"])
        assert table.shape[0] == len(record["sentence"].split())
        np.testing.assert_allclose(table.sum(axis=1), 1.0, atol=1e-5)


def test_labels_and_optimal_loss_and_mlm(workdir: Path, capsys) -> None:
    grammar = str(workdir / "g.pcfg")
    csv_path = workdir / "labels.csv"
    code, _, err = run(capsys, "labels", "--grammar", grammar, "--n", "10", "--seed", "1", "--task", "A", "--out", str(csv_path))
    assert code == 0, err
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "text,label" and len(rows) == 11
    code, out, err = run(capsys, "optimal-loss", "--grammar", grammar, "--sentences", str(workdir / "sents.txt"))
    assert code == 0, err
    report = json.loads(out)
    assert report["n_sentences"] == 12 and math.isfinite(report["expected_cross_entropy_per_token"])
    npz = workdir / "mlm.npz"
    code, _, err = run(capsys, "mlm", "--grammar", grammar, "--sentences", str(workdir / "sents.txt"), "--out", str(npz),
                       "--seed", "0", "--dup-factor", "2")
    assert code == 0, err
    assert np.load(npz)["input_ids"].shape == (24, 32)


def test_errors_are_one_line_and_name_the_file(workdir: Path, capsys) -> None:
    bad_sentences = workdir / "bad.txt"
    bad_sentences.write_text("w01 w02\nnot_a_word w03\n")
    out = workdir / "never.jsonl"
    code, _, err = run(capsys, "parse", "--grammar", str(workdir / "g.pcfg"), "--sentences", str(bad_sentences), "--out", str(out))
    assert code == 1 and not out.exists()
    assert err.count("\n") == 1 and str(bad_sentences) in err and "sentence 2" in err and "not_a_word" in err
    bad_grammar = workdir / "bad.pcfg"
    bad_grammar.write_text("S -> A [1.0]\nA -> 'a' [0.5]\n")
    code, _, err = run(capsys, "sample", "--grammar", str(bad_grammar), "--n", "1", "--seed", "0", "--out", str(out))
    assert code == 1 and err.strip().endswith("sum to 0.5, expected 1 within 0.01") and f"{bad_grammar}:2:" in err
