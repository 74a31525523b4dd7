"""Best (Viterbi) parse trees as bracketed strings readable by ``nltk.Tree.fromstring``.

The max-product chart and back-pointers come from :func:`chart.viterbi_chart`
(JAX, batched); the tree is recovered on the host by following them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline_lib.pcfg import chart
from pipeline_lib.pcfg.batching import UNKNOWN_WORD_ID
from pipeline_lib.pcfg.grammar import Grammar
from pipeline_lib.pcfg.inside import DEFAULT_BATCH_SIZE, map_batches


@dataclass(frozen=True)
class ViterbiParse:
    """The most probable tree (``None`` if the sentence has probability 0) and its log-probability."""

    tree: str | None
    log_prob: float


def viterbi_parses(
    grammar: Grammar, sentences: Sequence[np.ndarray], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> list[ViterbiParse]:
    """Best parse of every sentence (terminal-id arrays)."""
    tensors = chart.chart_tensors(grammar)
    next_hop = chart.host_unary_chains(grammar).next_hop
    parses: list[ViterbiParse] = [ViterbiParse(None, -math.inf)] * len(sentences)

    def compute(batch) -> tuple[np.ndarray, ...]:
        return tuple(chart.viterbi_chart(tensors, batch.ids))

    for index, row, (best, rule, left_width, source) in map_batches(sentences, batch_size, compute):
        words = sentences[index]
        n = len(words)
        log_prob = float(best[row, 0, n - 1, grammar.start])
        if not math.isfinite(log_prob) or (np.asarray(words) == UNKNOWN_WORD_ID).any():
            parses[index] = ViterbiParse(None, -math.inf)
            continue
        tree = _backtrace(grammar, next_hop, words, rule[row], left_width[row], source[row])
        parses[index] = ViterbiParse(tree, log_prob)
    return parses


def _backtrace(
    grammar: Grammar,
    next_hop: np.ndarray,
    words: np.ndarray,
    best_rule: np.ndarray,
    best_left_width: np.ndarray,
    unary_source: np.ndarray,
) -> str:
    nonterminals, terminals, binary = grammar.nonterminals, grammar.terminals, grammar.binary_rules

    def post_unary(start: int, width: int, symbol: int) -> str:
        bottom = int(unary_source[start, width - 1, symbol])
        chain = [symbol]
        while chain[-1] != bottom:
            chain.append(int(next_hop[chain[-1], bottom]))
        text = pre_unary(start, width, bottom)
        for parent in reversed(chain[:-1]):
            text = f"({nonterminals[parent]} {text})"
        return text

    def pre_unary(start: int, width: int, symbol: int) -> str:
        if width == 1:
            return f"({nonterminals[symbol]} {terminals[int(words[start])]})"
        _, left, right = binary[int(best_rule[start, width - 1, symbol])]
        split = int(best_left_width[start, width - 1, symbol])
        return (
            f"({nonterminals[symbol]} {post_unary(start, split, int(left))} "
            f"{post_unary(start + split, width - split, int(right))})"
        )

    return post_unary(0, len(words), grammar.start)
