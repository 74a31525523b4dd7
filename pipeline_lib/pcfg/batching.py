"""Turning sentences into padded, length-bucketed batches for the chart algorithms.

Sentences are sorted by length and padded to a multiple of ``length_multiple``
so JAX compiles one program per (batch size, padded length) pair instead of one
per distinct length.  The batch size is fixed (short batches are filled with
dummy rows) for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np

from pipeline_lib.files import text_problem
from pipeline_lib.pcfg.errors import InputFormatError, UnknownWordError
from pipeline_lib.pcfg.grammar import Grammar

UNKNOWN_WORD_ID = -1
OnUnknown = Literal["error", "flag"]


@dataclass(frozen=True)
class PaddedBatch:
    """``ids[b, t]`` is a terminal id, ``UNKNOWN_WORD_ID`` for unknown words, or 0 past ``lengths[b]``."""

    indices: np.ndarray  # (B,) positions in the caller's sentence list; -1 for dummy rows
    ids: np.ndarray  # (B, n_pad) int32
    lengths: np.ndarray  # (B,) int32, >= 1


def read_sentences(path: str | Path) -> list[list[str]]:
    """Whitespace-tokenised sentences, one per line, so sentence k is line k.

    A blank line is an error (the original packed sentences of a "document"
    between blank lines; here every line is its own example).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputFormatError(f"{path}: cannot read sentences: {error.strerror}") from error
    problem = text_problem(data)
    if problem is not None:
        raise InputFormatError(f"{path}:{problem[0]}: {problem[1]}")
    lines = data.decode("utf-8").splitlines()
    sentences = [line.split() for line in lines]
    for number, words in enumerate(sentences, start=1):
        if not words:
            raise InputFormatError(f"{path}:{number}: empty line; expected one sentence per line")
    return sentences


def encode_sentences(
    grammar: Grammar, sentences: Sequence[Sequence[str]], on_unknown: OnUnknown = "error"
) -> tuple[list[np.ndarray], np.ndarray]:
    """Words to terminal ids.

    Returns the id arrays and a boolean array ``has_unknown``.  With
    ``on_unknown="error"`` an unknown word raises :class:`UnknownWordError`
    naming the sentence (1-based) and the word; with ``"flag"`` it becomes
    ``UNKNOWN_WORD_ID``, which the chart algorithms treat as a word no
    nonterminal emits (probability exactly zero, never NaN).
    """
    index = grammar.terminal_index
    encoded, has_unknown = [], np.zeros(len(sentences), dtype=bool)
    for number, words in enumerate(sentences):
        if not words:
            raise InputFormatError(f"sentence {number + 1} is empty")
        ids = np.fromiter((index.get(w, UNKNOWN_WORD_ID) for w in words), dtype=np.int32, count=len(words))
        if (ids == UNKNOWN_WORD_ID).any():
            if on_unknown == "error":
                word = words[int(np.argmax(ids == UNKNOWN_WORD_ID))]
                raise UnknownWordError(f"sentence {number + 1}: word {word!r} is not a terminal of the grammar")
            has_unknown[number] = True
        encoded.append(ids)
    return encoded, has_unknown


def padded_length(length: int, length_multiple: int) -> int:
    return -(-length // length_multiple) * length_multiple


def iterate_batches(
    sentences: Sequence[np.ndarray], batch_size: int, length_multiple: int = 4
) -> Iterator[PaddedBatch]:
    """Length-sorted batches of exactly ``batch_size`` rows covering every sentence once."""
    if batch_size < 1 or length_multiple < 1:
        raise ValueError("batch_size and length_multiple must be >= 1")
    lengths = np.asarray([len(s) for s in sentences], dtype=np.int32)
    order = np.argsort(lengths, kind="stable")
    for first in range(0, len(order), batch_size):
        chosen = order[first : first + batch_size]
        n_pad = padded_length(int(lengths[chosen].max()), length_multiple)
        ids = np.zeros((batch_size, n_pad), dtype=np.int32)
        batch_lengths = np.ones(batch_size, dtype=np.int32)
        indices = np.full(batch_size, -1, dtype=np.int64)
        for row, sentence_index in enumerate(chosen):
            sentence = sentences[sentence_index]
            ids[row, : len(sentence)] = sentence
            batch_lengths[row] = len(sentence)
            indices[row] = sentence_index
        yield PaddedBatch(indices=indices, ids=ids, lengths=batch_lengths)


def iterate_length_buckets(
    sentences: Sequence[np.ndarray], batch_size: int, length_multiple: int = 4
) -> Iterator[PaddedBatch]:
    """Like :func:`iterate_batches`, but every batch holds one padded-length bucket only.

    Sentences are grouped by their length rounded up to ``length_multiple`` and
    each group is cut into batches of exactly ``batch_size`` rows (the last one
    filled with dummy rows), so no sentence is padded beyond its own bucket and
    there is still one compiled shape per padded length.
    """
    if batch_size < 1 or length_multiple < 1:
        raise ValueError("batch_size and length_multiple must be >= 1")
    lengths = np.asarray([len(s) for s in sentences], dtype=np.int32)
    padded = -(-lengths // length_multiple) * length_multiple
    order = np.lexsort((lengths, padded))
    boundaries = np.flatnonzero(np.diff(padded[order])) + 1
    for group in np.split(order, boundaries) if len(order) else []:
        n_pad = int(padded[group[0]])
        for first in range(0, len(group), batch_size):
            chosen = group[first : first + batch_size]
            ids = np.zeros((batch_size, n_pad), dtype=np.int32)
            batch_lengths = np.ones(batch_size, dtype=np.int32)
            indices = np.full(batch_size, -1, dtype=np.int64)
            for row, sentence_index in enumerate(chosen):
                sentence = sentences[sentence_index]
                ids[row, : len(sentence)] = sentence
            batch_lengths[: len(chosen)] = lengths[chosen]
            indices[: len(chosen)] = chosen
            yield PaddedBatch(indices=indices, ids=ids, lengths=batch_lengths)
