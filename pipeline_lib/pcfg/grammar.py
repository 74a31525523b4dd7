"""The :class:`Grammar` data structure and its validation.

A grammar is a PCFG in Chomsky normal form extended with nonterminal unary
rules (the released grammar has ``S -> S_i``).  Rules are stored as compact
numpy arrays so the chart algorithms can be vectorised:

* ``binary_rules``  int32 ``(R, 3)``: ``[A, B, C]`` for ``A -> B C``
* ``unary_rules``   int32 ``(U, 2)``: ``[A, B]`` for ``A -> B``
* ``lexical_rules`` int32 ``(L, 2)``: ``[A, w]`` for ``A -> 'w'``

each with a float64 log-probability array of matching length.  Nonterminals
and terminals are stored sorted by name, so a nonterminal's index is its rank
in the sorted list: for the released grammar that is exactly the label id of
downstream tasks B and C (``A1_0`` = 0, ..., ``S`` = 40, ``S1`` = 41, ...).

Reading files lives in :mod:`pipeline_lib.pcfg.grammar_io`; this module only
turns a list of :class:`RawRule` into a validated :class:`Grammar`.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Literal

import numpy as np

from pipeline_lib.pcfg.errors import GrammarError

# Per-LHS probabilities must sum to 1 within this absolute tolerance.  It is
# nltk's ``PCFG.EPSILON``: the original code built its grammar with
# ``nltk.PCFG``, so every grammar it accepted (the released file's A4_1 sums to
# 0.99977) is accepted here too.
PROBABILITY_SUM_TOLERANCE = 0.01

RuleKind = Literal["binary", "unary", "lexical"]

# Symbols end up in bracketed trees and whitespace-tokenised sentence files.
_FORBIDDEN_SYMBOL_CHARACTERS = re.compile(r"[\s()]")


@dataclass(frozen=True)
class RawRule:
    """One rule as read from a file, before merging and validation."""

    lhs: str
    rhs: tuple[str, ...]
    kind: RuleKind
    probability: float
    line: int


@dataclass(frozen=True, eq=False)
class Grammar:
    """A validated PCFG with array-valued rules (see module docstring)."""

    nonterminals: tuple[str, ...]
    terminals: tuple[str, ...]
    start: int
    binary_rules: np.ndarray
    binary_log_probs: np.ndarray
    unary_rules: np.ndarray
    unary_log_probs: np.ndarray
    lexical_rules: np.ndarray
    lexical_log_probs: np.ndarray
    # Nonterminal indices in order of first appearance as a left-hand side in
    # the source.  Used for tie-breaking exactly like the original code, which
    # took ``max`` over dicts filled in grammar order.
    declaration_order: np.ndarray
    source: str = "<memory>"

    @property
    def n_nonterminals(self) -> int:
        return len(self.nonterminals)

    @property
    def n_terminals(self) -> int:
        return len(self.terminals)

    @property
    def start_symbol(self) -> str:
        return self.nonterminals[self.start]

    @cached_property
    def nonterminal_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.nonterminals)}

    @cached_property
    def terminal_index(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.terminals)}

    def lexical_matrix(self) -> np.ndarray:
        """Dense ``(N, T)`` float64 matrix of P(A -> w)."""
        matrix = np.zeros((self.n_nonterminals, self.n_terminals))
        matrix[self.lexical_rules[:, 0], self.lexical_rules[:, 1]] = np.exp(self.lexical_log_probs)
        return matrix

    def binary_tensor(self) -> np.ndarray:
        """Dense ``(N, N, N)`` float64 tensor of P(A -> B C), indexed ``[A, B, C]``."""
        n = self.n_nonterminals
        tensor = np.zeros((n, n, n))
        a, b, c = self.binary_rules.T
        tensor[a, b, c] = np.exp(self.binary_log_probs)
        return tensor

    def unary_matrix(self) -> np.ndarray:
        """Dense ``(N, N)`` float64 matrix of P(A -> B) for nonterminal unaries."""
        matrix = np.zeros((self.n_nonterminals, self.n_nonterminals))
        matrix[self.unary_rules[:, 0], self.unary_rules[:, 1]] = np.exp(self.unary_log_probs)
        return matrix

    def start_unary_children(self) -> list[int]:
        """Nonterminals B with a rule ``start -> B``, in declaration order."""
        children = set(self.unary_rules[self.unary_rules[:, 0] == self.start, 1].tolist())
        return [int(a) for a in self.declaration_order if int(a) in children]

    def lhs_probability_sums(self) -> np.ndarray:
        """Total rule probability per left-hand side, shape ``(N,)``."""
        sums = np.zeros(self.n_nonterminals)
        for rules, log_probs in (
            (self.binary_rules, self.binary_log_probs),
            (self.unary_rules, self.unary_log_probs),
            (self.lexical_rules, self.lexical_log_probs),
        ):
            np.add.at(sums, rules[:, 0], np.exp(log_probs))
        return sums

    def renormalized(self) -> "Grammar":
        """The same grammar with every LHS's probabilities scaled to sum to 1.

        The sampler draws proportionally to the stored probabilities (like the
        original ``random.choices``), so exact conditionals of the *sampling*
        distribution use this renormalised grammar.
        """
        log_sums = np.log(self.lhs_probability_sums())
        return Grammar(
            nonterminals=self.nonterminals,
            terminals=self.terminals,
            start=self.start,
            binary_rules=self.binary_rules,
            binary_log_probs=self.binary_log_probs - log_sums[self.binary_rules[:, 0]],
            unary_rules=self.unary_rules,
            unary_log_probs=self.unary_log_probs - log_sums[self.unary_rules[:, 0]],
            lexical_rules=self.lexical_rules,
            lexical_log_probs=self.lexical_log_probs - log_sums[self.lexical_rules[:, 0]],
            declaration_order=self.declaration_order,
            source=self.source,
        )

    def iter_rules(self) -> Iterable[tuple[str, tuple[str, ...], RuleKind, float]]:
        """Rules as ``(lhs, rhs, kind, probability)``, LHS in declaration order."""
        by_lhs: dict[int, list[tuple[str, tuple[str, ...], RuleKind, float]]] = defaultdict(list)
        nts, ts = self.nonterminals, self.terminals
        for (a, b, c), lp in zip(self.binary_rules.tolist(), self.binary_log_probs.tolist()):
            by_lhs[a].append((nts[a], (nts[b], nts[c]), "binary", math.exp(lp)))
        for (a, b), lp in zip(self.unary_rules.tolist(), self.unary_log_probs.tolist()):
            by_lhs[a].append((nts[a], (nts[b],), "unary", math.exp(lp)))
        for (a, w), lp in zip(self.lexical_rules.tolist(), self.lexical_log_probs.tolist()):
            by_lhs[a].append((nts[a], (ts[w],), "lexical", math.exp(lp)))
        for a in self.declaration_order.tolist():
            yield from by_lhs[a]


def build_grammar(
    rules: list[RawRule],
    source: str,
    start: str | None = None,
    *,
    allow_unreachable: bool = False,
    start_line: int = 1,
) -> Grammar:
    """Merge duplicate rules, validate, and pack ``rules`` into a :class:`Grammar`.

    Duplicate ``lhs -> rhs`` rules are merged by summing their probabilities
    (as the original code did for the released file).  The first problem found
    raises one :class:`GrammarError` naming ``source`` and the offending line.
    ``start`` defaults to the first rule's LHS (nltk's convention).
    ``allow_unreachable`` keeps nonterminals that cannot be reached from the
    start symbol; the released ``rule_deep_mlm.txt`` needs it (``A1_9`` is never
    used on a right-hand side), and dropping it would shift the task-B/C label ids.
    """
    if not rules:
        raise GrammarError(source, 1, "no rules found")
    start_name = rules[0].lhs if start is None else start

    for rule in rules:
        _check_rule_syntax(rule, source)

    merged = _merge_duplicates(rules, source)
    rule_lines = _first_lines(rules)

    _check_lhs_sums(merged, source)
    lhs_line = {}
    for rule in rules:
        lhs_line.setdefault(rule.lhs, rule.line)
    if start_name not in lhs_line:
        where = start_line if start is not None else 1  # the %start directive's line
        raise GrammarError(source, where, f"start symbol {start_name!r} has no rules")
    _check_defined_and_productive(merged, lhs_line, rule_lines, source)
    _check_unary_cycles(merged, source)
    if not allow_unreachable:
        _check_reachable(merged, start_name, lhs_line, source)

    return _pack(merged, start_name, lhs_line, source)


def _check_rule_syntax(rule: RawRule, source: str) -> None:
    expected_arity = {"binary": 2, "unary": 1, "lexical": 1}[rule.kind]
    if len(rule.rhs) != expected_arity:
        raise GrammarError(source, rule.line, f"{rule.kind} rule must have {expected_arity} right-hand-side symbols")
    p = rule.probability
    if not (math.isfinite(p) and 0.0 < p <= 1.0):
        raise GrammarError(source, rule.line, f"probability {p!r} of {_describe(rule)} is outside (0, 1]")
    for symbol in (rule.lhs, *rule.rhs):
        if not symbol or _FORBIDDEN_SYMBOL_CHARACTERS.search(symbol):
            raise GrammarError(source, rule.line, f"symbol {symbol!r} is empty or contains whitespace or parentheses")


def _describe(rule: RawRule) -> str:
    rhs = f"'{rule.rhs[0]}'" if rule.kind == "lexical" else " ".join(rule.rhs)
    return f"rule {rule.lhs} -> {rhs}"


def _merge_duplicates(rules: list[RawRule], source: str) -> dict[tuple[str, RuleKind, tuple[str, ...]], RawRule]:
    merged: dict[tuple[str, RuleKind, tuple[str, ...]], RawRule] = {}
    for rule in rules:
        key = (rule.lhs, rule.kind, rule.rhs)
        if key in merged:
            first = merged[key]
            total = first.probability + rule.probability
            if total > 1.0 + PROBABILITY_SUM_TOLERANCE:
                raise GrammarError(
                    source, rule.line, f"duplicate {_describe(rule)} (first on line {first.line}) merges to probability {total:.6g} > 1"
                )
            merged[key] = RawRule(first.lhs, first.rhs, first.kind, total, first.line)
        else:
            merged[key] = rule
    return merged


def _first_lines(rules: list[RawRule]) -> dict[str, int]:
    """First line on which each symbol appears on a right-hand side."""
    lines: dict[str, int] = {}
    for rule in rules:
        if rule.kind != "lexical":
            for symbol in rule.rhs:
                lines.setdefault(symbol, rule.line)
    return lines


def _check_lhs_sums(merged: dict, source: str) -> None:
    sums: dict[str, float] = defaultdict(float)
    first_line: dict[str, int] = {}
    for rule in merged.values():
        sums[rule.lhs] += rule.probability
        first_line[rule.lhs] = min(first_line.get(rule.lhs, rule.line), rule.line)
    for lhs, total in sums.items():
        if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
            raise GrammarError(
                source,
                first_line[lhs],
                f"probabilities of {lhs!r} sum to {total:.6g}, expected 1 within {PROBABILITY_SUM_TOLERANCE}",
            )


def _check_defined_and_productive(merged: dict, lhs_line: dict[str, int], rhs_line: dict[str, int], source: str) -> None:
    for symbol, line in sorted(rhs_line.items(), key=lambda item: item[1]):
        if symbol not in lhs_line:
            raise GrammarError(source, line, f"nonterminal {symbol!r} is used but has no rules")
    productive: set[str] = set()
    changed = True
    while changed:
        changed = False
        for rule in merged.values():
            if rule.lhs in productive:
                continue
            if rule.kind == "lexical" or all(s in productive for s in rule.rhs):
                productive.add(rule.lhs)
                changed = True
    for lhs, line in sorted(lhs_line.items(), key=lambda item: item[1]):
        if lhs not in productive:
            raise GrammarError(source, line, f"nonterminal {lhs!r} is unproductive: it derives no finite word sequence")


def _check_unary_cycles(merged: dict, source: str) -> None:
    children: dict[str, list[RawRule]] = defaultdict(list)
    for rule in merged.values():
        if rule.kind == "unary":
            children[rule.lhs].append(rule)
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = finished

    def visit(symbol: str, path: list[RawRule]) -> None:
        state[symbol] = 1
        for rule in children[symbol]:
            child = rule.rhs[0]
            if state.get(child) == 1:
                on_stack = [r.lhs for r in path] + [symbol]
                names = " -> ".join(on_stack[on_stack.index(child) :] + [child])
                raise GrammarError(source, rule.line, f"unary cycle {names}")
            if child not in state:
                visit(child, path + [rule])
        state[symbol] = 2

    for symbol in sorted(children, key=lambda s: min(r.line for r in children[s])):
        if symbol not in state:
            visit(symbol, [])


def _check_reachable(merged: dict, start: str, lhs_line: dict[str, int], source: str) -> None:
    children: dict[str, set[str]] = defaultdict(set)
    for rule in merged.values():
        if rule.kind != "lexical":
            children[rule.lhs].update(rule.rhs)
    reached = {start}
    stack = [start]
    while stack:
        for child in children[stack.pop()]:
            if child not in reached:
                reached.add(child)
                stack.append(child)
    for lhs, line in sorted(lhs_line.items(), key=lambda item: item[1]):
        if lhs not in reached:
            raise GrammarError(
                source, line, f"nonterminal {lhs!r} is unreachable from start symbol {start!r} (allow_unreachable keeps it)"
            )


def _pack(merged: dict, start: str, lhs_line: dict[str, int], source: str) -> Grammar:
    nonterminals = tuple(sorted(lhs_line))
    nt_index = {name: i for i, name in enumerate(nonterminals)}
    terminals = tuple(sorted({r.rhs[0] for r in merged.values() if r.kind == "lexical"}))
    t_index = {word: i for i, word in enumerate(terminals)}

    def arrays(kind: RuleKind, width: int) -> tuple[np.ndarray, np.ndarray]:
        selected = [r for r in merged.values() if r.kind == kind]
        rows = [
            [nt_index[r.lhs]] + ([t_index[r.rhs[0]]] if kind == "lexical" else [nt_index[s] for s in r.rhs]) for r in selected
        ]
        rules = np.asarray(rows, dtype=np.int32).reshape(len(rows), width)
        log_probs = np.log(np.asarray([r.probability for r in selected], dtype=np.float64))
        return rules, log_probs

    binary, binary_lp = arrays("binary", 3)
    unary, unary_lp = arrays("unary", 2)
    lexical, lexical_lp = arrays("lexical", 2)
    order = np.asarray([nt_index[name] for name, _ in sorted(lhs_line.items(), key=lambda item: item[1])], dtype=np.int32)
    return Grammar(
        nonterminals=nonterminals,
        terminals=terminals,
        start=nt_index[start],
        binary_rules=binary,
        binary_log_probs=binary_lp,
        unary_rules=unary,
        unary_log_probs=unary_lp,
        lexical_rules=lexical,
        lexical_log_probs=lexical_lp,
        declaration_order=order,
        source=source,
    )
