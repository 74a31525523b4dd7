"""Hostile input files and directories, fuzzed: every damaged grammar file or corpus directory
is either accepted or rejected with one bounded error naming the file (and line); never another
exception, never a traceback. Plus the CLI paths: a broken config file and a diverging
training run each end in one line and a non-zero exit. Derandomised, fixed example budgets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_lib import files
from pipeline_lib.data import store
from pipeline_lib.data.corpus import load_corpus
from pipeline_lib.data.ragged import Ragged
from pipeline_lib.pcfg.errors import PcfgError
from pipeline_lib.pcfg.grammar_io import read_grammar

REPO = Path(__file__).resolve().parents[1]
GRAMMAR = """%start S
S -> A B [0.7] | B A [0.3]
A -> 'a' [0.6] | A A [0.4]
B -> 'b' [1.0]
"""
DAMAGE = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 200), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 200), st.integers(1, 20)),
    st.tuples(st.just("replace"), st.integers(0, 200), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("truncate"), st.integers(0, 200), st.just(b"")),
)


def _damage(data: bytes, edits) -> bytes:
    for kind, at, arg in edits:
        at = min(at, len(data))
        if kind == "insert":
            data = data[:at] + arg + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + arg:]
        elif kind == "replace":
            data = data[:at] + arg + data[at + len(arg):]
        else:
            data = data[:at]
    return data


@settings(max_examples=200, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(DAMAGE, min_size=1, max_size=3))
def test_damaged_grammar_files_fail_with_file_and_line(tmp_path, edits):
    path = tmp_path / "g.txt"
    path.write_bytes(_damage(GRAMMAR.encode(), edits))
    try:
        read_grammar(path)
    except PcfgError as e:
        msg = str(e)
        assert msg.startswith(f"{path}:") and "\n" not in msg.strip() and len(msg) < 600, msg


def _corpus(root: Path) -> Path:
    with files.atomic_directory(root) as tmp:
        data = Ragged.from_lengths(np.arange(2, 12, dtype=np.uint16), np.array([4, 6]))
        checksums = {}
        for field in store.FIELDS:
            checksums.update(store.write_split(tmp, "copy", "train", field, data, np.uint16))
        files.write_json_atomic(tmp / "meta.json", {
            "format_version": store.FORMAT_VERSION, "checksums": checksums,
            "sources": {"copy": {"counts": {"train": 2}}},
        })
    return root


@settings(max_examples=120, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(["meta.json", "copy/train.inputs.tokens.npy",
                               "copy/train.inputs.offsets.npy", "copy/train.targets.tokens.npy"]),
       edits=st.lists(DAMAGE, min_size=1, max_size=2), remove=st.booleans())
def test_damaged_corpus_directories_are_one_store_error(tmp_path_factory, target, edits, remove):
    root = _corpus(tmp_path_factory.mktemp("c") / "corpus")
    path = root / target
    if remove:
        path.unlink()
    else:
        path.write_bytes(_damage(path.read_bytes(), edits))
    try:
        store.verify_checksums(root)
        store.verify_counts(root)
        load_corpus(root, "train", vocab_size=16)
    except store.StoreError as e:
        msg = str(e)
        assert str(root) in msg and "\n" not in msg and len(msg) < 600, msg


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pipeline_lib", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_a_broken_config_file_through_the_cli_is_one_line_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\nvocab:\n  layout: 'laptop\n")
    proc = _cli("validate-config", "--config", str(bad), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert f"{bad}:" in proc.stderr and "not valid YAML" in proc.stderr


@pytest.mark.slow
def test_a_diverging_training_run_ends_in_one_line_not_a_traceback(tmp_path):
    import yaml

    cfg = yaml.safe_load((REPO / "tests" / "data" / "tiny_config.yaml").read_text())
    cfg["corpora"]["tasks"] = ["identity"]
    cfg["transfer"]["pretrain"]["optimizer"] = {"name": "sgd", "schedule": "constant",
                                                "learning_rate": 3.0e38, "warmup_steps": 0}
    spec = json.dumps(cfg)
    proc = _cli("corpus", "--spec", spec, "--task", "identity", "--out", "corpus", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = _cli("transfer-pretrain", "--spec", spec, "--corpus", "corpus", "--out", "out",
                "--ckpt-dir", "ckpt", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: non-finite loss or gradient at step 1"), last
    assert not (tmp_path / "out" / "params.npz").exists()
