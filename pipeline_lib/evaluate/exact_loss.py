"""A model's single-mask MLM loss against the exact PCFG conditionals (liu2023 §3).

The quantity is the released ``calculate_loss.py``'s (§3.2), with its bugs fixed: every word
position t of every evaluation sentence ``[CLS] w_1 .. w_n [SEP]`` is masked once, one masked
position per row, and the model is scored by its cross-entropy against the true conditional::

    loss_t = - sum_{w in terminals} p*(w | x_-t) log softmax_{full vocabulary}(logits_t)[w]

averaged over all positions of all sentences (token-weighted). As in the reference the softmax
covers the model's whole vocabulary and is *not* renormalised over the terminals, so mass the
model puts on [CLS], [PAD] or other non-terminals counts against it. A perfect model therefore
scores exactly the optimal loss (the token-averaged conditional entropy in ``metrics.json``),
every other model more (Gibbs' inequality), and ``gap = model_loss - optimal_loss >= 0`` up to
float32 rounding of the stored conditionals.

Two deliberate departures from the released script: no ``+ 1e-12`` inside the log and no
dropping of infinite values. Log-probabilities come from ``log_softmax`` (finite for finite
logits), terms with ``p* = 0`` contribute 0 (0 log 0 = 0), and a model that gives probability
exactly 0 to a possible word has an infinite loss, which is reported as such.

Inputs are a `pcfg.dataset.build_optimal_loss` directory (``input_ids.npy``, ``input_mask.npy``,
``conditionals.npy`` ragged over ``offsets.npy``, ``conditional_vocab_ids.npy``,
``metrics.json``, the [MASK] id in ``meta.json``) and a ``logits_fn(params, input_ids,
input_mask, masked_positions) -> [rows, vocab]``: logits at one masked position per row
(`bert_masked_logits_fn` adapts the project's BERT). The rows of `masked_copies` are in the
order of the rows of ``conditionals.npy`` (sentence-major, position ascending), so row r is
scored against conditional row r. The model runs in fixed-size batches (the last one padded),
so it compiles once.

The standard errors treat sentences as independent draws (delta method for a ratio of sums,
as the optimal loss's). ``gap_stderr`` is the paired one, from per-sentence differences
between the model's loss and the conditional entropy: near saturation it is much smaller than
either loss's own standard error, which is what comparing two models needs.

`lookup_table_features` is the paper's "lookup table" model (§3.5): its representation of a
sentence is the exact conditional distribution at every word position, to be read by a
linear probe. Layout: position-major like `Bert.probe_features`, feature ``t * T + w`` is
p*(w | x_-t) at word t (0-based, i.e. input position t + 1); positions past the sentence are 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pipeline_lib.data import store
from pipeline_lib.pcfg.conditionals import ratio_standard_error as _ratio_standard_error

LogitsFn = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]
"""``(params, input_ids [rows, L], input_mask [rows, L], masked_positions [rows]) -> [rows, V]``."""


# Conditional rows read from the (memory-mapped) file at a time: bounded host memory.
HOST_CHUNK_ROWS = 65536


class ExactLossError(ValueError):
    """Malformed evaluation inputs or a model whose outputs do not fit them."""


# ---------------------------------------------------------------------------------------------
# Pure pieces.


def sentence_lengths(input_mask: np.ndarray) -> np.ndarray:
    """Words per row of ``[CLS] w_1 .. w_n [SEP] [PAD]..`` inputs: real tokens minus 2.

    Raises `ExactLossError` if a row's real tokens are not a prefix or hold no word.
    """
    mask = np.asarray(input_mask) != 0
    if mask.ndim != 2:
        raise ExactLossError(f"input_mask must be 2-D [sentences, length], got shape {mask.shape}")
    real = mask.sum(axis=1)
    prefix = np.arange(mask.shape[1])[None, :] < real[:, None]
    bad = np.flatnonzero((mask != prefix).any(axis=1) | (real < 3))
    if len(bad):
        row = int(bad[0])
        raise ExactLossError(
            f"input_mask row {row}: real tokens must be a prefix [CLS] w_1 .. w_n [SEP] with "
            f"n >= 1, got {mask[row].astype(int).tolist()}"
        )
    return (real - 2).astype(np.int64)


def masked_copies(
    input_ids: np.ndarray, input_mask: np.ndarray, mask_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One row per word of every sentence, with that word replaced by ``mask_id``.

    Returns ``(ids [R, L], mask [R, L], positions [R], row_sentence [R])`` with ``R`` the total
    number of words: sentence i of n words gives rows for input positions ``1 .. n`` (its words;
    [CLS] at 0 and [SEP] at n + 1 are never masked), in order, so row ``offsets[i] + t`` masks
    word t, the order of ``conditionals.npy``.
    """
    input_ids = np.asarray(input_ids)
    if input_ids.shape != np.shape(input_mask):
        raise ExactLossError(
            f"input_ids shape {input_ids.shape} != input_mask shape {np.shape(input_mask)}"
        )
    lengths = sentence_lengths(input_mask)
    row_sentence = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    positions = (np.arange(len(row_sentence)) - starts[row_sentence] + 1).astype(np.int32)
    ids = input_ids[row_sentence].copy()
    ids[np.arange(len(row_sentence)), positions] = mask_id
    mask = np.asarray(input_mask)[row_sentence].copy()
    return ids, mask, positions, row_sentence.astype(np.int64)


def expected_cross_entropy(conditionals: np.ndarray, log_probs: np.ndarray) -> np.ndarray:
    """Per row ``-sum_w p(w) log q(w)`` in float64, with ``0 log q = 0`` even for ``q = 0``."""
    p = np.asarray(conditionals, dtype=np.float64)
    log_q = np.asarray(log_probs, dtype=np.float64)
    return -np.where(p > 0, p * np.where(p > 0, log_q, 0.0), 0.0).sum(axis=-1)


def lookup_table_features(
    conditionals: np.ndarray, offsets: np.ndarray, max_len: int
) -> np.ndarray:
    """``[n_sentences, max_len * T]`` float32: the exact conditionals at every word position.

    Feature ``t * T + w`` of sentence i is ``conditionals[offsets[i] + t, w]`` for its words
    ``t < n_i``, zero for the padding positions ``n_i <= t < max_len``.
    """
    conditionals = np.asarray(conditionals)
    offsets = np.asarray(offsets, dtype=np.int64)
    if conditionals.ndim != 2:
        raise ExactLossError(
            f"conditionals must be 2-D [tokens, terminals], got {conditionals.shape}"
        )
    _check_offsets(offsets, len(conditionals), "offsets")
    lengths = np.diff(offsets)
    if len(lengths) and lengths.max() > max_len:
        i = int(np.argmax(lengths))
        raise ExactLossError(
            f"sentence {i} has {int(lengths[i])} words, more than max_len {max_len}"
        )
    n_terminals = conditionals.shape[1]
    features = np.zeros((len(lengths), max_len, n_terminals), np.float32)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    features[rows, np.arange(len(rows)) - offsets[rows]] = conditionals
    return features.reshape(len(lengths), max_len * n_terminals)


def _check_offsets(offsets: np.ndarray, n_rows: int, what: str) -> None:
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or (np.diff(offsets) < 0).any():
        raise ExactLossError(f"{what}: must be a non-decreasing 1-D array starting at 0")
    if offsets[-1] != n_rows:
        raise ExactLossError(f"{what}: last offset {int(offsets[-1])} != {n_rows} conditional rows")


# ---------------------------------------------------------------------------------------------
# The evaluation.


def bert_masked_logits_fn(graphdef: nnx.GraphDef) -> LogitsFn:
    """A `LogitsFn` for the project's BERT: ``params`` is its ``nnx.State`` (``nnx.split``)."""
    from pipeline_lib.models.bert import bert_mlm_logits

    def logits_fn(params, input_ids, input_mask, masked_positions):
        logits = bert_mlm_logits(
            graphdef, params, input_ids, input_mask, masked_positions=masked_positions[:, None]
        )
        return logits[:, 0]

    return logits_fn


def load_optimal_loss_dir(directory: str | Path) -> dict[str, Any]:
    """The arrays and numbers of a `build_optimal_loss` directory, checked for consistency."""
    directory = Path(directory)
    meta = store.read_meta(directory)
    if meta.get("kind") != "pcfg_optimal_loss":
        raise ExactLossError(
            f"{directory / 'meta.json'}: kind {meta.get('kind')!r}, expected 'pcfg_optimal_loss'"
        )

    def load(name: str, mmap: bool = False) -> np.ndarray:
        path = directory / name
        if not path.exists():
            raise ExactLossError(f"{path}: missing")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)

    data = {
        "input_ids": load("input_ids.npy"),
        "input_mask": load("input_mask.npy"),
        "conditionals": load("conditionals.npy", mmap=True),
        "offsets": load("offsets.npy").astype(np.int64),
        "vocab_ids": load("conditional_vocab_ids.npy").astype(np.int64),
    }
    metrics_path = directory / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text())
        data["optimal_loss"] = float(metrics["expected_cross_entropy_per_token"])
    except FileNotFoundError:
        raise ExactLossError(f"{metrics_path}: missing") from None
    except json.JSONDecodeError as error:
        raise ExactLossError(f"{metrics_path}: line {error.lineno}: not valid JSON") from None
    except (KeyError, TypeError, ValueError):
        raise ExactLossError(
            f"{metrics_path}: no number 'expected_cross_entropy_per_token'"
        ) from None
    try:
        data["mask_id"] = int(meta["vocab"]["mask_id"])
    except (KeyError, TypeError, ValueError):
        raise ExactLossError(f"{directory / 'meta.json'}: no vocab.mask_id") from None

    conditionals = data["conditionals"]
    if conditionals.ndim != 2 or conditionals.shape[1] != len(data["vocab_ids"]):
        raise ExactLossError(
            f"{directory / 'conditionals.npy'}: shape {conditionals.shape}, expected "
            f"[tokens, {len(data['vocab_ids'])}] (one column per conditional_vocab_ids entry)"
        )
    _check_offsets(data["offsets"], len(conditionals), str(directory / "offsets.npy"))
    try:
        lengths = sentence_lengths(data["input_mask"])
    except ExactLossError as error:
        raise ExactLossError(f"{directory / 'input_mask.npy'}: {error}") from None
    if len(lengths) != len(data["offsets"]) - 1 or (lengths != np.diff(data["offsets"])).any():
        raise ExactLossError(
            f"{directory}: sentence lengths of input_mask.npy disagree with offsets.npy"
        )
    return data


def exact_mlm_loss(
    logits_fn: LogitsFn, params: Any, optimal_loss_dir: str | Path, *, batch_size: int
) -> dict[str, float | int]:
    """The model's exact single-mask MLM loss on an optimal-loss directory (module docstring).

    Returns ``model_loss``, ``optimal_loss`` (from ``metrics.json``), ``gap``, ``stderr`` (of
    ``model_loss``), ``gap_stderr`` (paired), ``num_tokens``, ``num_sentences``; losses in nats
    per token.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ExactLossError(f"batch_size: {batch_size!r} must be a positive integer")
    data = load_optimal_loss_dir(optimal_loss_dir)
    ids, mask, positions, row_sentence = masked_copies(
        data["input_ids"], data["input_mask"], data["mask_id"]
    )
    log_probs = _terminal_log_probs(
        logits_fn, params, ids, mask, positions, data["vocab_ids"], batch_size
    )

    conditionals = data["conditionals"]
    n_rows, n_sentences = len(ids), len(data["offsets"]) - 1
    row_loss = np.empty(n_rows)
    row_entropy = np.empty(n_rows)
    for start in range(0, n_rows, HOST_CHUNK_ROWS):
        chunk = np.asarray(conditionals[start : start + HOST_CHUNK_ROWS], dtype=np.float64)
        stop = start + len(chunk)
        row_loss[start:stop] = expected_cross_entropy(chunk, log_probs[start:stop])
        row_entropy[start:stop] = expected_cross_entropy(
            chunk, np.log(np.where(chunk > 0, chunk, 1))
        )
    # Row losses are >= 0 (log q <= 0), so an infinite one makes its sentence's sum inf, not nan.
    loss_sums = np.bincount(row_sentence, weights=row_loss, minlength=n_sentences)
    entropy_sums = np.bincount(row_sentence, weights=row_entropy, minlength=n_sentences)
    lengths = np.diff(data["offsets"]).astype(np.float64)
    model_loss = float(loss_sums.sum() / lengths.sum())
    finite = math.isfinite(model_loss)
    gap_per_token = (loss_sums.sum() - entropy_sums.sum()) / lengths.sum()
    return {
        "model_loss": model_loss,
        "optimal_loss": data["optimal_loss"],
        "gap": model_loss - data["optimal_loss"],
        "stderr": _ratio_standard_error(loss_sums, lengths, model_loss) if finite else math.nan,
        "gap_stderr": (
            _ratio_standard_error(loss_sums - entropy_sums, lengths, gap_per_token)
            if finite
            else math.nan
        ),
        "num_tokens": int(lengths.sum()),
        "num_sentences": int(n_sentences),
    }


def _terminal_log_probs(
    logits_fn: LogitsFn,
    params: Any,
    ids: np.ndarray,
    mask: np.ndarray,
    positions: np.ndarray,
    vocab_ids: np.ndarray,
    batch_size: int,
) -> np.ndarray:
    """``[rows, T]`` float32 full-vocabulary log-softmax of the model, at the terminals' ids.

    Runs ``logits_fn`` under one ``jax.jit`` on ``batch_size`` rows at a time (the last batch
    padded with copies of its first row, whose results are dropped): one compilation.
    """
    batch_size = min(batch_size, len(ids))  # no padding beyond the data itself
    terminal_ids = jnp.asarray(vocab_ids, jnp.int32)

    def batch_log_probs(params, ids, mask, positions):
        logits = logits_fn(params, ids, mask, positions)
        log_q = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        return jnp.take(log_q, terminal_ids, axis=1)

    shaped = lambda a: jax.ShapeDtypeStruct((batch_size,) + a.shape[1:], a.dtype)
    out = jax.eval_shape(logits_fn, params, shaped(ids), shaped(mask), shaped(positions))
    if out.ndim != 2 or out.shape[0] != batch_size:
        raise ExactLossError(
            f"logits_fn must return logits [rows, vocab] at the masked positions; for "
            f"{batch_size} rows it returns shape {tuple(out.shape)}"
        )
    if out.shape[1] <= int(vocab_ids.max()):
        raise ExactLossError(
            f"logits_fn returns {out.shape[1]} vocabulary entries, but conditional_vocab_ids "
            f"reaches id {int(vocab_ids.max())}: the model's vocabulary does not match the data's"
        )
    step = jax.jit(batch_log_probs)
    result = np.empty((len(ids), len(vocab_ids)), np.float32)
    for start in range(0, len(ids), batch_size):
        stop = min(start + batch_size, len(ids))
        take = np.arange(start, start + batch_size)
        take[take >= stop] = start  # pad the last batch: same shape, same compiled program
        out = step(
            params, jnp.asarray(ids[take]), jnp.asarray(mask[take]), jnp.asarray(positions[take])
        )
        result[start:stop] = np.asarray(out)[: stop - start]
    return result


__all__ = [
    "ExactLossError",
    "LogitsFn",
    "bert_masked_logits_fn",
    "exact_mlm_loss",
    "expected_cross_entropy",
    "load_optimal_loss_dir",
    "lookup_table_features",
    "masked_copies",
    "sentence_lengths",
]
