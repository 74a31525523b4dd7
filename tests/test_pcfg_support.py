"""Shared tiny grammars and brute-force references for the pcfg tests (no tests here).

The references enumerate every tree of a sentence from plain Python rule
lists, independently of the library's arrays and JAX charts.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from typing import Any, Iterator

import jax

from pipeline_lib.pcfg.grammar import Grammar
from pipeline_lib.pcfg.grammar_io import parse_nltk_grammar

# Ambiguous, recursive (A -> A B), with a unary chain S -> X -> Z.
AMBIGUOUS_GRAMMAR_TEXT = """
S -> X [0.6] | Y [0.4]
X -> A B [0.4] | B A [0.2] | Z [0.1] | 'a' [0.3]
Z -> A A [0.5] | 'c' [0.5]
Y -> A A [0.7] | X B [0.3]
A -> A B [0.2] | 'a' [0.5] | 'b' [0.3]
B -> 'b' [0.6] | 'c' [0.4]
"""

# Finite language (no recursion): every sentence and its probability can be enumerated.
FINITE_GRAMMAR_TEXT = """
S -> S1 [0.7] | S2 [0.3]
S1 -> P Q [1.0]
S2 -> Q P [1.0]
P -> 'a' [0.5] | 'b' [0.2] | R R [0.3]
Q -> 'b' [0.4] | 'c' [0.6]
R -> 'a' [0.5] | 'c' [0.5]
"""


def pcfg_spec(**sections: Any) -> dict[str, Any]:
    """The validated ``pcfg:`` config section with ``sections`` overriding the schema defaults
    (what the workflow hands the data stage; :mod:`pipeline_lib.pcfg` has no defaults itself)."""
    from pipeline_lib.config import validate_config

    return validate_config({"seed": 0, "vocab": {"layout": "laptop"}, "pcfg": sections})["pcfg"]


def ambiguous_grammar() -> Grammar:
    return parse_nltk_grammar(AMBIGUOUS_GRAMMAR_TEXT, source="ambiguous")


def finite_grammar() -> Grammar:
    return parse_nltk_grammar(FINITE_GRAMMAR_TEXT, source="finite")


@contextlib.contextmanager
def fast_jax_compilation() -> Iterator[None]:
    """Disable most XLA optimisations (compile time dominates on tiny inputs), then restore."""
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)


class BruteForce:
    """Tree enumeration over a grammar's rules, read back from :meth:`Grammar.iter_rules`."""

    def __init__(self, grammar: Grammar) -> None:
        self.start = grammar.start_symbol
        self.binary: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
        self.unary: dict[str, list[tuple[str, float]]] = defaultdict(list)
        self.lexical: dict[str, dict[str, float]] = defaultdict(dict)
        for lhs, rhs, kind, probability in grammar.iter_rules():
            if kind == "binary":
                self.binary[lhs].append((rhs[0], rhs[1], probability))
            elif kind == "unary":
                self.unary[lhs].append((rhs[0], probability))
            else:
                self.lexical[lhs][rhs[0]] = probability
        self.nonterminals = sorted(set(self.binary) | set(self.unary) | set(self.lexical))
        self.terminals = sorted({w for d in self.lexical.values() for w in d})
        self.memo: dict = {}

    def trees(self, words: tuple[str, ...], symbol: str | None = None) -> list[tuple[float, str, frozenset]]:
        """Every tree of ``words`` rooted at ``symbol``: (probability, bracketed string, pre-unary node spans)."""
        return list(_enumerate(self, tuple(words), self.start if symbol is None else symbol, 0, len(words)))

    def inside(self, words: tuple[str, ...], symbol: str | None = None, i: int = 0, j: int | None = None) -> float:
        j = len(words) if j is None else j
        return sum(p for p, _, _ in _enumerate(self, tuple(words), self.start if symbol is None else symbol, i, j))

    def best(self, words: tuple[str, ...]) -> tuple[float, list[str]]:
        """Best tree probability and every tree string attaining it."""
        trees = self.trees(words)
        if not trees:
            return 0.0, []
        top = max(p for p, _, _ in trees)
        return top, [t for p, t, _ in trees if math.isclose(p, top, rel_tol=1e-12)]

    def span_marginals(self, words: tuple[str, ...]) -> dict[tuple[str, int, int], float]:
        """P(pre-unary node (A, i, j) in the tree | words)."""
        trees = self.trees(words)
        total = sum(p for p, _, _ in trees)
        marginals: dict[tuple[str, int, int], float] = defaultdict(float)
        for p, _, spans in trees:
            for span in spans:
                marginals[span] += p / total
        return marginals

    def conditionals(self, words: tuple[str, ...], t: int) -> dict[str, float]:
        """p(x_t = w | x_-t) by replacing x_t with every terminal."""
        scores = {w: self.inside(words[:t] + (w,) + words[t + 1 :]) for w in self.terminals}
        total = sum(scores.values())
        return {w: s / total for w, s in scores.items()}


def _enumerate(engine: BruteForce, words: tuple[str, ...], symbol: str, i: int, j: int):
    memo = engine.memo
    key = (words, symbol, i, j)
    if key in memo:
        return memo[key]
    results: list[tuple[float, str, frozenset]] = []
    for child, p in engine.unary[symbol]:
        for q, tree, spans in _enumerate(engine, words, child, i, j):
            results.append((p * q, f"({symbol} {tree})", spans))
    if j - i == 1:
        p = engine.lexical[symbol].get(words[i])
        if p is not None:
            results.append((p, f"({symbol} {words[i]})", frozenset({(symbol, i, j)})))
    else:
        for left, right, p in engine.binary[symbol]:
            for k in range(i + 1, j):
                for q_left, t_left, s_left in _enumerate(engine, words, left, i, k):
                    for q_right, t_right, s_right in _enumerate(engine, words, right, k, j):
                        results.append(
                            (p * q_left * q_right, f"({symbol} {t_left} {t_right})", s_left | s_right | {(symbol, i, j)})
                        )
    memo[key] = results
    return results


def enumerate_language(engine: BruteForce, max_length: int) -> dict[tuple[str, ...], float]:
    """Every sentence of at most ``max_length`` words with its probability (for finite grammars)."""

    def expand(symbol: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for word, p in engine.lexical[symbol].items():
            out[(word,)] += p
        for child, p in engine.unary[symbol]:
            for s, q in expand(child).items():
                out[s] += p * q
        for left, right, p in engine.binary[symbol]:
            for s1, q1 in expand(left).items():
                for s2, q2 in expand(right).items():
                    if len(s1) + len(s2) <= max_length:
                        out[s1 + s2] += p * q1 * q2
        return out

    return dict(expand(engine.start))
