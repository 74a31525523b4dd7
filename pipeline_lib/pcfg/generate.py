"""Seeded generator of random hierarchical grammars shaped like the released one.

Structure (released values in brackets)::

    S    -> S_i                 root prior ~ Dirichlet               [9 roots]
    S_i  -> A1_a A1_b           exactly one binary rule, prob 1
    Al_j -> A(l+1)_x A(l+1)_y   k distinct binary rules, l < L       [k = 18-20]
    Al_j -> 'w'                 exactly one lexical rule, l < L,     [p in 0.04-0.42]
                                its word unique to Al_j
    AL_j -> 'w'                 bottom level: m distinct words       [L = 4, m = 77-86]

so sentence lengths range from 2 to 2**L.  Every nonterminal is reachable and
every terminal is emitted by some bottom-level nonterminal, so the result always
passes :func:`~pipeline_lib.pcfg.grammar.build_grammar` validation.  The
defaults are laptop-small; :data:`RELEASED_LIKE_SHAPE` matches the released sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline_lib.pcfg.grammar import Grammar, RawRule, build_grammar


@dataclass(frozen=True)
class GrammarShape:
    """Sizes of a generated grammar (see module docstring)."""

    n_roots: int = 4
    n_levels: int = 4
    nonterminals_per_level: int = 5
    n_terminals: int = 50
    binary_rules_per_nonterminal: int = 8
    words_per_bottom_nonterminal: int = 20
    lexical_probability_min: float = 0.04
    lexical_probability_max: float = 0.42
    dirichlet_concentration: float = 1.0

    def check(self) -> None:
        """Raise ``ValueError`` if the sizes cannot give a valid grammar."""
        per_level = self.nonterminals_per_level
        problems = []
        if self.n_roots < 1 or self.n_levels < 1 or per_level < 1:
            problems.append("n_roots, n_levels and nonterminals_per_level must be >= 1")
        if 2 * self.n_roots < per_level:
            problems.append("2 * n_roots must be >= nonterminals_per_level so every A1 is reachable")
        if not 1 <= self.binary_rules_per_nonterminal <= per_level**2:
            problems.append("binary_rules_per_nonterminal must be in [1, nonterminals_per_level**2]")
        if 2 * self.binary_rules_per_nonterminal < per_level:
            problems.append("2 * binary_rules_per_nonterminal must be >= nonterminals_per_level so every child is reachable")
        if (self.n_levels - 1) * per_level > self.n_terminals:
            problems.append("need at least (n_levels - 1) * nonterminals_per_level terminals for the level words")
        if not 1 <= self.words_per_bottom_nonterminal <= self.n_terminals:
            problems.append("words_per_bottom_nonterminal must be in [1, n_terminals]")
        if per_level * self.words_per_bottom_nonterminal < self.n_terminals:
            problems.append("nonterminals_per_level * words_per_bottom_nonterminal must cover n_terminals")
        if not 0.0 < self.lexical_probability_min <= self.lexical_probability_max < 1.0:
            problems.append("need 0 < lexical_probability_min <= lexical_probability_max < 1")
        if self.dirichlet_concentration <= 0:
            problems.append("dirichlet_concentration must be > 0")
        if problems:
            raise ValueError("invalid GrammarShape: " + "; ".join(problems))


RELEASED_LIKE_SHAPE = GrammarShape(
    n_roots=9,
    n_levels=4,
    nonterminals_per_level=10,
    n_terminals=200,
    binary_rules_per_nonterminal=19,
    words_per_bottom_nonterminal=82,
)


def generate_grammar(shape: GrammarShape = GrammarShape(), seed: int = 0) -> Grammar:
    """A random grammar with the given ``shape``; identical for identical ``(shape, seed)``."""
    shape.check()
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    per_level = shape.nonterminals_per_level
    words = [f"w{i:0{len(str(shape.n_terminals - 1))}d}" for i in range(shape.n_terminals)]

    def name(level: int, j: int) -> str:
        return f"A{level}_{j}"

    rules: list[RawRule] = []

    def add(lhs: str, rhs: tuple[str, ...], kind: str, probability: float) -> None:
        rules.append(RawRule(lhs, rhs, kind, float(probability), len(rules) + 1))  # type: ignore[arg-type]

    root_prior = rng.dirichlet(np.full(shape.n_roots, shape.dirichlet_concentration))
    for i, p in enumerate(root_prior, start=1):
        add("S", (f"S{i}",), "unary", p)
    for i, (a, b) in enumerate(_covering_pairs(rng, shape.n_roots, per_level, distinct=False), start=1):
        add(f"S{i}", (name(1, a), name(1, b)), "binary", 1.0)

    level_words = rng.permutation(shape.n_terminals)[: (shape.n_levels - 1) * per_level]
    for level in range(1, shape.n_levels):
        for j in range(per_level):
            pairs = _covering_pairs(rng, shape.binary_rules_per_nonterminal, per_level, distinct=True)
            lexical_probability = rng.uniform(shape.lexical_probability_min, shape.lexical_probability_max)
            weights = rng.dirichlet(np.full(len(pairs), shape.dirichlet_concentration)) * (1.0 - lexical_probability)
            for (a, b), p in zip(pairs, weights):
                add(name(level, j), (name(level + 1, a), name(level + 1, b)), "binary", p)
            word = words[level_words[(level - 1) * per_level + j]]
            add(name(level, j), (word,), "lexical", lexical_probability)

    for j, word_ids in enumerate(_covering_word_sets(rng, shape)):
        weights = rng.dirichlet(np.full(len(word_ids), shape.dirichlet_concentration))
        for w, p in zip(word_ids, weights):
            add(name(shape.n_levels, j), (words[w],), "lexical", p)

    # Dirichlet draws can produce probabilities that underflow to 0; such a rule
    # is simply absent from the distribution, so drop it rather than fail validation.
    rules = [r for r in rules if r.probability > 0.0]
    return build_grammar(rules, source=f"<generated seed={seed}>", start="S")


def _covering_pairs(rng: np.random.Generator, n_pairs: int, n_children: int, *, distinct: bool) -> list[tuple[int, int]]:
    """``n_pairs`` child pairs in which every child index appears (needs ``2 * n_pairs >= n_children``).

    The first pairs are cut from a random permutation of the children, which
    guarantees coverage; the rest are random (distinct ordered pairs if asked).
    """
    slots = list(rng.permutation(n_children))
    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    while len(pairs) < n_pairs:
        if len(slots) >= 2:
            a, b = int(slots.pop()), int(slots.pop())
        elif len(slots) == 1:
            a, b = int(slots.pop()), int(rng.integers(n_children))
        else:
            a, b = (int(x) for x in rng.integers(n_children, size=2))
        if distinct and (a, b) in seen:
            if (b, a) not in seen:
                a, b = b, a
            else:
                continue
        seen.add((a, b))
        pairs.append((a, b))
    return pairs


def _covering_word_sets(rng: np.random.Generator, shape: GrammarShape) -> list[np.ndarray]:
    """Word sets of the bottom nonterminals, together covering every terminal."""
    per_level, size, n_words = shape.nonterminals_per_level, shape.words_per_bottom_nonterminal, shape.n_terminals
    dealt = rng.permutation(n_words)
    word_sets = []
    for j in range(per_level):
        own = dealt[j::per_level]
        others = np.setdiff1d(np.arange(n_words), own)
        extra = rng.choice(others, size=size - len(own), replace=False)
        word_sets.append(np.sort(np.concatenate([own, extra])))
    return word_sets
