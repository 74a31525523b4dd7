"""Nonsense summarization (Krishna et al. 2021, "ourtasks-nonsense"), the corpus Wu et al. 2022
pre-trained on as `nonsense_summary`.

Spec §2. A document is 7-13 sentences of 5-15 uniformly drawn pseudo-words ("aaa", "baa",
...), each ending in ".". Three distinct subtasks of the 16 are drawn; each first *modifies*
the document in place (inserting its namespaced keywords, e.g. `__d3__keyword_4__`), and only
then are their *outputs* computed on the final document and concatenated into the summary.

Every subtask is a pair of plain functions `modify_<name>(rng, doc)` and
`output_<name>(rng, doc) -> lines`, registered in SUBTASKS in the original's order.
A document is a list of lines, each a list of words. When a draw hits one of the original's
crash paths (an empty candidate set, a failed assertion) it raises `Resample`, and the
composite generator draws the whole example again (spec §2.7).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from pipeline_lib.data.ragged import Ragged
from pipeline_lib.data.vocab import VocabLayout

Document = list[list[str]]


@dataclasses.dataclass(frozen=True)
class NonsenseParams:
    vocab_size: int = 5000  # RandomVocab pseudo-words
    mean_num_sentences: int = 10
    num_sentences_tolerance: int = 3  # sentences per document: mean + U{-tol..tol}
    mean_sentence_length: int = 10
    sentence_length_tolerance: int = 5  # words per sentence, "." excluded: mean + U{-tol..tol}
    num_subtasks: int = 3  # distinct subtasks per document
    # AMBIGUOUS (spec §2.6): whether Wu lowercased is unknown; Krishna's reader lowercases
    # both sides, so (as the spec recommends) this does too.
    lowercase: bool = True

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"nonsense.vocab_size must be at least 2, got {self.vocab_size}")
        if not 1 <= self.num_subtasks <= len(SUBTASKS):
            raise ValueError(f"nonsense.num_subtasks must be in 1..{len(SUBTASKS)}")
        if min(self.num_sentences_tolerance, self.sentence_length_tolerance) < 0:
            raise ValueError("nonsense tolerances must be non-negative")


class Resample(Exception):
    """The draw hit a path on which the original generator crashes; draw the example again."""


# --- documents ------------------------------------------------------------------------------------
def pseudo_words(vocab_size: int) -> list[str]:
    """RandomVocab: word i is i written little-endian in base 26 with letters a..z, using
    ceil(log(V)/log(26)) letters (computed in floating point, as the original does)."""
    slots = int(np.ceil(np.log(vocab_size) / np.log(26)))
    return ["".join(chr(97 + (i // 26**j) % 26) for j in range(slots)) for i in range(vocab_size)]


def sample_document(
    rng: np.random.Generator, params: NonsenseParams, words: Sequence[str]
) -> Document:
    """get_para(10, 10): 7-13 sentences of 5-15 uniform words, each ending in "."."""
    tol_s, tol_w = params.num_sentences_tolerance, params.sentence_length_tolerance
    num_sentences = max(1, params.mean_num_sentences + int(rng.integers(-tol_s, tol_s + 1)))
    lengths = np.maximum(
        1, params.mean_sentence_length + rng.integers(-tol_w, tol_w + 1, num_sentences)
    ).tolist()
    drawn = rng.integers(0, len(words), sum(lengths)).tolist()
    doc, start = [], 0
    for length in lengths:
        doc.append([words[i] for i in drawn[start : start + length]] + ["."])
        start += length
    return doc


# --- shared machinery (spec §2.3) -----------------------------------------------------------------
def keyword(task_id: str, name: str) -> str:
    """Namespaced keyword: every keyword holds "_", and ids keep subtasks apart."""
    return f"__{task_id}__{name}__"


def _choice(rng: np.random.Generator, options: Sequence):
    if not options:
        raise Resample("empty candidate set")
    return options[int(rng.integers(len(options)))]


def _sample(rng: np.random.Generator, options: Sequence, k: int) -> list:
    """k distinct elements in random order (random.sample / np.random.choice(replace=False))."""
    if k > len(options):
        raise Resample(f"cannot pick {k} of {len(options)}")
    return [options[i] for i in rng.permutation(len(options))[:k].tolist()]


def sample_line_indices(rng: np.random.Generator, doc: Document, q: int) -> list[int]:
    """q distinct lines, processed in ascending order."""
    return sorted(_sample(rng, range(len(doc)), q))


def replaceable_positions(words: Sequence[str]) -> list[int]:
    """Positions that may be overwritten: not the last word (normally ".") and not a word
    holding "_" (an earlier keyword)."""
    return [i for i, w in enumerate(words[:-1]) if "_" not in w]


def lines_with_keywords(doc: Document, keywords: Sequence[str]) -> list[tuple[int, list[str]]]:
    """(line index, keywords found) for every line holding one of `keywords` as a whole word.

    The original lists a line's keywords in (hash-randomised) set order; order of appearance
    is used here. Within one subtask a line never holds two of its keywords except in
    BreakClauses, which re-sorts them by position, so no output depends on this choice.
    """
    wanted = frozenset(keywords)
    found = []
    for i, line in enumerate(doc):
        if not wanted.isdisjoint(line):
            found.append((i, list(dict.fromkeys(w for w in line if w in wanted))))
    return found


def _insert_keywords(
    rng: np.random.Generator, doc: Document, num_lines: int, pool: Sequence[str]
) -> None:
    """num_lines distinct lines each get choice(pool) at a replaceable position."""
    for line in sample_line_indices(rng, doc, num_lines):
        position = _choice(rng, replaceable_positions(doc[line]))
        doc[line][position] = _choice(rng, pool)


def _insert_distinct_keywords(
    rng: np.random.Generator, doc: Document, num_lines: int, pool: Sequence[str]
) -> None:
    """num_lines distinct lines, in ascending order, get num_lines distinct keywords of pool."""
    lines = sample_line_indices(rng, doc, num_lines)
    for line, word in zip(lines, _sample(rng, pool, num_lines)):
        doc[line][_choice(rng, replaceable_positions(doc[line]))] = word


def _the_one_line(doc: Document, keywords: Sequence[str]) -> tuple[int, list[str]]:
    found = lines_with_keywords(doc, keywords)
    if len(found) != 1:
        raise Resample(f"expected exactly one marked line, found {len(found)}")
    return found[0]


def _join(words: Sequence[str]) -> str:
    return " ".join(words)


# --- the 16 subtasks (spec §2.5) ------------------------------------------------------------------
def _numbered(task_id: str, stem: str, count: int) -> tuple[str, ...]:
    return tuple(keyword(task_id, f"{stem}{i}") for i in range(count))


# 1. CopyKeywordOneSentence (d3): copy the marked line.
D3_KEYWORDS = _numbered("d3", "keyword_", 10)


def modify_copy_keyword_one_sentence(rng: np.random.Generator, doc: Document) -> None:
    _insert_keywords(rng, doc, 1, D3_KEYWORDS)


def output_copy_keyword_one_sentence(rng: np.random.Generator, doc: Document) -> list[str]:
    line, _ = _the_one_line(doc, D3_KEYWORDS)
    return [_join(doc[line])]


# 2. CopyKeywordMultipleSentences (d4): copy the 3 marked lines in document order.
D4_KEYWORDS = _numbered("d4", "keyword_", 10)


def modify_copy_keyword_multiple_sentences(rng: np.random.Generator, doc: Document) -> None:
    _insert_keywords(rng, doc, 3, D4_KEYWORDS)


def output_copy_keyword_multiple_sentences(rng: np.random.Generator, doc: Document) -> list[str]:
    return [_join(doc[line]) for line, _ in lines_with_keywords(doc, D4_KEYWORDS)]


# 3. CopyKeywordMultipleSentencesShuffled (d5): the marked lines, shuffled at output time.
D5_KEYWORDS = _numbered("d5", "keyword_", 10)


def modify_copy_keyword_multiple_sentences_shuffled(
    rng: np.random.Generator, doc: Document
) -> None:
    _insert_keywords(rng, doc, 3, D5_KEYWORDS)


def output_copy_keyword_multiple_sentences_shuffled(
    rng: np.random.Generator, doc: Document
) -> list[str]:
    lines = [_join(doc[line]) for line, _ in lines_with_keywords(doc, D5_KEYWORDS)]
    return [lines[i] for i in rng.permutation(len(lines)).tolist()]


# 4. CopyKeywordMultipleSentencesSorted (d6): 3 distinct keywords; lines ordered by keyword.
D6_KEYWORDS = _numbered("d6", "keyword_", 10)


def modify_copy_keyword_multiple_sentences_sorted(rng: np.random.Generator, doc: Document) -> None:
    _insert_distinct_keywords(rng, doc, 3, D6_KEYWORDS)


def output_copy_keyword_multiple_sentences_sorted(
    rng: np.random.Generator, doc: Document
) -> list[str]:
    found = lines_with_keywords(doc, D6_KEYWORDS)
    # string order of `__d6__keyword_i__` is numeric order, as single digits
    ordered = sorted(found, key=lambda hit: hit[1][0])
    return [_join(doc[line]) for line, _ in ordered]


# 5. CopyQuoted (d7): quote a span of one line; output the quoted words.
D7_BEGIN, D7_END = keyword("d7", "begin_quote"), keyword("d7", "end_quote")
D7_KEYWORDS = (D7_BEGIN, D7_END)


def modify_copy_quoted(rng: np.random.Generator, doc: Document) -> None:
    (line,) = sample_line_indices(rng, doc, 1)
    words = doc[line]
    # the quote may start at word 0 only if word 0 is replaceable (e.g. not a bullet), and
    # it may take in the final "." (then END lands after it)
    first = 0 if 0 in replaceable_positions(words) else 1
    if first >= len(words):
        raise Resample("no room to open a quote")
    begin = int(rng.integers(first, len(words)))
    end = int(rng.integers(begin + 1, len(words) + 1))
    doc[line] = words[:begin] + [D7_BEGIN] + words[begin:end] + [D7_END] + words[end:]


def output_copy_quoted(rng: np.random.Generator, doc: Document) -> list[str]:
    line, _ = _the_one_line(doc, D7_KEYWORDS)
    words = doc[line]
    quoted = _join(words[words.index(D7_BEGIN) + 1 : words.index(D7_END)])
    if not quoted:
        raise Resample("empty quote")
    # the original checks the last *character*
    return [quoted if quoted[-1] == "." else quoted + " ."]


# 6. CopyBulleted (d8): prefix one line with the bullet; output it without.
D8_BULLET = keyword("d8", "bullet")
D8_KEYWORDS = (D8_BULLET,)


def modify_copy_bulleted(rng: np.random.Generator, doc: Document) -> None:
    (line,) = sample_line_indices(rng, doc, 1)
    doc[line] = [D8_BULLET] + doc[line]


def output_copy_bulleted(rng: np.random.Generator, doc: Document) -> list[str]:
    line, _ = _the_one_line(doc, D8_KEYWORDS)
    if doc[line][0] != D8_BULLET:
        raise Resample("bullet is not the first word")
    return [_join(doc[line][1:])]


# 7. ClassifyKeyword (d10): keywords 0-4 are positive, 5-9 negative.
D10_KEYWORDS = _numbered("d10", "keyword_", 10)
D10_PHRASES = ("the keyword was positive .", "the keyword was negative .")


def modify_classify_keyword(rng: np.random.Generator, doc: Document) -> None:
    _insert_keywords(rng, doc, 1, D10_KEYWORDS)


def output_classify_keyword(rng: np.random.Generator, doc: Document) -> list[str]:
    _, found = _the_one_line(doc, D10_KEYWORDS)
    return [D10_PHRASES[0] if D10_KEYWORDS.index(found[0]) < 5 else D10_PHRASES[1]]


# 8. ReplaceClassKeyword (d11): replace the keyword by its class name.
def _class_keywords(task_id: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(keyword(task_id, f"class_{c}_kw_{j}") for j in range(3)) for c in range(3))


D11_CLASS_KEYWORDS = _class_keywords("d11")
D11_KEYWORDS = sum(D11_CLASS_KEYWORDS, ())
D11_CLASS_NAMES = tuple(keyword("d11", f"class_{c}") for c in range(3))


def modify_replace_class_keyword(rng: np.random.Generator, doc: Document) -> None:
    _insert_keywords(rng, doc, 1, D11_KEYWORDS)


def output_replace_class_keyword(rng: np.random.Generator, doc: Document) -> list[str]:
    line, found = _the_one_line(doc, D11_KEYWORDS)
    word = found[0]
    cls = next(c for c, members in enumerate(D11_CLASS_KEYWORDS) if word in members)
    return [_join(doc[line]).replace(word, D11_CLASS_NAMES[cls])]


# 9. MajorityKeyword (d12): 3 or 5 lines get keyword 1 or 2; which occurs more often?
D12_KEYWORDS = (keyword("d12", "keyword_1"), keyword("d12", "keyword_2"))
D12_TEMPLATE = "The keyword {} occurred more number of times ."


def modify_majority_keyword(rng: np.random.Generator, doc: Document) -> None:
    _insert_keywords(rng, doc, 2 * int(rng.integers(1, 3)) + 1, D12_KEYWORDS)


def output_majority_keyword(rng: np.random.Generator, doc: Document) -> list[str]:
    counts = Counter(w for _, found in lines_with_keywords(doc, D12_KEYWORDS) for w in found)
    if not counts:
        raise Resample("no majority keyword")
    winner, _ = counts.most_common(1)[0]
    return [D12_TEMPLATE.format(D12_KEYWORDS.index(winner) + 1)]


# 10. TopicSegregation (d13): 2-5 lines get class keywords; lines grouped by class.
D13_CLASS_KEYWORDS = _class_keywords("d13")
D13_KEYWORDS = sum(D13_CLASS_KEYWORDS, ())
D13_CLASS_NAMES = tuple(keyword("d13", f"class_{c}") for c in range(3))


def modify_topic_segregation(rng: np.random.Generator, doc: Document) -> None:
    _insert_keywords(rng, doc, int(rng.integers(2, 6)), D13_KEYWORDS)


def output_topic_segregation(rng: np.random.Generator, doc: Document) -> list[str]:
    found = lines_with_keywords(doc, D13_KEYWORDS)
    out = []
    for name, members in zip(D13_CLASS_NAMES, D13_CLASS_KEYWORDS):
        out.append(f"section {name}")
        out += [_join(doc[line]) for line, words in found if words[0] in members]
    return out


# 11. ThresholdNumber (d14): a number 0-99; is it >= 50?
D14_KEYWORDS = tuple(keyword("d14", str(i)) for i in range(100))
D14_PHRASES = (
    "the number was above or equal to threshold .",
    "the number was below threshold .",
)


def modify_threshold_number(rng: np.random.Generator, doc: Document) -> None:
    _insert_keywords(rng, doc, 1, D14_KEYWORDS)


def output_threshold_number(rng: np.random.Generator, doc: Document) -> list[str]:
    _, found = _the_one_line(doc, D14_KEYWORDS)
    return [D14_PHRASES[0] if D14_KEYWORDS.index(found[0]) >= 50 else D14_PHRASES[1]]


# 12. LargestNumber (d16): 1-4 lines get distinct numbers; report the largest.
D16_KEYWORDS = tuple(keyword("d16", str(i)) for i in range(100))
D16_TEMPLATE = "The largest number is {} ."


def modify_largest_number(rng: np.random.Generator, doc: Document) -> None:
    _insert_distinct_keywords(rng, doc, int(rng.integers(1, 5)), D16_KEYWORDS)


def output_largest_number(rng: np.random.Generator, doc: Document) -> list[str]:
    found = lines_with_keywords(doc, D16_KEYWORDS)
    if not found or any(len(words) != 1 for _, words in found):
        raise Resample("expected one number per marked line")
    return [D16_TEMPLATE.format(max(D16_KEYWORDS.index(words[0]) for _, words in found))]


# 13. ParaphraseWords (d18): a source word is replaced by one of its 3 paraphrases.
D18_SOURCES = tuple(keyword("d18", f"src_{i}") for i in range(20))
D18_PARAPHRASES = {
    src: tuple(keyword("d18", f"target_{i}_{j}") for j in range(3))
    for i, src in enumerate(D18_SOURCES)
}
# all of them are keywords of the subtask (detected), as in the original
D18_KEYWORDS = tuple(w for src in D18_SOURCES for w in (src, *D18_PARAPHRASES[src]))


def modify_paraphrase_words(rng: np.random.Generator, doc: Document) -> None:
    _insert_keywords(rng, doc, 1, D18_SOURCES)


def output_paraphrase_words(rng: np.random.Generator, doc: Document) -> list[str]:
    out = []
    for line, found in lines_with_keywords(doc, D18_KEYWORDS):
        if len(found) != 1 or found[0] not in D18_PARAPHRASES:
            raise Resample("expected one source word per marked line")
        words = list(doc[line])
        words[words.index(found[0])] = _choice(rng, D18_PARAPHRASES[found[0]])
        out.append(_join(words))
    return out


# 14. JoinClauses (d19): 3 lines get distinct joiners; join the clauses that follow them.
D19_KEYWORDS = _numbered("d19", "join_", 5)
D19_PREFIX = "The combined sentence is "


def modify_join_clauses(rng: np.random.Generator, doc: Document) -> None:
    lines = sample_line_indices(rng, doc, 3)
    for line, joiner in zip(lines, _sample(rng, D19_KEYWORDS, 3)):
        words = doc[line]
        # at least two words must follow the joiner
        allowed = [i for i in replaceable_positions(words) if i < len(words) - 2]
        words[_choice(rng, allowed)] = joiner


def output_join_clauses(rng: np.random.Generator, doc: Document) -> list[str]:
    sentence = D19_PREFIX
    for line, found in lines_with_keywords(doc, D19_KEYWORDS):
        if len(found) != 1:
            raise Resample("expected one joiner per marked line")
        words = doc[line]
        # the words after the joiner minus the line's last word (normally ".")
        following = words[words.index(found[0]) + 1 :][:-1]
        sentence += found[0] + " " + _join(following) + " "
    return [sentence + "."]


# 15. BreakClauses (d20): one line gets 2 distinct joiners; split it at them.
D20_KEYWORDS = _numbered("d20", "join_", 5)


def modify_break_clauses(rng: np.random.Generator, doc: Document) -> None:
    (line,) = sample_line_indices(rng, doc, 1)
    joiners = _sample(rng, D20_KEYWORDS, 2)
    words = doc[line]
    allowed = [i for i in replaceable_positions(words) if i < len(words) - 1]
    for position, joiner in zip(_sample(rng, allowed, 2), joiners):
        words[position] = joiner


def output_break_clauses(rng: np.random.Generator, doc: Document) -> list[str]:
    line, found = _the_one_line(doc, D20_KEYWORDS)
    if len(found) != 2:
        raise Resample("expected two joiners")
    words = doc[line]
    first, second = sorted(words.index(w) for w in found)
    prefix = words[:first]
    return [
        _join(prefix + words[first:second] + ["."]),
        _join(prefix + words[second : len(words) - 1] + ["."]),
    ]


# 16. TruncateSentence (d21): cut the marked line just before its keyword.
D21_KEYWORDS = _numbered("d21", "keyword_", 10)


def modify_truncate_sentence(rng: np.random.Generator, doc: Document) -> None:
    _insert_keywords(rng, doc, 1, D21_KEYWORDS)


def output_truncate_sentence(rng: np.random.Generator, doc: Document) -> list[str]:
    line, found = _the_one_line(doc, D21_KEYWORDS)
    words = doc[line]
    return [_join(words[: words.index(found[0])] + ["."])]


# --- registry -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Subtask:
    name: str  # the original class name
    task_id: str  # its keyword namespace
    keywords: tuple[str, ...]  # detected at output time
    modify: Callable[[np.random.Generator, Document], None]
    output: Callable[[np.random.Generator, Document], list[str]]
    phrases: tuple[str, ...] = ()  # output text not copied from the document


NUMBERS = tuple(str(i) for i in range(100))

#: In the original's list order (the classes it comments out are excluded).
SUBTASKS: tuple[Subtask, ...] = (
    Subtask(
        "CopyKeywordOneSentence",
        "d3",
        D3_KEYWORDS,
        modify_copy_keyword_one_sentence,
        output_copy_keyword_one_sentence,
    ),
    Subtask(
        "CopyKeywordMultipleSentences",
        "d4",
        D4_KEYWORDS,
        modify_copy_keyword_multiple_sentences,
        output_copy_keyword_multiple_sentences,
    ),
    Subtask(
        "CopyKeywordMultipleSentencesShuffled",
        "d5",
        D5_KEYWORDS,
        modify_copy_keyword_multiple_sentences_shuffled,
        output_copy_keyword_multiple_sentences_shuffled,
    ),
    Subtask(
        "CopyKeywordMultipleSentencesSorted",
        "d6",
        D6_KEYWORDS,
        modify_copy_keyword_multiple_sentences_sorted,
        output_copy_keyword_multiple_sentences_sorted,
    ),
    Subtask("CopyQuoted", "d7", D7_KEYWORDS, modify_copy_quoted, output_copy_quoted, (".",)),
    Subtask("CopyBulleted", "d8", D8_KEYWORDS, modify_copy_bulleted, output_copy_bulleted),
    Subtask(
        "ClassifyKeyword",
        "d10",
        D10_KEYWORDS,
        modify_classify_keyword,
        output_classify_keyword,
        D10_PHRASES,
    ),
    Subtask(
        "ReplaceClassKeyword",
        "d11",
        D11_KEYWORDS,
        modify_replace_class_keyword,
        output_replace_class_keyword,
        D11_CLASS_NAMES,
    ),
    Subtask(
        "MajorityKeyword",
        "d12",
        D12_KEYWORDS,
        modify_majority_keyword,
        output_majority_keyword,
        (D12_TEMPLATE.format(1), D12_TEMPLATE.format(2)),
    ),
    Subtask(
        "TopicSegregation",
        "d13",
        D13_KEYWORDS,
        modify_topic_segregation,
        output_topic_segregation,
        tuple(f"section {name}" for name in D13_CLASS_NAMES),
    ),
    Subtask(
        "ThresholdNumber",
        "d14",
        D14_KEYWORDS,
        modify_threshold_number,
        output_threshold_number,
        D14_PHRASES,
    ),
    Subtask(
        "LargestNumber",
        "d16",
        D16_KEYWORDS,
        modify_largest_number,
        output_largest_number,
        tuple(D16_TEMPLATE.format(i) for i in range(100)),
    ),
    Subtask(
        "ParaphraseWords",
        "d18",
        D18_KEYWORDS,
        modify_paraphrase_words,
        output_paraphrase_words,
    ),
    Subtask(
        "JoinClauses",
        "d19",
        D19_KEYWORDS,
        modify_join_clauses,
        output_join_clauses,
        (D19_PREFIX + ".",),
    ),
    Subtask(
        "BreakClauses",
        "d20",
        D20_KEYWORDS,
        modify_break_clauses,
        output_break_clauses,
        (".",),
    ),
    Subtask(
        "TruncateSentence",
        "d21",
        D21_KEYWORDS,
        modify_truncate_sentence,
        output_truncate_sentence,
        (".",),
    ),
)
SUBTASKS_BY_NAME = {s.name: s for s in SUBTASKS}


# --- vocabulary -----------------------------------------------------------------------------------
def nonsense_words(params: NonsenseParams = NonsenseParams()) -> list[str]:
    """Every whitespace-separated word the generator can emit, in a fixed order: pseudo-words,
    ".", each subtask's keywords and output-phrase words (in registry order), the numbers.
    """
    words = pseudo_words(params.vocab_size) + ["."]
    for subtask in SUBTASKS:
        words += subtask.keywords
        for phrase in subtask.phrases:
            words += phrase.split()
    words += NUMBERS
    if params.lowercase:
        words = [w.lower() for w in words]
    return list(dict.fromkeys(words))


# --- composite examples (spec §2.4) ---------------------------------------------------------------
def choose_subtasks(rng: np.random.Generator, k: int) -> list[Subtask]:
    """k distinct subtasks, uniformly, in the order drawn (the order they run in)."""
    return _sample(rng, SUBTASKS, k)


def composite_example(
    rng: np.random.Generator, params: NonsenseParams, words: Sequence[str]
) -> tuple[str, str]:
    """One (document, summary) pair; raises Resample on a crash path."""
    doc = sample_document(rng, params, words)
    chosen = choose_subtasks(rng, params.num_subtasks)
    for subtask in chosen:
        subtask.modify(rng, doc)
    summary: list[str] = []
    for subtask in chosen:  # outputs see the final document, in the same order
        summary += subtask.output(rng, doc)
    text, target = " ".join(_join(line) for line in doc), " ".join(summary)
    if params.lowercase:
        text, target = text.lower(), target.lower()
    return text, target


def generate_nonsense_text(
    rng: np.random.Generator, n: int, params: NonsenseParams = NonsenseParams()
) -> list[tuple[str, str]]:
    """n (input_text, target_text) pairs; an example on a crash path is drawn again."""
    words = pseudo_words(params.vocab_size)
    out = []
    while len(out) < n:
        try:
            out.append(composite_example(rng, params, words))
        except Resample:
            continue
    return out


def generate_nonsense(
    rng: np.random.Generator,
    n: int,
    layout: VocabLayout,
    params: NonsenseParams = NonsenseParams(),
) -> tuple[Ragged, Ragged]:
    """n examples tokenised with layout.encode_text: (inputs, targets), no EOS."""
    pairs = generate_nonsense_text(rng, n, params)
    inputs = Ragged.from_rows([layout.encode_text(text) for text, _ in pairs])
    targets = Ragged.from_rows([layout.encode_text(target) for _, target in pairs])
    return inputs, targets
