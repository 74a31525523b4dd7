"""Input pipeline: EOS/trim/pad as seqio, shift right, packing, shuffling, mixing, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline_lib.data import store
from pipeline_lib.data.corpus import load_corpus
from pipeline_lib.data.ragged import Ragged
from pipeline_lib.train import data

LENGTHS = {"inputs": 8, "targets": 6}


def _ragged(rows, dtype=np.uint16) -> Ragged:
    return Ragged.from_rows(rows, dtype=dtype)


def _corpus(n=30, seed=0, names=("a", "b"), min_length=0):
    rng = np.random.default_rng(seed)
    out = {}
    for k, name in enumerate(names):
        lengths = rng.integers(min_length, 10, n)
        values = rng.integers(2, 50, lengths.sum()) + 100 * k  # source visible in the ids
        r = Ragged.from_lengths(values.astype(np.int32), lengths)
        out[name] = (r, r.reverse_rows())
    return out


def test_trim_appends_eos_after_trimming_to_length_minus_one():
    r = _ragged([[5, 6, 7, 8], [9], []])
    tokens, lengths = data.trim_with_eos(r, np.array([0, 1, 2]), 3)
    assert tokens.tolist() == [[5, 6, 1], [9, 1, 0], [1, 0, 0]]
    assert lengths.tolist() == [3, 2, 1]
    assert tokens.dtype == np.int32
    # rows are taken in the order asked
    assert data.trim_with_eos(r, np.array([1, 0]), 6)[0].tolist() == [
        [9, 1, 0, 0, 0, 0],
        [5, 6, 7, 8, 1, 0],
    ]


def test_unpacked_features():
    inputs = np.array([[3, 4, 1, 0]], np.int32)
    targets = np.array([[7, 8, 9, 1, 0]], np.int32)
    b = data.encdec_features(inputs, targets)
    assert b["decoder_input_tokens"].tolist() == [[0, 7, 8, 9, 1]]
    assert b["decoder_loss_weights"].tolist() == [[1, 1, 1, 1, 0]]
    assert b["encoder_input_tokens"] is inputs


def test_shift_right_restarts_in_every_segment():
    targets = np.array([[5, 6, 1, 7, 1, 0]])
    seg = np.array([[1, 1, 1, 2, 2, 0]])
    assert data.shift_right(targets, seg).tolist() == [[0, 5, 6, 0, 7, 0]]


def test_packing_by_hand():
    # example k: inputs of length li-1 (+EOS), targets of length lt-1 (+EOS)
    ins = _ragged([[10, 11, 12], [20], [30, 31, 32, 33, 34, 35], [40, 41], [50]])
    tgs = _ragged([[60], [70, 71], [80], [90, 91, 92, 93], [95]])
    pipe = data.Seq2SeqPipeline({"s": (ins, tgs)}, 2, LENGTHS, seed=0, shuffle=False, pack=True)
    b = next(pipe)
    # row 0: ex0 (4 in, 2 tg) + ex1 (2, 3) = (6, 5); ex2 (7, 2) does not fit -> row 1
    # row 1: ex2 (7, 2); ex3 (3, 5) does not fit -> no row left: ex3 starts the next batch
    assert b["encoder_input_tokens"].tolist() == [
        [10, 11, 12, 1, 20, 1, 0, 0],
        [30, 31, 32, 33, 34, 35, 1, 0],
    ]
    assert b["encoder_segment_ids"].tolist() == [[1, 1, 1, 1, 2, 2, 0, 0], [1] * 7 + [0]]
    assert b["encoder_positions"].tolist() == [[0, 1, 2, 3, 0, 1, 0, 0], list(range(7)) + [0]]
    assert b["decoder_target_tokens"].tolist() == [[60, 1, 70, 71, 1, 0], [80, 1, 0, 0, 0, 0]]
    assert b["decoder_input_tokens"].tolist() == [[0, 60, 0, 70, 71, 0], [0, 80, 0, 0, 0, 0]]
    assert b["decoder_segment_ids"].tolist() == [[1, 1, 2, 2, 2, 0], [1, 1, 0, 0, 0, 0]]
    assert b["decoder_positions"].tolist() == [[0, 1, 0, 1, 2, 0], [0, 1, 0, 0, 0, 0]]
    assert b["decoder_loss_weights"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]
    assert pipe.get_state() == {"mixed": 3, "positions": {"s": [0, 3]}}
    b2 = next(pipe)
    # row 0: ex3 (3, 5); ex4 (2, 2) would make 7 targets > 6, so it opens row 1, where the
    # second epoch's ex0 (4, 2) joins it; ex1 (2, 3) fits nowhere and waits for batch 3
    assert b2["encoder_input_tokens"][0].tolist() == [40, 41, 1, 0, 0, 0, 0, 0]
    assert b2["encoder_input_tokens"][1].tolist() == [50, 1, 10, 11, 12, 1, 0, 0]
    assert pipe.get_state()["positions"]["s"][0] == 1  # into the second epoch


def test_one_epoch_visits_every_example_once_and_epochs_differ():
    corpus = _corpus(n=24, names=("a",))
    pipe = data.Seq2SeqPipeline(corpus, 8, {"inputs": 12, "targets": 12}, seed=5)
    inputs, _ = corpus["a"]
    expected = sorted(tuple(r + [1]) for r in inputs.to_rows())

    def epoch_rows():
        rows = []
        for _ in range(3):
            for row in next(pipe)["encoder_input_tokens"].tolist():
                rows.append(tuple(row[: row.index(1) + 1]))
        return rows

    first, second = epoch_rows(), epoch_rows()
    assert sorted(first) == expected and sorted(second) == expected
    assert first != second  # a new permutation per epoch
    assert pipe.get_state() == {"mixed": 48, "positions": {"a": [2, 0]}}


def test_same_seed_same_stream_other_seed_other_stream():
    corpus = _corpus()

    def stream(seed):
        pipe = data.Seq2SeqPipeline(corpus, 4, LENGTHS, seed=seed, pack=True)
        return [next(pipe)["encoder_input_tokens"] for _ in range(3)]

    a, b, c = stream(1), stream(1), stream(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("pack", [False, True])
def test_restored_state_continues_exactly(pack):
    corpus = _corpus()
    pipe = data.Seq2SeqPipeline(corpus, 4, LENGTHS, seed=9, pack=pack)
    batches = [next(pipe) for _ in range(3)]
    state = json.loads(json.dumps(pipe.get_state()))  # it goes through a JSON checkpoint item
    rest = [next(pipe) for _ in range(12)]  # crosses epoch boundaries
    resumed = data.Seq2SeqPipeline(corpus, 4, LENGTHS, seed=9, pack=pack)
    resumed.set_state(state)
    for want in rest:
        got = next(resumed)
        assert want.keys() == got.keys()
        for k in want:
            np.testing.assert_array_equal(want[k], got[k])
    assert batches  # the first three were consumed before the state was taken


def test_state_of_other_sources_is_rejected():
    pipe = data.Seq2SeqPipeline(_corpus(), 4, LENGTHS, seed=0)
    with pytest.raises(data.DataStateError, match="sources"):
        pipe.set_state({"mixed": 0, "positions": {"x": [0, 0]}})


def test_equal_rate_mixing_of_three_sources():
    corpus = _corpus(n=50, names=("lime_abduct", "lime_deduct", "lime_induct"), min_length=1)
    pipe = data.Seq2SeqPipeline(corpus, 100, {"inputs": 12, "targets": 4}, seed=0)
    first = np.concatenate([next(pipe)["encoder_input_tokens"][:, 0] for _ in range(30)])
    counts = np.bincount(first // 100, minlength=3)  # ids of source k are 100k + (2..49)
    assert np.all(np.abs(counts / counts.sum() - 1 / 3) < 0.03), counts
    rated = data.Seq2SeqPipeline(
        _corpus(n=50, names=("a", "b"), min_length=1),
        100,
        {"inputs": 12, "targets": 4},
        seed=0,
        rates={"a": 3.0, "b": 1.0},
    )
    first = np.concatenate([next(rated)["encoder_input_tokens"][:, 0] for _ in range(20)])
    share_a = np.mean(first < 100)
    assert abs(share_a - 0.75) < 0.04


def test_memory_mapped_corpus_on_disk(tmp_path):
    corpus = _corpus(names=("copy",))
    for split in ("train", "valid"):
        for field, r in zip(store.FIELDS, corpus["copy"]):
            store.write_split(tmp_path, "copy", split, field, r, np.uint16)
    (tmp_path / "meta.json").write_text(
        json.dumps({"format_version": store.FORMAT_VERSION, "sources": {"copy": {}}})
    )
    loaded = load_corpus(tmp_path, "train")
    assert isinstance(loaded["copy"][0].values, np.memmap)
    on_disk = data.Seq2SeqPipeline(loaded, 4, LENGTHS, seed=1)
    in_memory = data.Seq2SeqPipeline(corpus, 4, LENGTHS, seed=1)
    for _ in range(5):
        a, b = next(on_disk), next(in_memory)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_eval_batches_one_ordered_pass_with_padding_rows():
    corpus = _corpus(n=10)
    batches = list(data.seq2seq_eval_batches(corpus, 4, LENGTHS))
    assert len(batches) == 6  # 3 per source (4 + 4 + 2 rows)
    assert all(b["encoder_input_tokens"].shape == (4, 8) for b in batches)
    last = batches[2]
    assert not last["decoder_loss_weights"][2:].any()
    targets = sum(
        int(np.minimum(r.lengths, LENGTHS["targets"] - 1).sum()) + r.n for _, r in corpus.values()
    )
    assert sum(b["decoder_loss_weights"].sum() for b in batches) == targets
    sampled = list(data.seq2seq_eval_batches(corpus, 4, LENGTHS, num_batches=2, seed=42))
    again = list(data.seq2seq_eval_batches(corpus, 4, LENGTHS, num_batches=2, seed=42))
    assert len(sampled) == 2
    np.testing.assert_array_equal(
        sampled[1]["encoder_input_tokens"], again[1]["encoder_input_tokens"]
    )


def test_array_pipeline_for_mlm_style_arrays():
    n = 10
    arrays = {
        "input_ids": np.arange(n * 3).reshape(n, 3),
        "labels": np.arange(n)[:, None].repeat(3, 1),
    }
    pipe = data.ArrayPipeline(
        arrays,
        4,
        seed=0,
        transform=lambda b: {**b, "weights": (b["labels"] >= 0).astype(np.float32)},
    )
    assert isinstance(pipe, data.BatchPipeline)
    seen = []
    for _ in range(5):  # 20 rows = two epochs
        b = next(pipe)
        assert np.array_equal(b["input_ids"][:, 0] // 3, b["labels"][:, 0])  # rows stay aligned
        assert b["weights"].shape == (4, 3)
        seen.extend(b["labels"][:, 0].tolist())
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert pipe.get_state() == {"epoch": 2, "index": 0}
    state = {"epoch": 1, "index": 2}
    pipe.set_state(state)
    other = data.ArrayPipeline(arrays, 4, seed=0)
    other.set_state(state)
    np.testing.assert_array_equal(next(pipe)["input_ids"], next(other)["input_ids"])
    with pytest.raises(ValueError, match="equal lengths"):
        data.ArrayPipeline({"a": np.zeros(3), "b": np.zeros(4)}, 2, seed=0)
