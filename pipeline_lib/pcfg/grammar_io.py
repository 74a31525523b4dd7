"""Reading and writing grammar files.

Two formats are read:

* the released **rule file** (``rule_deep_mlm.txt``): one rule per line,
  whitespace-separated, the last field a probability.  4 fields are a binary
  rule ``A B C p``; 3 fields are a nonterminal unary ``S S1 p`` when the LHS
  starts with ``S`` and a lexical rule ``A1_0 korean p`` otherwise (exactly the
  original ``generate_*.py`` logic).  Duplicate rules are merged by summing.
* **nltk's PCFG text format** (``A -> B C [0.5] | 'w' [0.5]``), with ``#``
  comments, ``\\`` line continuation and the ``%start`` directive.

Grammars are written in nltk's format, readable by ``nltk.PCFG.fromstring``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pipeline_lib.files import atomic_write_text, text_problem
from pipeline_lib.pcfg.errors import GrammarError
from pipeline_lib.pcfg.grammar import Grammar, RawRule, build_grammar

GrammarFormat = Literal["auto", "rules", "nltk"]

_NLTK_TOKEN = re.compile(
    r"""\s*(?:
        (?P<arrow>->)
      | (?P<bar>\|)
      | (?P<prob>\[[^\]]*\])
      | (?P<terminal>'[^']*'|"[^"]*")
      | (?P<symbol>[^\s|'"\[\]]+)
    )""",
    re.VERBOSE,
)


def read_grammar(path: str | Path, fmt: GrammarFormat = "auto", *, allow_unreachable: bool = False) -> Grammar:
    """Read and validate a grammar file; ``fmt="auto"`` picks nltk if any line has ``->``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise GrammarError(str(path), 0, f"cannot read grammar file: {error.strerror}") from error
    problem = text_problem(data)
    if problem is not None:
        raise GrammarError(str(path), *problem)
    text = data.decode("utf-8")
    if fmt == "auto":
        fmt = "nltk" if "->" in text else "rules"
    if fmt == "nltk":
        return parse_nltk_grammar(text, source=str(path), allow_unreachable=allow_unreachable)
    return parse_rule_file(text, source=str(path), allow_unreachable=allow_unreachable)


def parse_rule_file(text: str, source: str = "<string>", *, allow_unreachable: bool = False) -> Grammar:
    """Parse the released rule-file format (see module docstring)."""
    rules: list[RawRule] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (3, 4):
            raise GrammarError(source, line_number, f"expected 3 or 4 whitespace-separated fields, found {len(fields)}")
        probability = _parse_probability(fields[-1], source, line_number)
        if len(fields) == 4:
            rules.append(RawRule(fields[0], (fields[1], fields[2]), "binary", probability, line_number))
        elif fields[0].startswith("S"):
            # The original code's rule: a 3-field line whose LHS starts with "S"
            # is a nonterminal unary (only the root lines ``S S_i p`` match).
            rules.append(RawRule(fields[0], (fields[1],), "unary", probability, line_number))
        else:
            rules.append(RawRule(fields[0], (fields[1],), "lexical", probability, line_number))
    return build_grammar(rules, source, allow_unreachable=allow_unreachable)


def parse_nltk_grammar(text: str, source: str = "<string>", *, allow_unreachable: bool = False) -> Grammar:
    """Parse nltk's PCFG text format, keeping line numbers for error messages."""
    rules: list[RawRule] = []
    start: str | None = None
    start_line = 1
    pending = ""
    pending_line = 0
    for line_number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not pending:
            pending_line = line_number
        line = pending + line
        if line.startswith("#") or not line:
            pending = ""
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        if line.startswith("%"):
            start, start_line = _parse_directive(line, source, pending_line), pending_line
            continue
        rules.extend(_parse_nltk_production(line, source, pending_line))
    return build_grammar(
        rules, source, start, allow_unreachable=allow_unreachable, start_line=start_line
    )


def _parse_directive(line: str, source: str, line_number: int) -> str:
    parts = line[1:].split()
    if len(parts) != 2 or parts[0] != "start":
        raise GrammarError(source, line_number, f"unknown directive {line!r} (only '%start SYMBOL' is supported)")
    return parts[1]


def _parse_nltk_production(line: str, source: str, line_number: int) -> list[RawRule]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(line):
        match = _NLTK_TOKEN.match(line, position)
        if match is None or match.end() == position:
            if line[position:].strip() == "":
                break
            raise GrammarError(source, line_number, f"cannot parse {line[position:].strip()!r}")
        tokens.append((match.lastgroup or "", match.group(match.lastgroup or 0)))
        position = match.end()
    if len(tokens) < 2 or tokens[0][0] != "symbol" or tokens[1][0] != "arrow":
        raise GrammarError(source, line_number, "expected 'LHS -> RHS [probability]'")
    lhs = tokens[0][1]
    alternatives: list[list[tuple[str, str]]] = [[]]
    for kind, value in tokens[2:]:
        if kind == "bar":
            alternatives.append([])
        elif kind == "arrow":
            raise GrammarError(source, line_number, "unexpected second '->'")
        else:
            alternatives[-1].append((kind, value))
    return [_alternative_to_rule(lhs, alternative, source, line_number) for alternative in alternatives]


def _alternative_to_rule(lhs: str, alternative: list[tuple[str, str]], source: str, line_number: int) -> RawRule:
    if not alternative or alternative[-1][0] != "prob":
        raise GrammarError(source, line_number, f"alternative of {lhs!r} has no [probability]")
    probability = _parse_probability(alternative[-1][1][1:-1], source, line_number)
    symbols = alternative[:-1]
    kinds = [kind for kind, _ in symbols]
    if kinds == ["terminal"]:
        return RawRule(lhs, (symbols[0][1][1:-1],), "lexical", probability, line_number)
    if kinds == ["symbol"]:
        return RawRule(lhs, (symbols[0][1],), "unary", probability, line_number)
    if kinds == ["symbol", "symbol"]:
        return RawRule(lhs, (symbols[0][1], symbols[1][1]), "binary", probability, line_number)
    shown = " ".join(value for _, value in symbols)
    raise GrammarError(
        source, line_number, f"rule {lhs} -> {shown} is not A -> B C, A -> B or A -> 'w' (Chomsky normal form with unaries)"
    )


def _parse_probability(field: str, source: str, line_number: int) -> float:
    try:
        return float(field)
    except ValueError:
        raise GrammarError(source, line_number, f"probability {field!r} is not a number") from None


def format_nltk_grammar(grammar: Grammar) -> str:
    """The grammar in nltk's PCFG format, start symbol's rules first, one rule per line."""
    lines = ["# PCFG written by pipeline_lib.pcfg", f"%start {grammar.start_symbol}"]
    for lhs, rhs, kind, probability in grammar.iter_rules():
        if kind == "lexical":
            word = rhs[0]
            if "'" in word and '"' in word:
                raise ValueError(f"terminal {word!r} contains both quote characters; nltk's format cannot express it")
            quote = '"' if "'" in word else "'"
            shown = f"{quote}{word}{quote}"
        else:
            shown = " ".join(rhs)
        lines.append(f"{lhs} -> {shown} [{probability!r}]")
    return "\n".join(lines) + "\n"


def write_nltk_grammar(grammar: Grammar, path: str | Path) -> None:
    """Atomically write :func:`format_nltk_grammar` to ``path``."""
    atomic_write_text(path, format_nltk_grammar(grammar))
