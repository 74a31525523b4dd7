"""Downstream tasks A, B and C with the released label semantics (reference §2).

All three take an argmax of **inside** probabilities (maximum likelihood: no
root prior, no outside/context term):

* A: over the start symbol's unary children S_i of I(S_i, 0, n); label = rank of
  S_i in the sorted list of those children (released: S1 -> 0 ... S9 -> 8).
* B: over every nonterminal except the start symbol of I(A, 0, 4); label = the
  nonterminal's index in the sorted list of *all* nonterminals (released:
  A1_0..A1_9 = 0-9, ..., A4_* = 30-39, S = 40, S1..S9 = 41-49).
* C: the same for the span [0, 2).

Ties (including "every inside probability is 0") go to the candidate declared
first in the grammar file, as the original ``max`` over a grammar-ordered dict
did (released: S1).  Downstream sentences are kept when
``min_length < len < max_length`` (original: 4 < len < 32).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from pipeline_lib.pcfg import chart
from pipeline_lib.files import atomic_open
from pipeline_lib.pcfg.errors import PcfgError
from pipeline_lib.pcfg.grammar import Grammar
from pipeline_lib.pcfg.inside import DEFAULT_BATCH_SIZE, fast_batches
from pipeline_lib.pcfg.sample import (
    DEFAULT_LENGTH_LIMIT,
    STREAM_DOWNSTREAM_TRAIN,
    STREAM_DOWNSTREAM_VALIDATION,
    decode_sentence,
    sample_sentences,
)

Task = Literal["A", "B", "C"]
TASKS: tuple[Task, ...] = ("A", "B", "C")
# Span end (exclusive) labelled by each task; None = the whole sentence.
TASK_SPAN_END: dict[str, int | None] = {"A": None, "B": 4, "C": 2}
DOWNSTREAM_MIN_LENGTH_EXCLUSIVE = 4
DOWNSTREAM_MAX_LENGTH_EXCLUSIVE = DEFAULT_LENGTH_LIMIT


@dataclass(frozen=True)
class TaskLabelSpace:
    """Which nonterminals compete for a task and the label id of each."""

    candidates: np.ndarray  # nonterminal indices in declaration (tie-break) order
    label_ids: np.ndarray  # label id of each candidate


def task_label_space(grammar: Grammar, task: Task) -> TaskLabelSpace:
    if task not in TASKS:
        raise PcfgError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if task == "A":
        children = grammar.start_unary_children()
        if not children:
            raise PcfgError(f"task A needs unary rules {grammar.start_symbol} -> S_i; the grammar has none")
        rank = {a: r for r, a in enumerate(sorted(children, key=lambda a: grammar.nonterminals[a]))}
        return TaskLabelSpace(np.asarray(children), np.asarray([rank[a] for a in children]))
    candidates = np.asarray([a for a in grammar.declaration_order if a != grammar.start])
    return TaskLabelSpace(candidates, candidates.copy())


def label_names(grammar: Grammar, task: Task) -> dict[int, str]:
    """Label id -> nonterminal name."""
    space = task_label_space(grammar, task)
    return {int(label): grammar.nonterminals[int(a)] for a, label in zip(space.candidates, space.label_ids)}


def labels_from_log_charts(grammar: Grammar, log_charts: Sequence[np.ndarray], task: Task) -> np.ndarray:
    """Labels from per-sentence ``(n, n, N)`` log-inside charts (see module docstring)."""
    space = task_label_space(grammar, task)
    span_end = TASK_SPAN_END[task]
    labels = np.empty(len(log_charts), dtype=np.int64)
    for number, log_chart in enumerate(log_charts):
        n = log_chart.shape[0]
        end = n if span_end is None else span_end
        if end > n:
            raise PcfgError(f"sentence {number + 1} has {n} words; task {task} labels the span [0, {end})")
        scores = log_chart[0, end - 1, space.candidates]
        labels[number] = space.label_ids[int(np.argmax(scores))]  # argmax keeps the first maximum
    return labels


def task_labels(
    grammar: Grammar,
    sentences: Sequence[np.ndarray],
    task: Task,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    method: chart.InsideMethod = "dense",
) -> np.ndarray:
    """Labels of ``sentences`` (terminal-id arrays) for ``task``."""
    task_label_space(grammar, task)  # fail on a bad task before any computation
    span_end = TASK_SPAN_END[task]
    # Only the labelled span matters, so parse just its prefix: cheaper, and the
    # inside score of [0, end) does not depend on later words.
    inputs = list(sentences) if span_end is None else [s[:span_end] for s in sentences]
    for number, sentence in enumerate(inputs):
        if span_end is not None and len(sentence) < span_end:
            raise PcfgError(f"sentence {number + 1} has {len(sentence)} words; task {task} labels the span [0, {span_end})")
    # Only the cells [0, end) are needed: compute the chart but read back just
    # I(., 0, w) for every w (what labels_from_log_charts reads from the full chart).
    space = task_label_space(grammar, task)
    labels = np.empty(len(inputs), dtype=np.int64)
    for batch, (_, prefix) in fast_batches(grammar, inputs, batch_size, "prefix", method):
        rows = np.flatnonzero(batch.indices >= 0)
        scores = prefix[rows, batch.lengths[rows] - 1][:, space.candidates]  # (R, candidates)
        labels[batch.indices[rows]] = space.label_ids[np.argmax(scores, axis=1)]  # argmax keeps the first maximum
    return labels


def is_downstream_length(length: int) -> bool:
    return DOWNSTREAM_MIN_LENGTH_EXCLUSIVE < length < DOWNSTREAM_MAX_LENGTH_EXCLUSIVE


def draw_downstream_sentences(grammar: Grammar, n: int, seed: int, split: Literal["train", "validation"]) -> list[np.ndarray]:
    """``n`` sentences with ``4 < len < 32`` from the split's own random stream.

    Train and validation use different streams of the same seed, so they are
    independent draws (like the original's two separate runs); a sentence may
    occur in both, as it could in the original.
    """
    stream = STREAM_DOWNSTREAM_TRAIN if split == "train" else STREAM_DOWNSTREAM_VALIDATION
    kept: list[np.ndarray] = []
    drawn = 0
    while len(kept) < n:
        # Oversample a little: ~95% of released-grammar sentences pass the filter.
        chunk = max(64, int((n - len(kept)) * 1.2))
        batch = sample_sentences(grammar, chunk, seed, start_index=drawn, stream=stream)
        drawn += chunk
        kept.extend(s for s in batch if is_downstream_length(len(s)))
        if drawn > 1000 * max(n, 1) and not kept:
            raise PcfgError(f"the grammar produces no sentences with {DOWNSTREAM_MIN_LENGTH_EXCLUSIVE} < length < 32")
    return kept[:n]


def write_label_csv(path: str | Path, grammar: Grammar, sentences: Sequence[np.ndarray], labels: np.ndarray) -> None:
    """Atomically write the original ``text,label`` CSV (header, then one row per sentence)."""
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "label"])
        for sentence, label in zip(sentences, labels):
            writer.writerow([" ".join(decode_sentence(grammar, sentence)), int(label)])
