"""Grammar reading, writing and validation (every error names its file and line)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import nltk
import numpy as np
import pytest

from pipeline_lib.pcfg.errors import GrammarError
from pipeline_lib.pcfg.grammar import PROBABILITY_SUM_TOLERANCE
from pipeline_lib.pcfg.grammar_io import (
    format_nltk_grammar,
    parse_nltk_grammar,
    parse_rule_file,
    read_grammar,
    write_nltk_grammar,
)
from test_pcfg_support import AMBIGUOUS_GRAMMAR_TEXT, ambiguous_grammar

RELEASED = Path("/work/shared/data/pcfg/rule_deep_mlm.txt")
needs_released = pytest.mark.skipif(not RELEASED.exists(), reason="released grammar not available")


@needs_released
def test_released_grammar_counts_and_merged_duplicates() -> None:
    grammar = read_grammar(RELEASED, allow_unreachable=True)
    assert (grammar.n_nonterminals, grammar.n_terminals) == (50, 200)
    assert (len(grammar.unary_rules), len(grammar.binary_rules), len(grammar.lexical_rules)) == (9, 556, 842)
    assert grammar.start_symbol == "S"
    # Label ids of tasks B/C are indices in the sorted nonterminal list.
    assert grammar.nonterminals[0] == "A1_0" and grammar.nonterminals[40] == "S" and grammar.nonterminals[49] == "S9"
    # Independent merge of the raw lines: 1,649 lines, 242 duplicates.
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    lines = RELEASED.read_text().splitlines()
    for line in lines:
        fields = line.split()
        totals[tuple(fields[:-1])] += float(fields[-1])
        counts[tuple(fields[:-1])] += 1
    assert len(lines) == 1649 and len(totals) == 1407 and len(lines) - len(totals) == 242
    duplicated_lexical = next(k for k, c in counts.items() if c > 1 and len(k) == 2 and not k[0].startswith("S"))
    lhs, word = duplicated_lexical
    row = np.flatnonzero(
        (grammar.lexical_rules[:, 0] == grammar.nonterminal_index[lhs])
        & (grammar.lexical_rules[:, 1] == grammar.terminal_index[word])
    )
    assert len(row) == 1
    assert math.exp(grammar.lexical_log_probs[row[0]]) == pytest.approx(totals[duplicated_lexical], rel=1e-12)
    assert grammar.lhs_probability_sums()[grammar.nonterminal_index["A4_1"]] == pytest.approx(0.99977, abs=1e-5)


@needs_released
def test_released_grammar_unreachable_nonterminal_is_reported_by_default() -> None:
    with pytest.raises(GrammarError) as error:
        read_grammar(RELEASED)
    assert error.value.line == 207 and "A1_9" in str(error.value) and str(RELEASED) in str(error.value)


def test_rule_file_three_field_lines_follow_the_original_s_prefix_rule() -> None:
    text = "S S1 0.5\nS S2 0.5\nS1 X X 1.0\nS2 X X 1.0\nX a 0.25\nX a 0.25\nX b 0.5\n"
    grammar = parse_rule_file(text, source="mini")
    assert len(grammar.unary_rules) == 2 and len(grammar.lexical_rules) == 2
    index = grammar.terminal_index
    probabilities = dict(zip(grammar.lexical_rules[:, 1].tolist(), np.exp(grammar.lexical_log_probs)))
    assert probabilities[index["a"]] == pytest.approx(0.5)


def test_nltk_format_round_trip_and_nltk_accepts_our_output(tmp_path: Path) -> None:
    grammar = ambiguous_grammar()
    path = tmp_path / "g.pcfg"
    write_nltk_grammar(grammar, path)
    again = read_grammar(path)
    assert again.nonterminals == grammar.nonterminals and again.terminals == grammar.terminals
    assert again.start_symbol == "S"
    for name in ("binary", "unary", "lexical"):
        assert np.array_equal(getattr(again, f"{name}_rules"), getattr(grammar, f"{name}_rules"))
        np.testing.assert_allclose(getattr(again, f"{name}_log_probs"), getattr(grammar, f"{name}_log_probs"), rtol=1e-14)
    theirs = nltk.PCFG.fromstring(format_nltk_grammar(grammar))
    reference = nltk.PCFG.fromstring(AMBIGUOUS_GRAMMAR_TEXT)
    assert {(str(p.lhs()), tuple(map(str, p.rhs())), round(p.prob(), 12)) for p in theirs.productions()} == {
        (str(p.lhs()), tuple(map(str, p.rhs())), round(p.prob(), 12)) for p in reference.productions()
    }
    assert list(tmp_path.iterdir()) == [path]  # the atomic write left no temporary file


def test_nltk_reader_handles_comments_continuations_and_start_directive() -> None:
    text = "# comment\n%start T\nX -> 'x' [1.0]\nT -> X \\\n  X [1.0]\n"
    grammar = parse_nltk_grammar(text)
    assert grammar.start_symbol == "T" and len(grammar.binary_rules) == 1


RULE_FILE_ERRORS = [
    ("S T 1.0\nT a b c 1.0 x\n", 2, "3 or 4"),
    ("S T 1.0\nT a oops\n", 2, "not a number"),
    ("S T 1.0\nT a 1.5\n", 2, "outside (0, 1]"),
    ("S T 1.0\nT a 0.0\nT b 1.0\n", 2, "outside (0, 1]"),
    ("S T 1.0\nT a 0.5\nT b 0.3\n", 2, "sum to 0.8"),
    ("S T 1.0\nT X Y 1.0\nX a 1.0\n", 2, "'Y' is used but has no rules"),
    # A 3-field line whose LHS starts with "S" is a unary rule, so 'a' is a nonterminal here.
    ("S T 1.0\nT S1 S1 1.0\nS1 a 1.0\n", 3, "'a' is used but has no rules"),
    ("S T 0.5\nS U 0.5\nT a 1.0\nU U T 1.0\n", 4, "'U' is unproductive"),
    ("S T 1.0\nT a 1.0\nX b 1.0\n", 3, "'X' is unreachable"),
    ("S T 1.0\nT a 0.6\nT a 0.6\n", 3, "merges to probability"),
]


@pytest.mark.parametrize(("text", "line", "message"), RULE_FILE_ERRORS)
def test_rule_file_validation_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(GrammarError) as error:
        parse_rule_file(text, source="bad.txt")
    assert error.value.line == line, str(error.value)
    assert str(error.value).startswith(f"bad.txt:{line}: ") and message in str(error.value)


NLTK_ERRORS = [
    ("S -> A [1.0]\nA -> B [1.0]\nB -> A [0.5] | 'b' [0.5]\n", 3, "unary cycle A -> B -> A"),
    ("S -> A [1.0]\nA -> A [0.5] | 'a' [0.5]\n", 2, "unary cycle A -> A"),
    ("S -> 'a' B [1.0]\nB -> 'b' [1.0]\n", 1, "not A -> B C"),
    ("S -> A B C [1.0]\n", 1, "not A -> B C"),
    ("S -> 'a'\n", 1, "no [probability]"),
    ("S -> 'a' [1.0]\n%begin S\n", 2, "unknown directive"),
    ("S -> 'a' [1.0]\nthis is not a rule\n", 2, "expected 'LHS -> RHS"),
    ("S -> 'a b' [1.0]\n", 1, "whitespace"),
]


@pytest.mark.parametrize(("text", "line", "message"), NLTK_ERRORS)
def test_nltk_validation_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(GrammarError) as error:
        parse_nltk_grammar(text, source="bad.pcfg")
    assert error.value.line == line, str(error.value)
    assert str(error.value).startswith(f"bad.pcfg:{line}: ") and message in str(error.value)


def test_sum_tolerance_is_inclusive_of_released_deviation_and_rejects_larger() -> None:
    inside = 1.0 - PROBABILITY_SUM_TOLERANCE / 2
    parse_rule_file(f"S T 1.0\nT a {inside}\n")
    outside = 1.0 - PROBABILITY_SUM_TOLERANCE * 2
    with pytest.raises(GrammarError, match="sum to"):
        parse_rule_file(f"S T 1.0\nT a {outside}\n")


def test_missing_grammar_file_is_a_grammar_error(tmp_path: Path) -> None:
    with pytest.raises(GrammarError, match="cannot read grammar file"):
        read_grammar(tmp_path / "absent.txt")


# --- hostile grammar and sentence files ---------------------------------------------------------


def test_invalid_utf8_or_a_nul_byte_is_reported_with_file_and_line(tmp_path):
    from pipeline_lib.pcfg.batching import read_sentences
    from pipeline_lib.pcfg.errors import InputFormatError

    bad = tmp_path / "g.txt"
    bad.write_bytes(b"S -> A [1.0]\nA -> 'a\xff' [1.0]\n")
    with pytest.raises(GrammarError, match=r"g\.txt:2: not UTF-8 text"):
        read_grammar(bad)
    bad.write_bytes(b"S -> A [1.0]\nA -> 'a\x00b' [1.0]\n")  # a NUL inside a symbol
    with pytest.raises(GrammarError, match=r"g\.txt:2: control character"):
        read_grammar(bad)
    sentences = tmp_path / "s.txt"
    sentences.write_bytes(b"a b\nc \x80d\n")
    with pytest.raises(InputFormatError, match=r"s\.txt:2: not UTF-8 text"):
        read_sentences(sentences)


def test_a_huge_rule_is_not_echoed_whole():
    words = " | ".join(f"'w{i}' [{1 / 5000:.6f}]" for i in range(5000))
    with pytest.raises(GrammarError) as e:
        parse_nltk_grammar(f"S -> A [1.0]\nA -> {words} | \n")
    assert len(str(e.value)) < 500, len(str(e.value))


def test_a_start_symbol_without_rules_is_reported_at_the_directive():
    with pytest.raises(GrammarError, match=r"<string>:3: start symbol 'TOP' has no rules"):
        parse_nltk_grammar("# comment\n\n%start TOP\nS -> 'a' [1.0]\n")
