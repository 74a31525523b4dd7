"""Best (Viterbi) parse trees as bracketed strings readable by ``nltk.Tree.fromstring``.

The max-product chart and compact back-pointers (best live rule term per
pre-unary cell, best unary-chain source per post-unary cell) come from
:mod:`fastchart` (JAX, batched, length-pruned; :func:`chart.viterbi_chart` is
the reference it is tested against); the tree is recovered on the host by
following them.  Ties go to the lowest binary rule index, then the shortest
left child, as in :func:`chart.viterbi_chart`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from pipeline_lib.pcfg import chart, fastchart
from pipeline_lib.pcfg.batching import UNKNOWN_WORD_ID
from pipeline_lib.pcfg.grammar import Grammar
from pipeline_lib.pcfg.inside import DEFAULT_BATCH_SIZE, fast_batches


@dataclass(frozen=True)
class ViterbiParse:
    """The most probable tree (``None`` if the sentence has probability 0) and its log-probability."""

    tree: str | None
    log_prob: float


def viterbi_parses(
    grammar: Grammar, sentences: Sequence[np.ndarray], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> list[ViterbiParse]:
    """Best parse of every sentence (terminal-id arrays)."""
    next_hop = chart.host_unary_chains(grammar).next_hop.tolist()
    parses: list[ViterbiParse] = [ViterbiParse(None, -math.inf)] * len(sentences)
    for batch, (best, terms, sources) in fast_batches(grammar, sentences, batch_size, "viterbi"):
        index_tables = _backpointer_index(grammar, batch.ids.shape[1])
        for row in np.flatnonzero(batch.indices >= 0).tolist():
            index = int(batch.indices[row])
            words = sentences[index]
            log_prob = float(best[row])
            if not math.isfinite(log_prob) or (np.asarray(words) == UNKNOWN_WORD_ID).any():
                parses[index] = ViterbiParse(None, -math.inf)
                continue
            word_list = np.asarray(words).tolist()
            tree = _fast_backtrace(grammar, index_tables, next_hop, word_list, terms[row].tolist(), sources[row].tolist())
            parses[index] = ViterbiParse(tree, log_prob)
    return parses


@dataclass(frozen=True)
class _BackpointerIndex:
    """Where :func:`fastchart.compiled` ``"viterbi"`` puts each cell's back-pointer (Python lists, for speed)."""

    spans: list[int]  # spans[w] = n - w + 1
    pre_row: list[dict[int, int]]  # pre_row[w][symbol] -> local pre row
    pre_symbol: list[list[int]]  # pre_symbol[w][row] -> symbol
    term_offset: list[int]  # start of width w in the flat term array
    term_rule: list[list[int]]  # term_rule[w][t] -> binary rule
    term_split: list[list[int]]  # term_split[w][t] -> left-child width
    mix_row: list[dict[int, int]]  # mix_row[w][symbol] -> index among the unary-chain rows
    source_offset: list[int]  # start of width w in the flat source array


@lru_cache(maxsize=64)
def _backpointer_index(grammar: Grammar, n: int) -> _BackpointerIndex:
    plan = fastchart.chart_plan(grammar, n)
    spans, pre_row, pre_symbol, term_offset, term_rule, term_split, mix_row, source_offset = ([None] for _ in range(8))
    terms_total = sources_total = 0
    for width in range(1, n + 1):
        wp = plan.widths[width - 1]
        s = n - width + 1
        spans.append(s)
        pre_row.append({int(a): i for i, a in enumerate(wp.pre)})
        pre_symbol.append(wp.pre.tolist())
        term_offset.append(terms_total)
        if width >= 2:
            terms_total += len(wp.pre) * s
        term_rule.append(wp.term_rules.tolist())
        term_split.append(wp.term_split.tolist())
        mix_row.append({int(wp.post[r]): i for i, r in enumerate(wp.closure.mix_rows)})
        source_offset.append(sources_total)
        sources_total += len(wp.closure.mix_rows) * s
    return _BackpointerIndex(spans, pre_row, pre_symbol, term_offset, term_rule, term_split, mix_row, source_offset)


def _fast_backtrace(
    grammar: Grammar, index: _BackpointerIndex, next_hop: list[list[int]], words: list[int], terms: list[int], sources: list[int]
) -> str:
    nonterminals, terminals = grammar.nonterminals, grammar.terminals
    binary = _binary_list(grammar)

    def post_unary(start: int, width: int, symbol: int) -> str:
        mix = index.mix_row[width].get(symbol)
        if mix is None:
            return pre_unary(start, width, symbol)
        source_row = sources[index.source_offset[width] + mix * index.spans[width] + start]
        bottom = index.pre_symbol[width][source_row]
        chain = [symbol]
        while chain[-1] != bottom:
            chain.append(next_hop[chain[-1]][bottom])
        text = pre_unary(start, width, bottom)
        for parent in reversed(chain[:-1]):
            text = f"({nonterminals[parent]} {text})"
        return text

    def pre_unary(start: int, width: int, symbol: int) -> str:
        if width == 1:
            return f"({nonterminals[symbol]} {terminals[words[start]]})"
        row = index.pre_row[width][symbol]
        term = terms[index.term_offset[width] + row * index.spans[width] + start]
        _, left, right = binary[index.term_rule[width][term]]
        split = index.term_split[width][term]
        return f"({nonterminals[symbol]} {post_unary(start, split, left)} {post_unary(start + split, width - split, right)})"

    return post_unary(0, len(words), grammar.start)


@lru_cache(maxsize=16)
def _binary_list(grammar: Grammar) -> list[list[int]]:
    return grammar.binary_rules.tolist()
