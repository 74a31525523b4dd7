"""Nonsense summarization: the 16 subtasks on hand-made documents, the composite procedure,
vocabulary closure and determinism (spec §2)."""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest

from pipeline_lib.data import nonsense as ns
from pipeline_lib.data.vocab import laptop_layout

PARAMS = ns.NonsenseParams()
WORDS = ns.pseudo_words(PARAMS.vocab_size)
WORD_SET = set(WORDS)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def doc_of(*lines: str) -> ns.Document:
    return [line.split() for line in lines]


def plain_doc(num_lines: int = 8, length: int = 6) -> ns.Document:
    return [[f"w{i}x{j}" for j in range(length)] + ["."] for i in range(num_lines)]


def kw(task_id: str, name: str) -> str:
    return ns.keyword(task_id, name)


def changed_lines(before: ns.Document, after: ns.Document) -> list[int]:
    return [i for i, (a, b) in enumerate(zip(before, after)) if a != b]


# --- documents and vocabulary ---------------------------------------------------------------------
def test_pseudo_words_are_little_endian_base26():
    assert WORDS[:3] == ["aaa", "baa", "caa"]
    assert WORDS[25:28] == ["zaa", "aba", "bba"]
    assert WORDS[4999] == "hkh"  # 4999 = 7*676 + 10*26 + 7
    assert len(set(WORDS)) == 5000
    assert ns.pseudo_words(26) == [chr(97 + i) for i in range(26)]


def test_document_shape():
    for seed in range(200):
        doc = ns.sample_document(rng(seed), PARAMS, WORDS)
        assert 7 <= len(doc) <= 13
        for line in doc:
            assert 5 <= len(line) - 1 <= 15 and line[-1] == "."
            assert set(line[:-1]) <= WORD_SET


def test_vocabulary_is_closed_over_generated_text():
    for params in (PARAMS, ns.NonsenseParams(lowercase=False)):
        vocab = ns.nonsense_words(params)
        assert len(vocab) == len(set(vocab))
        assert vocab == ns.nonsense_words(params), "fixed, deterministic order"
        known = set(vocab)
        for text, target in ns.generate_nonsense_text(rng(1), 400, params):
            assert set(text.split()) <= known
            assert set(target.split()) <= known
    lower = set(ns.nonsense_words(PARAMS))
    assert "the" in lower and "The" not in lower and "63" in lower
    assert all(k in lower for s in ns.SUBTASKS for k in s.keywords)


def test_tokenised_with_laptop_layout():
    layout = laptop_layout(1024, ns.nonsense_words(PARAMS))
    inputs, targets = ns.generate_nonsense(rng(2), 50, layout)
    texts = ns.generate_nonsense_text(rng(2), 50, PARAMS)
    assert inputs.n == targets.n == 50
    for i, (text, target) in enumerate(texts):
        assert inputs.row(i).tolist() == layout.encode_text(text)
        assert layout.decode(targets.row(i)) == " ".join(target.split())


def test_determinism():
    a = ns.generate_nonsense_text(rng(3), 30, PARAMS)
    assert a == ns.generate_nonsense_text(rng(3), 30, PARAMS)
    assert a != ns.generate_nonsense_text(rng(4), 30, PARAMS)


def test_lowercasing():
    texts = ns.generate_nonsense_text(rng(5), 300, PARAMS)
    assert all(t == t.lower() and s == s.lower() for t, s in texts)
    cased = ns.generate_nonsense_text(rng(5), 300, ns.NonsenseParams(lowercase=False))
    assert [(t.lower(), s.lower()) for t, s in cased] == texts
    assert any("The largest number is" in s or "The keyword" in s for _, s in cased)


# --- shared machinery -----------------------------------------------------------------------------
def test_replaceable_positions_protect_last_word_and_keywords():
    words = ["a", kw("d3", "keyword_1"), "b", "c", "."]
    assert ns.replaceable_positions(words) == [0, 2, 3]


def test_lines_with_keywords_matches_whole_words_only():
    k = kw("d3", "keyword_1")
    doc = doc_of("a b .", f"x{k} {k}y .", f"c {k} d .")
    assert ns.lines_with_keywords(doc, ns.D3_KEYWORDS) == [(2, [k])]


@pytest.mark.parametrize("subtask", ns.SUBTASKS, ids=lambda s: s.name)
def test_modify_never_overwrites_keywords_or_the_final_period(subtask):
    for seed in range(40):
        r = rng(seed)
        doc = plain_doc()
        doc[0][2] = kw("d99", "earlier")  # an earlier subtask's keyword must survive
        before = copy.deepcopy(doc)
        subtask.modify(r, doc)
        assert kw("d99", "earlier") in doc[0]
        for old, new in zip(before, doc):
            if subtask.name != "CopyQuoted":
                assert new[-1] == "."
            # plain words are only ever overwritten by this subtask's keywords (or marks)
            added = Counter(new) - Counter(old)
            assert set(added) <= set(subtask.keywords)
        subtask.output(r, doc)  # and its output accepts what it made


# --- the 16 subtasks ------------------------------------------------------------------------------
def test_copy_keyword_one_sentence():
    k = kw("d3", "keyword_4")
    doc = doc_of("a b c .", f"d {k} e .", "f g .")
    assert ns.output_copy_keyword_one_sentence(rng(), doc) == [f"d {k} e ."]
    with pytest.raises(ns.Resample):
        ns.output_copy_keyword_one_sentence(rng(), doc + doc_of(f"{k} h ."))
    doc = plain_doc()
    ns.modify_copy_keyword_one_sentence(rng(1), doc)
    assert len(changed_lines(plain_doc(), doc)) == 1


def test_copy_keyword_multiple_sentences_in_document_order():
    k1, k2 = kw("d4", "keyword_9"), kw("d4", "keyword_0")
    doc = doc_of(f"a {k1} b .", "c d .", f"{k2} e f .", f"g {k1} .")
    assert ns.output_copy_keyword_multiple_sentences(rng(), doc) == [
        f"a {k1} b .",
        f"{k2} e f .",
        f"g {k1} .",
    ]
    doc = plain_doc()
    ns.modify_copy_keyword_multiple_sentences(rng(2), doc)
    assert len(changed_lines(plain_doc(), doc)) == 3


def test_copy_keyword_multiple_sentences_shuffled():
    ks = [kw("d5", f"keyword_{i}") for i in (1, 2, 3)]
    doc = doc_of(f"a {ks[0]} .", f"b {ks[1]} .", "c d .", f"e {ks[2]} .")
    lines = [f"a {ks[0]} .", f"b {ks[1]} .", f"e {ks[2]} ."]
    orders = {
        tuple(ns.output_copy_keyword_multiple_sentences_shuffled(rng(s), doc)) for s in range(60)
    }
    assert all(sorted(o) == sorted(lines) for o in orders)
    assert len(orders) == 6


def test_copy_keyword_multiple_sentences_sorted_by_keyword():
    k7, k2, k5 = (kw("d6", f"keyword_{i}") for i in (7, 2, 5))
    doc = doc_of(f"a {k7} .", f"b {k2} .", "c .", f"d {k5} .")
    assert ns.output_copy_keyword_multiple_sentences_sorted(rng(), doc) == [
        f"b {k2} .",
        f"d {k5} .",
        f"a {k7} .",
    ]
    for seed in range(30):
        doc = plain_doc()
        ns.modify_copy_keyword_multiple_sentences_sorted(rng(seed), doc)
        found = [w for _, ws in ns.lines_with_keywords(doc, ns.D6_KEYWORDS) for w in ws]
        assert len(found) == len(set(found)) == 3


def test_copy_quoted():
    b, e = ns.D7_BEGIN, ns.D7_END
    assert ns.output_copy_quoted(rng(), doc_of("x .", f"a {b} c d {e} f .")) == ["c d ."]
    # a quote that takes in the final "." ends with it, so no extra " ."
    assert ns.output_copy_quoted(rng(), doc_of(f"a {b} c . {e}")) == ["c ."]
    bullet = ns.D8_BULLET
    for seed in range(100):
        doc = [[bullet] + line for line in plain_doc(3, 5)]
        ns.modify_copy_quoted(rng(seed), doc)
        (line,) = [ws for ws in doc if b in ws]
        assert line[0] == bullet, "no quote before a non-replaceable first word"
        assert line.index(b) < line.index(e) - 1 and len(line) == 9


def test_copy_bulleted():
    doc = plain_doc(4)
    ns.modify_copy_bulleted(rng(3), doc)
    (i,) = changed_lines(plain_doc(4), doc)
    assert doc[i] == [ns.D8_BULLET] + plain_doc(4)[i]
    assert ns.output_copy_bulleted(rng(), doc) == [" ".join(plain_doc(4)[i])]
    with pytest.raises(ns.Resample):
        ns.output_copy_bulleted(rng(), doc_of(f"a {ns.D8_BULLET} ."))


def test_classify_keyword():
    for i in range(10):
        doc = doc_of("a b .", f"c {kw('d10', f'keyword_{i}')} .")
        expected = "the keyword was positive ." if i < 5 else "the keyword was negative ."
        assert ns.output_classify_keyword(rng(), doc) == [expected]


def test_replace_class_keyword():
    doc = doc_of(f"a {kw('d11', 'class_1_kw_2')} b .")
    assert ns.output_replace_class_keyword(rng(), doc) == [f"a {kw('d11', 'class_1')} b ."]
    doc = doc_of(f"{kw('d11', 'class_2_kw_0')} b .")
    assert ns.output_replace_class_keyword(rng(), doc) == [f"{kw('d11', 'class_2')} b ."]


def test_majority_keyword():
    k1, k2 = ns.D12_KEYWORDS
    doc = doc_of(f"a {k2} .", f"b {k1} .", f"c {k2} .")
    assert ns.output_majority_keyword(rng(), doc) == [
        "The keyword 2 occurred more number of times ."
    ]
    doc = doc_of(f"a {k1} .", f"b {k1} .", f"c {k2} .", f"d {k1} .", f"e {k2} .")
    assert ns.output_majority_keyword(rng(), doc) == [
        "The keyword 1 occurred more number of times ."
    ]
    counts = set()
    for seed in range(40):
        doc = plain_doc(10)
        ns.modify_majority_keyword(rng(seed), doc)
        counts.add(len(ns.lines_with_keywords(doc, ns.D12_KEYWORDS)))
    assert counts == {3, 5}


def test_topic_segregation_lists_all_three_sections():
    c = ns.D13_CLASS_KEYWORDS
    doc = doc_of(f"a {c[2][0]} .", "b .", f"d {c[0][1]} .", f"e {c[2][2]} .")
    names = ns.D13_CLASS_NAMES
    assert ns.output_topic_segregation(rng(), doc) == [
        f"section {names[0]}",
        f"d {c[0][1]} .",
        f"section {names[1]}",
        f"section {names[2]}",
        f"a {c[2][0]} .",
        f"e {c[2][2]} .",
    ]
    sizes = set()
    for seed in range(60):
        doc = plain_doc(10)
        ns.modify_topic_segregation(rng(seed), doc)
        sizes.add(len(changed_lines(plain_doc(10), doc)))
    assert sizes == {2, 3, 4, 5}


def test_threshold_number():
    above = doc_of(f"a {kw('d14', '50')} .")
    below = doc_of(f"a {kw('d14', '49')} .")
    assert ns.output_threshold_number(rng(), above) == [
        "the number was above or equal to threshold ."
    ]
    assert ns.output_threshold_number(rng(), below) == ["the number was below threshold ."]


def test_largest_number():
    doc = doc_of(
        f"a {kw('d16', '7')} .",
        f"{kw('d16', '63')} b .",
        "c .",
        f"d {kw('d16', '12')} .",
    )
    assert ns.output_largest_number(rng(), doc) == ["The largest number is 63 ."]
    for seed in range(30):
        doc = plain_doc(10)
        ns.modify_largest_number(rng(seed), doc)
        found = [w for _, ws in ns.lines_with_keywords(doc, ns.D16_KEYWORDS) for w in ws]
        assert 1 <= len(found) <= 4 and len(set(found)) == len(found)


def test_paraphrase_words():
    src = kw("d18", "src_4")
    doc = doc_of("a .", f"b {src} c .")
    outputs = {tuple(ns.output_paraphrase_words(rng(s), doc)) for s in range(40)}
    assert outputs == {(f"b {kw('d18', f'target_4_{j}')} c .",) for j in range(3)}
    assert doc == doc_of("a .", f"b {src} c ."), "the output step must not modify the document"


def test_join_clauses():
    j3, j0, j1 = (kw("d19", f"join_{i}") for i in (3, 0, 1))
    doc = doc_of(f"a {j3} b c .", "d e .", f"{j0} f .", f"g h {j1} i j k .")
    assert ns.output_join_clauses(rng(), doc) == [
        f"The combined sentence is {j3} b c {j0} f {j1} i j k ."
    ]
    for seed in range(40):
        doc = plain_doc(6, 5)
        ns.modify_join_clauses(rng(seed), doc)
        for _, line in ns.lines_with_keywords(doc, ns.D19_KEYWORDS):
            assert len(line) == 1
        for line in doc:
            assert all(not w.startswith("__d19") for w in line[-2:]), "two words follow a joiner"


def test_break_clauses():
    j2, j4 = kw("d20", "join_2"), kw("d20", "join_4")
    doc = doc_of("x .", f"a b {j4} c d {j2} e f .")
    assert ns.output_break_clauses(rng(), doc) == [f"a b {j4} c d .", f"a b {j2} e f ."]
    for seed in range(30):
        doc = plain_doc(5, 5)
        ns.modify_break_clauses(rng(seed), doc)
        ((_, found),) = ns.lines_with_keywords(doc, ns.D20_KEYWORDS)
        assert len(found) == 2


def test_truncate_sentence():
    k = kw("d21", "keyword_3")
    assert ns.output_truncate_sentence(rng(), doc_of(f"a b {k} c .")) == ["a b ."]
    assert ns.output_truncate_sentence(rng(), doc_of(f"{k} c .")) == ["."]


# --- composite procedure --------------------------------------------------------------------------
def test_composite_runs_all_modifications_then_all_outputs():
    for seed in range(50):
        text, target = ns.composite_example(rng(seed), PARAMS, WORDS)
        r = rng(seed)
        doc = ns.sample_document(r, PARAMS, WORDS)
        chosen = ns.choose_subtasks(r, 3)
        assert len({s.name for s in chosen}) == 3
        for s in chosen:
            s.modify(r, doc)
        summary = [line for s in chosen for line in s.output(r, doc)]
        assert text == " ".join(" ".join(line) for line in doc).lower()
        assert target == " ".join(summary).lower()


def test_composite_subtask_frequencies():
    counts: Counter[str] = Counter()
    r = rng(6)
    for _ in range(3200):
        counts.update(s.name for s in ns.choose_subtasks(r, 3))
    assert set(counts) == {s.name for s in ns.SUBTASKS} and len(ns.SUBTASKS) == 16
    expected = 3200 * 3 / 16
    assert all(abs(c - expected) < 5 * expected**0.5 for c in counts.values())


def test_crash_paths_are_resampled():
    # One-word sentences ("w .") leave JoinClauses no valid position in 3 lines and
    # BreakClauses none in a line, unless CopyQuoted lengthened that line first: such draws
    # must be redrawn, never emitted (nor crash).
    params = ns.NonsenseParams(mean_sentence_length=1, sentence_length_tolerance=0)
    texts = ns.generate_nonsense_text(rng(7), 200, params)
    assert len(texts) == 200
    assert not any("__d19__" in t for t, _ in texts)
    for text, _ in texts:
        for line in text.split(" . "):
            if "__d20__" in line:
                assert ns.D7_BEGIN in line
    with pytest.raises(ns.Resample):
        ns.modify_join_clauses(rng(), doc_of("a .", "b .", "c ."))
    with pytest.raises(ns.Resample):
        ns.modify_break_clauses(rng(), doc_of("a .", "b .", "c ."))
