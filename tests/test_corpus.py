"""Corpus builder: dedup + split protocol, determinism across workers, atomic writes, format."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline_lib.data import corpus as corpus_mod
from pipeline_lib.data import store
from pipeline_lib.data.corpus import CorpusSpec, build_corpus, load_corpus
from pipeline_lib.data.ragged import first_occurrences, stack
from pipeline_lib.data.vocab import laptop_layout

LAYOUT = laptop_layout(64)


def _spec(task="set", **kw):
    args = dict(task=task, seed=7, train_examples=300, valid_examples=40, generate_factor=1.2,
                length_range=(4, 12), block_size=64, params={})
    args.update(kw)
    return CorpusSpec(**args)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_bytes_whatever_the_number_of_workers(tmp_path):
    build_corpus(_spec(), LAYOUT, tmp_path / "a", workers=1)
    build_corpus(_spec(), LAYOUT, tmp_path / "b", workers=2)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and a == b
    build_corpus(_spec(seed=8), LAYOUT, tmp_path / "c", workers=1)
    assert _files(tmp_path / "c")["set/train.inputs.tokens.npy"] != a["set/train.inputs.tokens.npy"]


def test_dedup_and_disjoint_splits(tmp_path):
    # first_token with a tiny vocabulary and short inputs: duplicates are frequent
    spec = _spec("first_token", length_range=(4, 9), train_examples=500, valid_examples=50)
    meta = build_corpus(spec, laptop_layout(4), tmp_path / "c", workers=1)
    counts = meta["sources"]["first_token"]["counts"]
    assert counts["train"] == 500 and counts["valid"] == 50
    assert counts["distinct_inputs"] <= counts["generated"]
    data = load_corpus(tmp_path / "c", "train")["first_token"]
    valid = load_corpus(tmp_path / "c", "valid")["first_token"]
    both = stack([data[0], valid[0]])
    assert first_occurrences(both).size == both.n  # all inputs distinct, splits disjoint
    # targets still match inputs after dedup/split
    assert (data[1].values == data[0].values[data[0].starts + 2]).all()


def test_topup_when_dedup_leaves_too_few(tmp_path):
    # generate_factor just covers train+valid, but the tiny space forces extra blocks
    spec = _spec("identity", length_range=(4, 9), train_examples=400, valid_examples=100,
                 generate_factor=1.25, block_size=32)
    meta = build_corpus(spec, laptop_layout(2), tmp_path / "c")
    counts = meta["sources"]["identity"]["counts"]
    assert counts["generated"] > 500 and counts["train"] == 400


def test_meta_and_sample_contents(tmp_path):
    meta = build_corpus(_spec("count"), LAYOUT, tmp_path / "c")
    on_disk = store.read_meta(tmp_path / "c")
    assert on_disk == json.loads(json.dumps(meta))
    v = on_disk["vocab"]
    assert v["task_prefix_ids"] == list(LAYOUT.prefix("count"))
    assert v["numbers"]["17"] == list(LAYOUT.number(17))
    assert v["arg_divider"] == LAYOUT.arg_divider and v["empty_marker"] == LAYOUT.empty_marker
    assert on_disk["seed"] == 7 and on_disk["token_dtype"] == "uint16"
    rows = [json.loads(x) for x in (tmp_path / "c" / "sample.jsonl").read_text().splitlines()]
    assert len(rows) == 100
    train = load_corpus(tmp_path / "c", "train")["count"]
    assert rows[0]["inputs"] == train[0].row(0).tolist()
    assert rows[0]["inputs_text"].startswith("<task:count> <extra_id_0>")
    store.verify_checksums(tmp_path / "c")


def test_loader_is_memory_mapped(tmp_path):
    build_corpus(_spec("reverse"), LAYOUT, tmp_path / "c")
    inputs, _ = load_corpus(tmp_path / "c", "train")["reverse"]
    assert isinstance(inputs.values, np.memmap)


def test_corruption_is_detected(tmp_path):
    build_corpus(_spec("reverse"), LAYOUT, tmp_path / "c")
    path = tmp_path / "c" / "reverse" / "train.targets.tokens.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(store.StoreError, match="checksum mismatch"):
        store.verify_checksums(tmp_path / "c")
    (tmp_path / "c" / "reverse" / "valid.inputs.offsets.npy").write_bytes(b"garbage")
    with pytest.raises(store.StoreError, match="valid.inputs"):
        store.read_split(tmp_path / "c", "reverse", "valid", "inputs")


def test_failed_build_leaves_previous_output_untouched(tmp_path, monkeypatch):
    out = tmp_path / "c"
    build_corpus(_spec("reverse"), LAYOUT, out)
    before = _files(out)

    def boom(*a, **k):
        raise RuntimeError("killed mid-generation")

    monkeypatch.setattr(corpus_mod, "build_source", boom)
    with pytest.raises(RuntimeError):
        build_corpus(_spec("reverse", seed=99), LAYOUT, out)
    assert _files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary directory left behind


def test_sigkill_mid_generation_leaves_no_output(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import yaml

    cfg = {
        "seed": 0,
        "vocab": {"layout": "laptop", "data_vocab_size": 512},
        "corpora": {"tasks": ["union"], "train_examples": 3_000_000, "valid_examples": 10,
                    "length_range": [10, 220]},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "union"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline_lib", "corpus", "--config", str(tmp_path / "c.yaml"),
         "--out", str(out)],
        stderr=subprocess.PIPE, text=True,
    )
    # wait until generation has started (first progress line), then kill hard
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline()
        if "block" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    leftovers = list(tmp_path.glob(".union.*.tmp"))
    assert leftovers  # the killed job's scratch, hidden and never mistaken for the output
    # the next attempt cleans the scratch up and writes the real output
    from pipeline_lib.data.corpus import CorpusSpec, build_corpus

    spec = CorpusSpec(task="union", seed=0, train_examples=50, valid_examples=5,
                      generate_factor=1.2, length_range=(10, 40), block_size=64, params={})
    build_corpus(spec, LAYOUT, out)
    assert out.exists() and not list(tmp_path.glob(".union.*.tmp"))
