"""Corrupt or hostile data directories: one clear error each, before any training step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline_lib import files
from pipeline_lib.data import store
from pipeline_lib.data.corpus import load_corpus
from pipeline_lib.data.ragged import Ragged


def _corpus(root, values=(2, 3, 4, 5, 6), lengths=(2, 3)):
    with files.atomic_directory(root) as tmp:
        data = Ragged.from_lengths(np.asarray(values, np.uint16), np.asarray(lengths))
        checksums = {}
        for field in store.FIELDS:
            checksums.update(store.write_split(tmp, "copy", "train", field, data, np.uint16))
        files.write_json_atomic(tmp / "meta.json", {
            "format_version": store.FORMAT_VERSION, "checksums": checksums,
            "sources": {"copy": {"counts": {"train": len(lengths)}}},
        })
    return root


def _meta(root):
    return json.loads((root / "meta.json").read_text())


def test_a_good_corpus_loads_and_checks(tmp_path):
    root = _corpus(tmp_path / "c")
    store.verify_checksums(root)
    assert store.verify_counts(root) == {"copy": {"train": 2}}
    assert load_corpus(root, "train", vocab_size=16)["copy"][0].n == 2


@pytest.mark.parametrize(
    "meta,message",
    [
        ([1, 2], "expected a JSON object, got list"),
        ({"format_version": store.FORMAT_VERSION}, "no 'checksums'"),
        ({"format_version": store.FORMAT_VERSION, "checksums": [], "sources": {}},
         "'checksums' must be an object"),
        ({"format_version": store.FORMAT_VERSION, "checksums": {}, "sources": []},
         "'sources' must be an object"),
    ],
)
def test_malformed_meta_is_one_store_error(tmp_path, meta, message):
    root = _corpus(tmp_path / "c")
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(store.StoreError, match=message):
        store.verify_checksums(root)


def test_counts_removed_checksums_and_flipped_bytes_are_caught(tmp_path):
    root = _corpus(tmp_path / "c")
    meta = _meta(root)
    meta["sources"]["copy"]["counts"]["train"] = 999
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(store.StoreError, match="train has \\[2\\] rows but meta.json's counts say 999"):
        store.verify_counts(root)
    root = _corpus(tmp_path / "d")
    meta = _meta(root)
    removed = sorted(meta["checksums"])[0]
    del meta["checksums"][removed]
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(store.StoreError, match="not listed in meta.json's checksums"):
        store.verify_checksums(root)
    root = _corpus(tmp_path / "e")
    tokens = root / "copy" / "train.inputs.tokens.npy"
    data = bytearray(tokens.read_bytes())
    data[-1] ^= 0xFF
    tokens.write_bytes(bytes(data))
    with pytest.raises(store.StoreError, match="checksum mismatch"):
        store.verify_checksums(root)


def test_the_loader_refuses_float_tokens_bad_offsets_and_ids_beyond_the_vocabulary(tmp_path):
    root = _corpus(tmp_path / "c")
    with pytest.raises(store.StoreError, match=r"outside the model vocabulary \[0, 5\)"):
        load_corpus(root, "train", vocab_size=5)
    np.save(root / "copy" / "train.inputs.tokens.npy", np.arange(5, dtype=np.float32))
    with pytest.raises(store.StoreError, match="expected a 1-D integer array, got float32"):
        load_corpus(root, "train")
    root = _corpus(tmp_path / "d")
    np.save(root / "copy" / "train.inputs.offsets.npy", np.array([0, 4, 2, 5], np.int64))
    with pytest.raises(store.StoreError, match="not monotonic"):
        load_corpus(root, "train")


def test_outputs_get_the_umask_mode_not_mkdtemps_0700(tmp_path):
    old = os.umask(0o022)
    try:
        root = _corpus(tmp_path / "c")
    finally:
        os.umask(old)
    assert oct(root.stat().st_mode & 0o777) == oct(0o755)
    assert oct((root / "meta.json").stat().st_mode & 0o777) == oct(0o644)


def test_corpus_check_is_one_line_not_a_traceback(tmp_path):
    root = _corpus(tmp_path / "c")
    (root / "meta.json").write_text("[1, 2]")
    proc = subprocess.run([sys.executable, "-m", "pipeline_lib", "corpus-check", str(root)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "expected a JSON object" in proc.stderr
