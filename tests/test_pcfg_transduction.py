"""The seq2seq downstream tasks from the Viterbi trees: the transforms by hand, the split point
against nltk's Viterbi parser, and the data stage (splits disjoint, seeded, byte-identical)."""

from __future__ import annotations

from pathlib import Path

import nltk
import pytest

from pipeline_lib.pcfg import dataset
from pipeline_lib.pcfg.grammar_io import read_grammar
from pipeline_lib.pcfg.transduction import SEPARATOR, top_level_split, transduce
from test_pcfg_support import fast_jax_compilation, pcfg_spec

SPEC = pcfg_spec(
    generate={"seed": 3, "n_roots": 2, "n_levels": 3, "nonterminals_per_level": 3,
              "n_terminals": 12, "binary_rules_per_nonterminal": 3,
              "words_per_bottom_nonterminal": 6},
    transduction={"tasks": ["swap", "split"], "n_train": 40, "n_validation": 15, "n_test": 15,
                  "min_length": 3},
    chart={"batch_size": 16},
)


def test_transforms_by_hand():
    tree = "(S (S_1 (A1_0 (A2_1 w1) (A2_0 w2)) (A1_2 w3)))"
    assert top_level_split(tree) == (["w1", "w2"], ["w3"])
    assert transduce("swap", ["w1", "w2"], ["w3"]) == ["w3", "w1", "w2"]
    assert transduce("split", ["w1", "w2"], ["w3"]) == ["w1", "w2", SEPARATOR, "w3"]
    with pytest.raises(ValueError, match="unknown transduction task 'rot'"):
        transduce("rot", [], [])
    with pytest.raises(ValueError, match="no binary top-level split"):
        top_level_split("(S w1)")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("transduction")
    with fast_jax_compilation():
        dataset.build_grammar(SPEC, root / "grammar")
        for task in ("swap", "split"):
            dataset.build_transduction(SPEC, root / "grammar", root / task, task)
    return root


def _rows(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")) for line in path.read_text().splitlines()]


def test_splits_are_disjoint_and_sized(built):
    sizes = {"train": 40, "validation": 15, "test": 15}
    seen = set()
    for split, n in sizes.items():
        rows = _rows(built / "swap" / f"{split}.tsv")
        assert len(rows) == n
        inputs = {a for a, _ in rows}
        assert len(inputs) == n and not inputs & seen  # distinct, never in another split
        seen |= inputs
        assert all(len(a.split()) >= 3 for a in inputs)


def test_targets_follow_the_nltk_viterbi_tree(built):
    grammar = nltk.PCFG.fromstring((built / "grammar" / "grammar.txt").read_text())
    parser = nltk.ViterbiParser(grammar)
    swap, split = _rows(built / "swap" / "train.tsv"), _rows(built / "split" / "train.tsv")
    for (sentence, swapped), (sentence2, marked) in zip(swap[:15], split[:15]):
        assert sentence == sentence2
        tree = next(parser.parse(sentence.split()))
        left, right = top_level_split(tree)
        assert swapped.split() == right + left
        assert marked.split() == left + [SEPARATOR] + right


def test_rebuilds_are_byte_identical_and_meta_is_complete(built, tmp_path):
    with fast_jax_compilation():
        dataset.build_transduction(SPEC, built / "grammar", tmp_path / "swap", "swap")
    for name in ("train.tsv", "validation.tsv", "test.tsv", "meta.json", "sample.jsonl"):
        assert (tmp_path / "swap" / name).read_bytes() == (built / "swap" / name).read_bytes()
    import json

    meta = json.loads((built / "swap" / "meta.json").read_text())
    assert meta["kind"] == "pcfg_transduction" and meta["task"] == "swap"
    assert meta["counts"]["train"]["sentence_length"]["min"] >= 3
    assert set(meta["checksums"]) == {"train.tsv", "validation.tsv", "test.tsv", "sample.jsonl"}


def test_a_task_not_in_the_config_is_refused(built, tmp_path):
    spec = pcfg_spec(transduction={"tasks": ["swap"]}, chart={"batch_size": 16})
    with pytest.raises(dataset.SpecError, match="'split' is not in pcfg.transduction.tasks"):
        dataset.build_transduction(spec, built / "grammar", tmp_path / "x", "split")


def test_too_few_distinct_sentences_fails_with_a_message(built, tmp_path, monkeypatch):
    monkeypatch.setattr(dataset, "_TRANSDUCTION_MAX_DRAWS_PER_SENTENCE", 1)
    spec = pcfg_spec(transduction={"n_train": 5000, "min_length": 8}, chart={"batch_size": 16})
    with pytest.raises(dataset.PcfgError, match="distinct sentences"):
        dataset.build_transduction(spec, built / "grammar", tmp_path / "x", "swap")
