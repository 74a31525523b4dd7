"""Vocabulary layouts: structure, special ids, and the SentencePiece path of the paper layout."""

import pytest

from pipeline_lib.data.vocab import (
    MAX_NUMBER,
    NUM_EXTRA_IDS,
    PAPER_PREFIX_IDS,
    VocabError,
    laptop_layout,
    paper_layout,
)


def test_paper_layout_matches_t5_ids():
    p = paper_layout()
    assert (p.data_lo, p.data_hi, p.vocab_size, p.model_vocab_size) == (2, 32000, 32100, 32128)
    assert (p.task_input_divider, p.word_divider, p.arg_divider, p.empty_marker) == (
        32099, 32098, 32097, 32096)
    assert list(p.lime_marker_ids.values()) == list(range(32000, 32007))
    assert p.prefix("set_1_minus_2") == (356, 834, 536, 834, 14078, 834, 357)
    assert (p.yes, p.no) == ((4273,), (150,))
    with pytest.raises(VocabError, match="vocab.spm_model"):
        p.number(3)


def test_laptop_layout_has_the_same_structure():
    lap = laptop_layout(100, ["foo", "bar", "yes"])
    assert lap.data_lo == 2 and lap.data_hi == 102
    assert lap.vocab_size == lap.data_hi + len(lap.words) + NUM_EXTRA_IDS
    assert lap.model_vocab_size % 8 == 0 and lap.model_vocab_size >= lap.vocab_size
    specials = {lap.task_input_divider, lap.word_divider, lap.arg_divider, lap.empty_marker,
                *lap.lime_marker_ids.values()}
    assert len(specials) == 11 and min(specials) >= lap.data_hi + len(lap.words)
    prefix_ids = {lap.prefix(n)[0] for n in PAPER_PREFIX_IDS}
    assert len(prefix_ids) == len(PAPER_PREFIX_IDS)
    assert all(lap.data_hi <= i < lap.data_hi + len(lap.words) for i in prefix_ids)
    assert lap.number(207) == tuple(lap.encode_text("2 0 7"))
    assert len(lap.numbers) == MAX_NUMBER + 1
    assert lap.encode_text("foo bar") == [lap.words_lo + lap.words.index(w) for w in ("foo", "bar")]
    with pytest.raises(VocabError, match="'baz'"):
        lap.encode_text("foo baz")
    assert lap.decode([lap.pad_id, lap.eos_id, lap.extra_id(0), 5]) == "<pad> </s> <extra_id_0> 5"


@pytest.fixture(scope="module")
def tiny_spm(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    d = tmp_path_factory.mktemp("spm")
    lines = [f"copy reverse set count {n} yes no length first_char" for n in range(0, 300)]
    (d / "text.txt").write_text("\n".join(lines * 3) + "\n")
    spm.SentencePieceTrainer.Train(
        input=str(d / "text.txt"), model_prefix=str(d / "m"), vocab_size=60,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        minloglevel=2, num_threads=1,
    )
    return str(d / "m.model")


def test_paper_layout_takes_words_and_numerals_from_the_spm(tiny_spm):
    import sentencepiece as spm

    proc = spm.SentencePieceProcessor(model_file=tiny_spm)
    p = paper_layout(tiny_spm)
    assert p.prefix("copy") == tuple(proc.EncodeAsIds("copy"))
    assert p.yes == tuple(proc.EncodeAsIds("yes"))
    lone = proc.PieceToId("▁")
    for n in (0, 7, 42, 220):
        ids = proc.EncodeAsIds(str(n))
        expected = ids[1:] if ids[0] == lone and len(ids) > 1 else ids
        assert p.number(n) == tuple(expected)
        assert proc.DecodeIds(list(p.number(n))).strip() == str(n)
    assert p.encode_text("count 5") == proc.EncodeAsIds("count 5")


def test_missing_spm_file_is_a_clear_error(tmp_path):
    with pytest.raises(VocabError, match="cannot load"):
        paper_layout(str(tmp_path / "nope.model"))
