"""The PCFG data stage (``pipeline_lib.pcfg.dataset``) end to end on a tiny generated grammar."""

from __future__ import annotations

import copy
import csv
import importlib
import json
import logging
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import nltk
import numpy as np
import pytest

import pipeline_lib.pcfg
from pipeline_lib.data import store
from pipeline_lib.pcfg import dataset
from pipeline_lib.pcfg.conditionals import exact_conditionals, optimal_mlm_loss
from pipeline_lib.pcfg.grammar_io import read_grammar
from pipeline_lib.pcfg.labels import draw_downstream_sentences, task_labels, write_label_csv
from pipeline_lib.pcfg.mlm import MlmConfig, compact_vocabulary, create_mlm_instances
from pipeline_lib.pcfg.sample import sample_sentences, sentences_to_text
from test_pcfg_support import fast_jax_compilation, pcfg_spec

REPO = Path(__file__).resolve().parents[1]

# Sentences of 2..8 words: two chart length buckets (4 and 8), so few compiles.
# The rest of the section is the schema's defaults, as the workflow passes it.
TINY_SPEC = pcfg_spec(**{
    "generate": {
        "seed": 3,
        "n_roots": 2,
        "n_levels": 3,
        "nonterminals_per_level": 3,
        "n_terminals": 12,
        "binary_rules_per_nonterminal": 3,
        "words_per_bottom_nonterminal": 6,
    },
    "sample": {"seed": 5, "n_sentences": 2500, "length_limit": 32},
    "downstream": {"tasks": ["A", "B", "C"], "seed": 2, "n_train": 40, "n_validation": 30},
    "optimal_loss": {"seed": 1, "n_sentences": 50, "renormalize": True},
    "mlm": {"seed": 7, "max_seq_length": 12, "dup_factor": 2},
    "chart": {"batch_size": 16, "method": "dense"},
})
# The sections each product's rule passes (workflow/rules/common.smk).
RULE_SECTIONS = {
    "grammar": ("grammar", "grammar_format", "allow_unreachable", "generate"),
    "pretrain": ("sample", "mlm"),
    "downstream": ("downstream", "mlm", "chart"),
    "optimal_loss": ("optimal_loss", "sample", "mlm", "chart"),
}


def rule_spec(product: str, spec: dict = TINY_SPEC) -> dict:
    return {section: spec[section] for section in RULE_SECTIONS[product]}


@pytest.fixture(scope="module")
def fast_compile():
    with fast_jax_compilation():
        yield


def build_all(root: Path) -> dict[str, Path]:
    paths = {"grammar": root / "grammar"}
    dataset.build_grammar(TINY_SPEC, paths["grammar"])
    paths["pretrain"] = root / "pretrain"
    dataset.build_pretrain(TINY_SPEC, paths["grammar"], paths["pretrain"])
    for task in "ABC":
        paths[task] = root / f"downstream_{task}"
        dataset.build_downstream(TINY_SPEC, paths["grammar"], paths[task], task)
    paths["optimal_loss"] = root / "optimal_loss"
    dataset.build_optimal_loss(TINY_SPEC, paths["grammar"], paths["optimal_loss"])
    return paths


@pytest.fixture(scope="module")
def built(tmp_path_factory, fast_compile) -> dict[str, Path]:
    # Small chunks so the chunked writers are exercised (2500 sentences = 3 chunks).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dataset, "SAMPLE_CHUNK", 1000)
        patch.setattr(dataset, "MLM_CHUNK", 1000)
        patch.setattr(dataset, "CHART_CHUNK_BATCHES", 1)
        return build_all(tmp_path_factory.mktemp("pcfg_dataset"))


@pytest.fixture(scope="module")
def grammar(built):
    return read_grammar(built["grammar"] / "grammar.txt")


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- spec


def test_the_schema_holds_the_only_pcfg_defaults() -> None:
    defaults = pcfg_spec()
    assert not hasattr(dataset, "DEFAULT_SPEC")
    # No module of the pcfg package keeps a copy of the schema's defaults (of any section).
    sections = [defaults] + [value for value in defaults.values() if isinstance(value, dict)]
    for info in pkgutil.iter_modules(pipeline_lib.pcfg.__path__):
        module = importlib.import_module(f"pipeline_lib.pcfg.{info.name}")
        for name, value in vars(module).items():
            if not isinstance(value, dict):
                continue
            for section in sections:
                copied = all(
                    key in value and type(value[key]) is type(default) and value[key] == default
                    for key, default in section.items()
                )
                assert not copied, f"pipeline_lib.pcfg.{info.name}.{name} repeats schema defaults"
    # The builders get the validated section as it is: same values, same key order.
    checked = dataset.validate_spec(defaults)
    assert checked == defaults and json.dumps(checked) == json.dumps(defaults)
    filled = dataset.validate_spec(pcfg_spec(sample={"n_sentences": 5}))
    assert filled["sample"] == {"seed": 0, "n_sentences": 5, "length_limit": 32}
    for product, sections in RULE_SECTIONS.items():
        assert dataset.validate_spec(rule_spec(product), require=sections) == rule_spec(product)


def test_spec_sections_must_be_complete(tmp_path: Path) -> None:
    with pytest.raises(dataset.SpecError) as error:
        dataset.validate_spec({"sample": {"n_sentences": 5}})
    assert str(error.value).startswith("pcfg.sample.seed: missing")
    partial = {"downstream": TINY_SPEC["downstream"], "mlm": TINY_SPEC["mlm"]}
    with pytest.raises(dataset.SpecError, match=r"^pcfg\.chart: missing; this product reads"):
        dataset.build_downstream(partial, tmp_path / "grammar", tmp_path / "out", "A")
    with pytest.raises(dataset.SpecError, match=r"^pcfg\.generate: missing"):
        no_generate = {k: TINY_SPEC[k] for k in ("grammar", "grammar_format", "allow_unreachable")}
        dataset.build_grammar(no_generate, tmp_path / "g")  # grammar null: generate it
    assert list(tmp_path.iterdir()) == []


def test_spec_unknown_keys_and_bad_values() -> None:
    for section, key, value, message in [
        (None, "bogus", 1, "pcfg.bogus: unknown key"),
        ("sample", "n_sentence", 5, "pcfg.sample.n_sentence: unknown key"),
        (
            "generate",
            "lexical_probability_min",
            0.1,
            "pcfg.generate.lexical_probability_min: unknown key",
        ),
        ("chart", "method", "fast", "pcfg.chart.method: 'fast' is not allowed"),
        ("sample", "seed", -1, "pcfg.sample.seed: -1 is below the minimum 0"),
        ("mlm", "dup_factor", True, "pcfg.mlm.dup_factor: True is not an integer"),
        ("downstream", "tasks", ["A", "D"], "pcfg.downstream.tasks: 'D' is not allowed"),
        ("generate", "nonterminals_per_level", 50, "pcfg.generate: invalid GrammarShape"),
    ]:
        spec = copy.deepcopy(pcfg_spec())
        (spec if section is None else spec[section])[key] = value
        with pytest.raises(dataset.SpecError) as error:
            dataset.validate_spec(spec)
        assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_downstream_task_must_be_listed(built, tmp_path: Path) -> None:
    spec = {**TINY_SPEC, "downstream": {**TINY_SPEC["downstream"], "tasks": ["A"]}}
    with pytest.raises(dataset.SpecError, match="task 'B' is not in pcfg.downstream.tasks"):
        dataset.build_downstream(spec, built["grammar"], tmp_path / "out", "B")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- grammar


def test_grammar_directory(built, grammar) -> None:
    directory = built["grammar"]
    assert sorted(p.name for p in directory.iterdir()) == ["grammar.txt", "meta.json"]
    store.verify_checksums(directory)
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["kind"] == "pcfg_grammar" and meta["format_version"] == store.FORMAT_VERSION
    assert meta["source"]["kind"] == "generated" and meta["source"]["seed"] == 3
    assert meta["source"]["shape"]["n_levels"] == 3 and meta["seed"] == {"generate": 3}
    assert meta["counts"]["nonterminals"] == grammar.n_nonterminals == 1 + 2 + 3 * 3
    assert meta["counts"]["terminals"] == grammar.n_terminals == 12
    assert meta["counts"]["rules"]["total"] == sum(
        meta["counts"]["rules"][k] for k in ("binary", "unary", "lexical")
    )
    nltk.PCFG.fromstring((directory / "grammar.txt").read_text())  # nltk-readable


RULE_FILE = """S S1 0.6
S S2 0.4
S1 A B 1.0
S2 B A 1.0
A a 0.7
A b 0.3
B b 0.5
B c 0.5
C a 1.0
"""


def test_grammar_from_rule_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.txt"
    rules.write_text(RULE_FILE)
    spec = pcfg_spec(grammar=str(rules), allow_unreachable=True)
    meta = dataset.build_grammar(spec, tmp_path / "g")
    assert meta["source"] == {
        "kind": "file",
        "path": str(rules),
        "format": "rules",
        "sha256": store.sha256_file(rules),
    }
    assert meta["generator"].endswith("read_grammar") and meta["seed"] == {}
    assert meta["counts"]["nonterminals"] == 6 and meta["counts"]["rules"] == {
        "binary": 2,
        "unary": 2,
        "lexical": 5,
        "total": 9,
    }
    text = (tmp_path / "g" / "grammar.txt").read_text()
    assert "S -> S1 [0.6]" in text and "A -> 'a' [0.7]" in text
    reread, _ = dataset.load_grammar_dir(tmp_path / "g")  # unreachable C survives the round trip
    assert "C" in reread.nonterminals
    # Without allow_unreachable the file is rejected and nothing is written.
    with pytest.raises(Exception, match="'C' is unreachable"):
        dataset.build_grammar(pcfg_spec(grammar=str(rules)), tmp_path / "g2")
    assert not (tmp_path / "g2").exists()


# ---------------------------------------------------------------- pre-training


def test_pretrain_matches_toolkit(built, grammar, caplog) -> None:
    directory = built["pretrain"]
    store.verify_checksums(directory)
    meta = json.loads((directory / "meta.json").read_text())
    n = 2500
    sentences = sample_sentences(grammar, n, 5, length_limit=32)
    assert (directory / "sentences.txt").read_text() == sentences_to_text(grammar, sentences)
    vocabulary = compact_vocabulary(grammar)
    assert (directory / "vocab.txt").read_text().splitlines() == list(vocabulary.tokens)
    expected = create_mlm_instances(
        sentences, vocabulary, 7, MlmConfig(max_seq_length=12, dup_factor=2)
    ).as_dict()
    for name, array in expected.items():
        loaded = np.load(directory / f"{name}.npy", mmap_mode="r")  # memory-mappable
        assert isinstance(loaded, np.memmap)
        assert loaded.dtype == array.dtype and loaded.shape == array.shape == (
            2 * n,
            array.shape[1],
        )
        np.testing.assert_array_equal(loaded, array)
    assert meta["counts"]["sentences"] == n and meta["counts"]["instances"] == 2 * n
    assert meta["counts"]["tokens"] == sum(len(s) for s in sentences)
    assert meta["counts"]["masked_predictions"] == int(expected["masked_lm_weights"].sum())
    assert meta["seed"] == {"sample": 5, "mlm": 7} and meta["parameters"]["mlm"]["dup_factor"] == 2
    assert meta["grammar"]["sha256"] == store.sha256_file(built["grammar"] / "grammar.txt")
    assert meta["vocab"]["kind"] == "compact" and meta["vocab"]["mask_id"] == 4
    assert set(meta["checksums"]) == {p.name for p in directory.iterdir()} - {"meta.json"}
    rows = [json.loads(line) for line in (directory / "sample.jsonl").read_text().splitlines()]
    assert len(rows) == 100 and rows[0]["text"] == " ".join(
        grammar.terminals[w] for w in sentences[0]
    )


def test_pretrain_rejects_sentences_longer_than_max_seq_length(built, tmp_path: Path) -> None:
    spec = {
        **TINY_SPEC,
        "sample": {**TINY_SPEC["sample"], "n_sentences": 50},
        "mlm": {**TINY_SPEC["mlm"], "max_seq_length": 5},
    }
    with pytest.raises(dataset.PcfgError, match="max_seq_length 5 fits at most 3"):
        dataset.build_pretrain(spec, built["grammar"], tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- downstream


@pytest.mark.parametrize("task", ["A", "B", "C"])
def test_downstream_matches_toolkit_labels(built, grammar, task, tmp_path: Path) -> None:
    directory = built[task]
    store.verify_checksums(directory)
    meta = json.loads((directory / "meta.json").read_text())
    vocabulary = compact_vocabulary(grammar)
    for split, n in (("train", 40), ("validation", 30)):
        sentences = draw_downstream_sentences(grammar, n, 2, split)
        labels = task_labels(grammar, sentences, task, batch_size=16)
        # Byte-identical to the toolkit's CSV writer (what ``pcfg labels --n`` writes).
        write_label_csv(tmp_path / "expected.csv", grammar, sentences, labels)
        assert (directory / f"{split}.csv").read_bytes() == (tmp_path / "expected.csv").read_bytes()
        with open(directory / f"{split}.csv", newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == ["text", "label"] and len(rows) == n + 1
        assert [int(r[1]) for r in rows[1:]] == labels.tolist()
        saved_labels = np.load(directory / f"{split}.labels.npy", mmap_mode="r")
        np.testing.assert_array_equal(saved_labels, labels)
        input_ids = np.load(directory / f"{split}.input_ids.npy")
        input_mask = np.load(directory / f"{split}.input_mask.npy")
        assert input_ids.shape == input_mask.shape == (n, 12)
        for row, sentence in enumerate(sentences):
            k = len(sentence)
            assert (
                input_ids[row, 0] == vocabulary.cls_id
                and input_ids[row, k + 1] == vocabulary.sep_id
            )
            np.testing.assert_array_equal(
                input_ids[row, 1 : k + 1], vocabulary.terminal_ids[sentence]
            )
            assert (
                input_mask[row].sum() == k + 2
                and (input_ids[row, k + 2 :] == vocabulary.pad_id).all()
            )
        counts = meta["counts"][split]
        assert counts["examples"] == n and sum(counts["label_counts"].values()) == n
    assert (
        meta["task"] == task
        and meta["kind"] == "pcfg_downstream"
        and meta["seed"] == {"downstream": 2}
    )
    names = meta["labels"]["names"]
    rows = [json.loads(line) for line in (directory / "sample.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and all(names[str(r["label"])] == r["label_name"] for r in rows)
    if task == "A":
        assert names == {"0": "S1", "1": "S2"}


# ---------------------------------------------------------------- optimal loss


def test_optimal_loss_matches_toolkit(built, grammar) -> None:
    directory = built["optimal_loss"]
    store.verify_checksums(directory)
    meta = json.loads((directory / "meta.json").read_text())
    metrics = json.loads((directory / "metrics.json").read_text())
    sentences = sample_sentences(
        grammar, 50, 1, stream=dataset.STREAM_OPTIMAL_LOSS, length_limit=32
    )
    assert (directory / "sentences.txt").read_text() == sentences_to_text(grammar, sentences)
    renormalized = grammar.renormalized()
    expected = optimal_mlm_loss(renormalized, sentences, batch_size=16).as_dict()
    assert metrics == meta["metrics"]
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert metrics["expected_cross_entropy_standard_error"] > 0
    offsets = np.load(directory / "offsets.npy")
    conditionals = np.load(directory / "conditionals.npy", mmap_mode="r")
    assert conditionals.dtype == np.float32 and conditionals.shape == (
        offsets[-1],
        grammar.n_terminals,
    )
    np.testing.assert_allclose(conditionals.sum(axis=1), 1.0, atol=1e-5)
    reference = exact_conditionals(renormalized, sentences[:5], batch_size=16)
    for i in range(5):
        np.testing.assert_allclose(
            conditionals[offsets[i] : offsets[i + 1]], reference[i], rtol=1e-5, atol=1e-7
        )
    input_ids = np.load(directory / "input_ids.npy")
    column_ids = np.load(directory / "conditional_vocab_ids.npy")
    # The masked token at input position t + 1 is a column of the conditional row offsets[i] + t.
    np.testing.assert_array_equal(input_ids[3, 1 : len(sentences[3]) + 1], column_ids[sentences[3]])
    assert meta["counts"]["sentences"] == 50 and meta["counts"]["tokens"] == int(offsets[-1])
    assert (
        meta["seed"] == {"optimal_loss": 1}
        and meta["parameters"]["optimal_loss"]["renormalize"] is True
    )


# ---------------------------------------------------------------- determinism, atomicity, logging


def test_same_spec_gives_byte_identical_directories(built, tmp_path: Path, caplog) -> None:
    # Default chunk sizes here (the fixture used small ones): chunking must not change any byte.
    with caplog.at_level(logging.INFO, logger="pipeline_lib.pcfg"):
        again = build_all(tmp_path)
    for name, directory in built.items():
        assert tree_bytes(again[name]) == tree_bytes(directory), name
    messages = [r.getMessage() for r in caplog.records if r.name == "pipeline_lib.pcfg"]
    assert any("pretrain: sampled 2500/2500" in m for m in messages)
    assert any("optimal-loss: conditionals of 50/50" in m for m in messages)


def test_exception_midway_leaves_no_output_directory(built, tmp_path: Path, monkeypatch) -> None:
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(dataset, "_pretrain_samples", explode)  # after all arrays are written
    with pytest.raises(RuntimeError, match="boom"):
        dataset.build_pretrain(TINY_SPEC, built["grammar"], tmp_path / "pretrain")
    assert list(tmp_path.iterdir()) == []

    from pipeline_lib.pcfg import labels

    calls = []
    real_writer = labels.write_label_csv

    def fail_on_validation(path, *args):
        calls.append(path)
        if len(calls) == 2:  # the train CSV is already written
            raise RuntimeError("boom")
        return real_writer(path, *args)

    monkeypatch.setattr(labels, "write_label_csv", fail_on_validation)
    with pytest.raises(RuntimeError, match="boom"):
        dataset.build_downstream(TINY_SPEC, built["grammar"], tmp_path / "A", "A")
    assert list(tmp_path.iterdir()) == []

    # An existing directory is left untouched by a failed rebuild.
    existing = tmp_path / "grammar"
    dataset.build_grammar(TINY_SPEC, existing)
    before = tree_bytes(existing)
    monkeypatch.setattr(dataset, "_checksums", explode)
    with pytest.raises(RuntimeError):
        dataset.build_grammar(TINY_SPEC, existing)
    assert tree_bytes(existing) == before and [p.name for p in tmp_path.iterdir()] == ["grammar"]


# ---------------------------------------------------------------- CLI


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline_lib", "pcfg", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_the_same_directories(built, tmp_path: Path) -> None:
    # Each verb gets what its rule passes: only the sections that product reads.
    def spec(product: str) -> str:
        return json.dumps(rule_spec(product), sort_keys=True)

    grammar_dir = tmp_path / "grammar"
    result = run_cli("build-grammar", "--spec", spec("grammar"), "--out", str(grammar_dir))
    assert result.returncode == 0, result.stderr
    result = run_cli(
        "build-pretrain",
        "--spec",
        spec("pretrain"),
        "--grammar",
        str(grammar_dir),
        "--out",
        str(tmp_path / "pretrain"),
    )
    assert result.returncode == 0, result.stderr
    assert "pipeline_lib.pcfg INFO pretrain: masked 2500/2500 sentences" in result.stderr
    result = run_cli(
        "build-downstream",
        "--spec",
        spec("downstream"),
        "--grammar",
        str(grammar_dir),
        "--task",
        "C",
        "--out",
        str(tmp_path / "C"),
    )
    assert result.returncode == 0, result.stderr
    for name, directory in (
        ("grammar", grammar_dir),
        ("pretrain", tmp_path / "pretrain"),
        ("C", tmp_path / "C"),
    ):
        assert tree_bytes(directory) == tree_bytes(built[name]), name

    bad = json.dumps({**TINY_SPEC, "sample": {"n_sentences": 3, "sede": 1}})
    result = run_cli(
        "build-pretrain",
        "--spec",
        bad,
        "--grammar",
        str(grammar_dir),
        "--out",
        str(tmp_path / "bad"),
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("pcfg build-pretrain: error: pcfg.sample.sede: unknown key")
    )
    assert not (tmp_path / "bad").exists()
