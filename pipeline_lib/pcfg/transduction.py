"""Seq2seq downstream tasks derived from the PCFG's Viterbi trees (offline, seeded).

Wu et al.'s finding (synthetic pre-training transfers to downstream seq2seq tasks) needs
downstream tasks where a pre-trained encoder-decoder *can* help: tasks whose output is built
from the input by copying, under a rule the model must learn. Classifying a sentence (tasks
A/B/C) is not one of them (the laptop tables showed no transfer there). Each task here maps a
sentence to a sequence of its own words, rearranged at the **top-level split of its Viterbi
tree** (the root's two constituents: S -> S_i -> A B in the generated grammars), so the output
is "copy, with a jump whose position only the syntax determines":

* ``swap``: ``A B -> B A`` (the two top-level constituents exchanged): copy the second
  constituent first, then jump back to the start;
* ``split``: ``A B -> A | B`` (a separator inserted at the split): copy, and mark the boundary.

Neither is one of the 18 pre-training tasks (which act on positions and values, never on a
grammar's constituents). The split point is the most likely parse's, so a sentence with two
equally likely parses follows the one the Viterbi search returns (deterministic).
"""

from __future__ import annotations

from collections.abc import Sequence

SEPARATOR = "|"
TASKS = {
    "swap": "A B -> B A: the top-level constituents of the Viterbi tree exchanged",
    "split": "A B -> A | B: a separator inserted between the top-level constituents",
}


def top_level_split(tree) -> tuple[list[str], list[str]]:
    """The words of the first binary node's two children (unary chains above it skipped);
    `tree` is a bracketed string (`pcfg.viterbi`) or an `nltk.Tree`."""
    from nltk import Tree

    node = tree if isinstance(tree, Tree) else Tree.fromstring(tree)
    while isinstance(node, Tree) and len(node) == 1 and isinstance(node[0], Tree):
        node = node[0]
    if not isinstance(node, Tree) or len(node) != 2:
        raise ValueError(f"tree has no binary top-level split: {tree[:200]}")
    left, right = node
    return _leaves(left), _leaves(right)


def _leaves(node) -> list[str]:
    from nltk import Tree

    return node.leaves() if isinstance(node, Tree) else [node]


def transduce(task: str, left: Sequence[str], right: Sequence[str]) -> list[str]:
    """The target words of `task` for a sentence split into `left` + `right`."""
    if task == "swap":
        return [*right, *left]
    if task == "split":
        return [*left, SEPARATOR, *right]
    raise ValueError(f"unknown transduction task {task!r}; allowed: {', '.join(TASKS)}")
