"""Downstream registry: every adapter on a format-conformant fixture, the store it writes
(determinism, atomicity, load_corpus compatibility), the tokenizers and their errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_lib.data import downstream as ds
from pipeline_lib.data import store
from pipeline_lib.data.corpus import load_corpus
from pipeline_lib.data.downstream import (
    ADAPTERS,
    DownstreamError,
    Example,
    WordVocabulary,
    build_downstream,
    detokenize,
    load_examples,
)
from pipeline_lib.data.vocab import laptop_layout, paper_layout
from pipeline_lib.train.data import Seq2SeqPipeline

FIXTURES = Path(__file__).parent / "data" / "downstream"
LAYOUT = laptop_layout(128)

WEBQSP_NAMES = ["ada", "bob", "cy", "di", "ed", "flo", "gus", "hal", "ivy"]


def _webqsp(i, name, rel="people.person.profession"):
    mid = f"m.0{i}x" if i < 10 else f"m.0{i}"
    return Example(
        f"question: what is {name} known for entity: {name} {mid}",
        f"SELECT DISTINCT ?x WHERE {{ FILTER (?x != ns:{mid}) ns:{mid} ns:{rel} ?x . }}",
    )


EXPECTED = {
    "cnndm_10k": {
        "train": [
            Example("the cat sat on the mat . it was a sunny day .", "cat sat on mat ."),
            Example("prices rose again in june , officials said .", "prices rose in june ."),
            Example("the team won the final 2 - 1 .", "team won final ."),
        ],
        "validation": [Example("a storm hit the coast on monday .", "storm hit coast .")],
        "test": [Example("the museum reopened after repairs .", "museum reopened .")],
    },
    "code_translation": {
        "train": [
            Example(
                "public int Add(int a, int b) { return a + b; }",
                "public virtual int Add(int a, int b) { return a + b; }",
            ),
            Example(
                "public void Clear() {list.clear();}", "public virtual void Clear() {list.Clear();}"
            ),
        ],
        "validation": [
            Example(
                "public int size() {return count;}", "public virtual int Size() {return count;}"
            )
        ],
        "test": [
            Example(
                "public boolean isEmpty() {return count == 0;}",
                "public virtual bool IsEmpty() {return count == 0;}",
            )
        ],
    },
    "mtop": {
        "train": [
            Example(
                "Has Angelika Kratzer video messaged me ?",
                "[IN:GET_MESSAGE [SL:CONTACT Angelika Kratzer ] [SL:TYPE_CONTENT video ] "
                "[SL:RECIPIENT me ] ]",
            ),
            Example("set an alarm for 7am", "[IN:CREATE_ALARM [SL:DATE_TIME for 7am ] ]"),
        ],
        "validation": [Example("call mom", "[IN:CREATE_CALL [SL:CONTACT mom ] ]")],
        "test": [Example("what 's the weather", "[IN:GET_WEATHER ]")],
    },
    "webqsp": {
        # 11 questions, one without SPARQL: 10 usable -> 9 train, the last 1 validation
        "train": [_webqsp(i, n) for i, n in enumerate(WEBQSP_NAMES)],
        "validation": [
            Example(
                "question: where was jo born entity: jo m.010",
                "SELECT DISTINCT ?x WHERE { FILTER (?x != ns:m.010) "
                "ns:m.010 ns:people.person.place_of_birth ?x . }",
            )
        ],
        "test": [
            Example(
                "question: what language do they speak in peru entity: peru m.016wzw",
                "SELECT DISTINCT ?x WHERE { FILTER (?x != ns:m.016wzw) "
                "ns:m.016wzw ns:location.country.languages_spoken ?x . }",
            )
        ],
    },
    "retrosynthesis": {
        "train": [
            Example("<RX_6> C C ( = O ) O C C", "C C ( = O ) O . O C C"),
            Example("<RX_1> c 1 c c c c c 1 O", "c 1 c c c c c 1 Br . O"),
        ],
        "validation": [Example("<RX_2> C C N", "C C Br . N")],
        "test": [Example("<RX_6> C O C", "C O . C I")],
    },
    "squad": {
        "train": [
            Example(
                "question: When was the tower built ? context: The Eiffel Tower ( Paris ) was "
                "built in 1889 ; it is 330 m tall .",
                "1889",
            ),
            Example(
                "question: How tall is it ? context: The Eiffel Tower ( Paris ) was built in "
                "1889 ; it is 330 m tall .",
                "330 m",
            ),
        ],
        "validation": [
            Example(
                "question: What did Curie win ? context: Marie Curie won the Nobel Prize in 1903 .",
                "the Nobel Prize",
                ("the Nobel Prize", "Nobel Prize", "the Nobel Prize in 1903"),
            )
        ],
    },
}
EXPECTED["squad"]["test"] = EXPECTED["squad"]["validation"]  # SQuAD: test reads dev
PCFG_EXPECTED = {
    "train": [Example("t1 t4 t2 t9 t3", "0"), Example("t5 t5 t1 t2 t7 t8", "2")],
    "validation": [Example("t4 t2 t9 t3 t1", "1")],
}
PCFG_EXPECTED["test"] = PCFG_EXPECTED["validation"]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# --- adapters --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_adapter_reads_fixture_exactly(name, split):
    assert ADAPTERS[name].read(FIXTURES / name, split) == EXPECTED[name][split]


@pytest.mark.parametrize("task", ["A", "B", "C"])
def test_pcfg_adapters_test_split_falls_back_to_validation(task, tmp_path):
    adapter = ADAPTERS[f"pcfg_{task}"]
    for split, expected in PCFG_EXPECTED.items():
        assert adapter.read(FIXTURES / "pcfg", split) == expected
    # with a test.csv of its own, test reads it
    shutil.copytree(FIXTURES / "pcfg", tmp_path / "p")
    (tmp_path / "p" / "test.csv").write_text("text,label\nt9 t9 t1 t2 t3,4\n")
    assert adapter.read(tmp_path / "p", "test") == [Example("t9 t9 t1 t2 t3", "4")]


def test_transduction_adapters_read_tsv_and_name_bad_lines(tmp_path):
    for name in ("pcfg_swap", "pcfg_split"):
        adapter = ADAPTERS[name]
        assert adapter.primary_metric == "exact_match"
        (tmp_path / "test.tsv").write_text("w1 w2 w3\tw3 w1 w2\n")
        assert adapter.read(tmp_path, "test") == [Example("w1 w2 w3", "w3 w1 w2")]
        (tmp_path / "train.tsv").write_text("w1 w2\tw2 w1\nno tab here\n")
        with pytest.raises(DownstreamError, match=r"train.tsv:2: expected 'input<TAB>target'"):
            adapter.read(tmp_path, "train")


def test_registry_metadata():
    assert set(ADAPTERS) == {
        "cnndm_10k",
        "code_translation",
        "mtop",
        "webqsp",
        "retrosynthesis",
        "squad",
        "pcfg_A",
        "pcfg_B",
        "pcfg_swap",
        "pcfg_split",
        "pcfg_C",
    }
    for a in ADAPTERS.values():
        assert a.primary_metric in a.metrics and a.description
    assert ADAPTERS["cnndm_10k"].primary_metric == "rouge1"
    assert ADAPTERS["squad"].metrics == ("squad_em", "squad_f1")
    assert ADAPTERS["mtop"].primary_metric == "exact_match"


def test_example_answers_default_to_target():
    assert Example("x", "y").answers == ("y",)
    assert Example("x", "y", ["a", "b"]).answers == ("a", "b")


def test_pad_punctuation_matches_t5_rule():
    from pipeline_lib.data.downstream_adapters import pad_punctuation

    # letters (any script), numbers, marks and "_" stay; everything else is padded
    assert pad_punctuation("snake_case, café's  3.5€") == "snake_case , café ' s 3 . 5 €"
    assert pad_punctuation("  (x)  ") == "( x )"


@pytest.mark.parametrize(
    "name, filename, content, message",
    [
        ("cnndm_10k", "lowercase_val.txt", "article without summary\n", "lowercase_val.txt:1"),
        ("mtop", "eval.txt", "1\tIN:X\t\tcall mom\tcalling\ten_XX\t[IN:X ]\n", "eval.txt:1"),
        ("mtop", "eval.txt", "1\tIN:X\t\tcall\tcalling\ten_XX\t[IN:X ]\t{bad\n", "eval.txt:1"),
        ("code_translation", "valid.java-cs.txt.cs", "a\nb\n", "has 1 lines but"),
        ("webqsp", "WebQSP.train.json", '{"Questions": [\n}', "WebQSP.train.json: line 2"),
        ("squad", "dev-v1.1.json", '{"data": [{"title": "t"}]}', "missing 'paragraphs'"),
        ("retrosynthesis", "src-val.txt", "\n", "src-val.txt:1: empty line"),
    ],
)
def test_malformed_files_name_file_and_line(name, filename, content, message, tmp_path):
    src = tmp_path / name
    shutil.copytree(FIXTURES / name, src)
    (src / filename).write_text(content)
    with pytest.raises(DownstreamError, match=message.replace("[", r"\[").replace("'", "'")):
        ADAPTERS[name].read(src, "validation")


def test_pcfg_bad_header_and_missing_file(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,label\na,1\n")
    with pytest.raises(DownstreamError, match=r"train.csv:1: expected the header 'text,label'"):
        ADAPTERS["pcfg_A"].read(tmp_path, "train")
    with pytest.raises(DownstreamError, match=r"validation.csv: missing .*validation split"):
        ADAPTERS["pcfg_A"].read(tmp_path, "validation")
    with pytest.raises(DownstreamError, match="unknown split 'valid'"):
        ADAPTERS["pcfg_A"].read(tmp_path, "valid")


# --- build_downstream -----------------------------------------------------------------------------
def test_build_is_deterministic_and_loadable(tmp_path):
    spec = {"source": str(FIXTURES / "mtop")}
    meta = build_downstream("mtop", spec, LAYOUT, tmp_path / "a")
    build_downstream("mtop", dict(spec), LAYOUT, tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    store.verify_checksums(tmp_path / "a")
    assert meta["sources"]["mtop"]["counts"] == {"train": 2, "validation": 1, "test": 1}
    assert meta["primary_metric"] == "exact_match" and meta["eos_appended"] is False
    assert set(meta["input_files"]) == {"train.txt", "eval.txt", "test.txt"}
    for split in ("train", "validation", "test"):
        assert load_examples(tmp_path / "a", split) == EXPECTED["mtop"][split]
        ((inputs, targets),) = load_corpus(tmp_path / "a", split).values()
        assert inputs.n == targets.n == len(EXPECTED["mtop"][split])
    # the fine-tuning rule's path: load_corpus + Seq2SeqPipeline, EOS appended by the pipeline
    batch = next(
        Seq2SeqPipeline(load_corpus(tmp_path / "a", "train"), 2, {"inputs": 16, "targets": 24}, 0)
    )
    enc = batch["encoder_input_tokens"]
    assert enc.shape == (2, 16) and (enc == 1).sum() == 2
    assert sorted(detokenize(tmp_path / "a", row) for row in enc) == sorted(
        e.inputs for e in EXPECTED["mtop"]["train"]
    )


def test_word_vocabulary_round_trip_on_training_text(tmp_path):
    build_downstream("squad", {"source": str(FIXTURES / "squad")}, LAYOUT, tmp_path / "s")
    ((inputs, targets),) = load_corpus(tmp_path / "s", "train").values()
    for i, ex in enumerate(load_examples(tmp_path / "s", "train")):
        # model output style: EOS, then padding (ignored), then garbage after EOS (ignored)
        assert detokenize(tmp_path / "s", [*inputs.row(i), 1, 0, 0, 7]) == ex.inputs
        assert detokenize(tmp_path / "s", targets.row(i)) == ex.targets
    # the validation split's words that were never seen in training decode as <unk>
    ((val_inputs, _),) = load_corpus(tmp_path / "s", "validation").values()
    decoded = detokenize(tmp_path / "s", val_inputs.row(0))
    assert decoded.startswith("question: <unk> <unk> <unk> <unk> ? context:")
    assert (
        load_examples(tmp_path / "s", "validation")[0].answers
        == EXPECTED["squad"]["validation"][0].answers
    )


def test_word_vocabulary_order_ids_and_oov():
    train = [Example("b a c a", "c a"), Example("b", "d")]
    vocab = WordVocabulary.build("toy", train, LAYOUT)
    # counts a:3, c:2, b:2, d:1 -> by (-count, word)
    assert vocab.words == ("a", "b", "c", "d")
    assert vocab.unk_id == LAYOUT.data_lo == 2 and vocab.first_id == 3
    assert vocab.encode("a d zebra c") == [3, 6, 2, 5]
    assert vocab.decode([3, 6, 2, 5, 1, 4]) == "a d <unk> c"
    assert all(LAYOUT.data_lo <= i < LAYOUT.data_hi for i in vocab.encode("a b c d"))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.text("abcxyz.,<>_é", min_size=1, max_size=5), min_size=1, max_size=8),
        min_size=1,
        max_size=6,
    )
)
def test_word_vocabulary_round_trip_property(sentences):
    texts = [" ".join(words) for words in sentences]
    vocab = WordVocabulary.build("prop", [Example(t, t) for t in texts], laptop_layout(512))
    for t in texts:
        ids = vocab.encode(t)
        assert len(ids) == len(t.split()) and vocab.unk_id not in ids
        assert vocab.decode(ids) == t


def test_too_many_words_is_a_clear_error(tmp_path):
    with pytest.raises(
        DownstreamError,
        match=r"cnndm_10k: the training split has 2\d distinct words but the laptop layout "
        r"has room for 7",
    ):
        build_downstream(
            "cnndm_10k", {"source": str(FIXTURES / "cnndm_10k")}, laptop_layout(8), tmp_path / "c"
        )
    assert not (tmp_path / "c").exists()


def test_caps_and_limits(tmp_path):
    meta = build_downstream(
        "webqsp",
        {"source": str(FIXTURES / "webqsp"), "max_train_examples": 5},
        LAYOUT,
        tmp_path / "w",
        limits={"train": 3, "test": 1},
    )
    assert meta["sources"]["webqsp"]["counts"] == {"train": 3, "validation": 1, "test": 1}
    assert load_examples(tmp_path / "w", "train") == EXPECTED["webqsp"]["train"][:3]
    assert meta["parameters"]["max_train_examples"] == 5


def test_failure_leaves_no_output_and_keeps_previous(tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = []

    def failing_write_split(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_write_split(*args, **kwargs)

    real_write_split = store.write_split
    monkeypatch.setattr(store, "write_split", failing_write_split)
    with pytest.raises(OSError, match="disk full"):
        build_downstream("pcfg_A", {"source": str(FIXTURES / "pcfg")}, LAYOUT, out)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(store, "write_split", real_write_split)
    build_downstream("pcfg_A", {"source": str(FIXTURES / "pcfg")}, LAYOUT, out)
    before = _files(out)
    monkeypatch.setattr(store, "write_split", failing_write_split)
    calls.clear()
    with pytest.raises(OSError):
        build_downstream("pcfg_A", {"source": str(FIXTURES / "pcfg")}, LAYOUT, out)
    assert _files(out) == before


@pytest.mark.parametrize(
    "name, spec, message",
    [
        ("nope", {"source": "x"}, "downstream nope: unknown adapter 'nope'; known: cnndm_10k"),
        ("mtop", {"adapter": "MTOP", "source": "x"}, "unknown adapter 'MTOP'"),
        ("mtop", {"source": "x", "split": 1}, "unknown spec key.* split"),
        ("mtop", {}, "'source' .* is required"),
        ("mtop", {"source": "x", "loader": "web"}, "loader 'web'"),
        ("mtop", {"source": "x", "max_train_examples": 0}, "max_train_examples must be"),
        ("pcfg_B", {"source": "gs://bucket/p"}, "must be a local directory"),
        ("mtop", {"loader": "hf"}, "loader 'hf' is not available for this data set"),
    ],
)
def test_bad_specs(name, spec, message, tmp_path):
    with pytest.raises(DownstreamError, match=message):
        build_downstream(name, spec, LAYOUT, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_bad_limits(tmp_path):
    with pytest.raises(DownstreamError, match="limits key 'valid' is not a split"):
        build_downstream(
            "pcfg_C", {"source": str(FIXTURES / "pcfg")}, LAYOUT, tmp_path / "o", {"valid": 1}
        )


# --- SentencePiece (paper layout) ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_spm(tmp_path_factory) -> str:
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("spm")
    lines = []
    for name in ("cnndm_10k", "mtop"):
        for split in ("train", "validation", "test"):
            lines += [e.inputs + " " + e.targets for e in EXPECTED[name][split]]
    (d / "corpus.txt").write_text("\n".join(lines * 3) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(d / "corpus.txt"),
        model_prefix=str(d / "m"),
        vocab_size=80,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return str(d / "m.model")


def test_sentencepiece_build_and_detokenize(tiny_spm, tmp_path):
    layout = paper_layout(tiny_spm)
    meta = build_downstream(
        "cnndm_10k", {"source": str(FIXTURES / "cnndm_10k")}, layout, tmp_path / "c"
    )
    assert meta["vocab"]["tokenizer"] == "sentencepiece" and meta["token_dtype"] == "uint16"
    assert json.loads((tmp_path / "c" / "vocab.json").read_text())["kind"] == "sentencepiece"
    ((inputs, targets),) = load_corpus(tmp_path / "c", "train").values()
    for i, ex in enumerate(load_examples(tmp_path / "c", "train")):
        assert list(targets.row(i)) == layout.encode_text(ex.targets)
        # sentinels (extra ids) are dropped, text stops at EOS
        ids = [*targets.row(i), layout.extra_id(0), 1, 5]
        assert detokenize(tmp_path / "c", ids, layout) == ex.targets
    # ids the tiny model lacks (it has 80 pieces, the layout 32000 data ids) are dropped
    first = load_examples(tmp_path / "c", "train")[0].targets
    assert detokenize(tmp_path / "c", [500, *targets.row(0), 31999], layout) == first
    with pytest.raises(DownstreamError, match="needs the paper layout"):
        detokenize(tmp_path / "c", [5])


def test_sentencepiece_fingerprint_mismatch(tiny_spm, tmp_path):
    layout = paper_layout(tiny_spm)
    build_downstream("mtop", {"source": str(FIXTURES / "mtop")}, layout, tmp_path / "m")
    vocab = json.loads((tmp_path / "m" / "vocab.json").read_text())
    vocab["fingerprint"] = "0" * 64
    (tmp_path / "m" / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(DownstreamError, match="not the one the data were built with"):
        ds.load_tokenizer(tmp_path / "m", layout)


def test_store_dtype_and_ids_inside_data_range(tmp_path):
    build_downstream(
        "retrosynthesis", {"source": str(FIXTURES / "retrosynthesis")}, LAYOUT, tmp_path / "r"
    )
    for split in ("train", "validation", "test"):
        for part in load_corpus(tmp_path / "r", split)["retrosynthesis"]:
            values = np.asarray(part.values)
            assert values.dtype == np.uint16
            assert values.min() >= LAYOUT.data_lo and values.max() < LAYOUT.data_hi


def test_config_key_differs_from_adapter(tmp_path):
    # the workflow's config: downstream.<key> = {adapter: ..., source: ..., loader, max_train_...}
    spec = {
        "adapter": "pcfg_B",
        "source": str(FIXTURES / "pcfg"),
        "loader": "local",
        "max_train_examples": None,
    }
    meta = build_downstream("grammar_task_b", spec, LAYOUT, tmp_path / "b")
    assert meta["task"] == "grammar_task_b" and meta["adapter"] == "pcfg_B"
    assert meta["metrics"] == ["exact_match"]
    assert set(load_corpus(tmp_path / "b", "train")) == {"grammar_task_b"}
    assert load_examples(tmp_path / "b", "test") == PCFG_EXPECTED["test"]
