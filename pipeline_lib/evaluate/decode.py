"""Decoding a T5 model: T5X's beam search (beam 4, brevity penalty) on the incremental KV cache.

Wu et al. (2022) fine-tune and evaluate with T5X's ``decoding.beam_search`` (``BEAM_SIZE=4``,
``alpha=0.6``; reference: wu2022 §8 shared settings). `beam_search` reproduces its semantics:

* Log-probabilities (``log_softmax`` of float32 logits) accumulate along each hypothesis; only
  beam 0 starts live (the others start at ``NEG_INF``), so the first step expands one prefix.
* Each step keeps the top ``2 * beam_size`` of the ``beam_size * vocab`` one-token extensions, so
  that ``beam_size`` hypotheses stay live even if ``beam_size`` of them end in EOS at once.
* A candidate ending in EOS at step ``i`` (``length = i + 1`` tokens, EOS included) is scored
  ``log_prob / brevity_penalty(alpha, length)`` with ``((5 + length) / 6) ** alpha`` and competes
  for one of ``beam_size`` finished slots; EOS candidates are removed from the live set by adding
  ``NEG_INF`` to their log-probability (T5X's constant -1e7, added rather than assigned).
* Hypotheses still live at ``max_decode_length`` are dropped, unless a batch row finished none:
  then that row returns its live hypotheses with their raw, unpenalised log-probabilities.
* The loop (``lax.while_loop``) stops at ``max_decode_length`` or once, in every row, all
  finished slots are filled and the worst finished score beats the best live log-probability
  divided by the largest brevity penalty (no live hypothesis can then enter the finished set).
  That bound needs ``alpha >= 0``, which is validated (T5X does not check it).

Decisions that differ from T5X only in form, and why:

* Beams are stored and returned **best first** (T5X stores them ascending and callers take
  ``[:, -1]``). ``lax.top_k`` breaks ties towards the lower index, so with previous finished
  hypotheses placed before new candidates a row's finished set and order never change once it is
  terminated -- which keeps batch rows independent of how long the other rows run.
* The cache is gathered with `DecodeCache.take` (a plain ``jnp.take`` over the flat
  ``batch * beam`` axis) instead of T5X's one-hot einsum, which exists for SPMD partitioning.
* The early-stop bound divides by ``brevity_penalty(alpha, max_decode_length)``: T5X uses
  ``max_decode_length + 1`` (its dummy start position), a looser bound. Both are valid, so the
  returned hypotheses are the same; ours may stop a step earlier.
* Tokens after the first EOS are zeroed on output. T5X's finished hypotheses already are; the
  guard only matters for degenerate filler beams (next point).

Filler beams: with a vocabulary smaller than ``2 * beam_size`` (tests only), or when fewer than
``beam_size`` hypotheses finished, T5X fills slots with ``NEG_INF``-scored hypotheses (score
``<= NEG_INF / 2``; unfilled finished slots are all-zero tokens). They sort last and are kept for
fidelity; callers wanting only real hypotheses can drop scores ``<= NEG_INF / 2``.

Greedy decoding (`decode` with ``beam_size=1``) is `pipeline_lib.models.t5.greedy_decode`. It is
not the same as a 1-beam search: beam search also keeps, as a finished candidate, the prefix ended
by EOS whenever EOS is the runner-up token, and may return it if its log-probability (with the
penalty) beats the greedy continuation's.

Everything here is a pure function of ``(graphdef, params, rest)`` and jits once per shape with
``max_decode_length``, ``beam_size``, ``alpha`` and ``eos_id`` static, e.g.
``jax.jit(beam_search, static_argnames=DECODE_STATIC_ARGNAMES)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pipeline_lib.models.t5 import T5, DecodeCache, greedy_decode

Array = jax.Array

# T5X's "effective negative infinity": finite, so masked hypotheses keep an order among
# themselves and arithmetic on them never produces NaN.
NEG_INF = -1.0e7

DECODE_STATIC_ARGNAMES = ("max_decode_length", "beam_size", "alpha", "eos_id")


def brevity_penalty(alpha: float, length: Array | int) -> Array:
    """T5X's length normalisation ``((5 + length) / 6) ** alpha`` (divides log-probabilities)."""
    return jnp.power((5.0 + jnp.asarray(length, jnp.float32)) / 6.0, alpha)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BeamState:
    """Loop carry of `beam_search`. Beam axes are sorted best first."""

    step: Array  # int32 scalar: number of tokens generated so far
    live_logprobs: Array  # [batch, beam] float32
    live_seqs: Array  # [batch, beam, max_len] int32
    finished_scores: Array  # [batch, beam] float32 (penalised)
    finished_seqs: Array  # [batch, beam, max_len] int32
    finished_flags: Array  # [batch, beam] bool: the slot holds a hypothesis that ended in EOS
    cache: DecodeCache  # flat batch * beam rows, row r = (r // beam, r % beam)


def _validate(
    model: T5, encoder_input_tokens: Array, max_decode_length: int, beam_size: int,
    alpha: float, eos_id: int,
) -> None:
    if getattr(encoder_input_tokens, "ndim", None) != 2:
        raise ValueError(
            "encoder_input_tokens: expected a [batch, length] array of token ids, got shape "
            f"{getattr(encoder_input_tokens, 'shape', type(encoder_input_tokens).__name__)}"
        )
    if not jnp.issubdtype(encoder_input_tokens.dtype, jnp.integer):
        raise ValueError(
            f"encoder_input_tokens: expected integer token ids, got {encoder_input_tokens.dtype}"
        )
    checks = [
        ("max_decode_length", max_decode_length, isinstance(max_decode_length, int)
         and max_decode_length >= 1, "a positive int (static under jit)"),
        ("beam_size", beam_size, isinstance(beam_size, int) and beam_size >= 1,
         "a positive int (static under jit)"),
        ("alpha", alpha, isinstance(alpha, (int, float)) and alpha >= 0,
         "a float >= 0 (the early-stop bound assumes the penalty grows with length)"),
        ("eos_id", eos_id, isinstance(eos_id, int) and 0 < eos_id < model.config.vocab_size,
         f"an int in [1, vocab_size={model.config.vocab_size}) (0 is padding)"),
    ]
    for name, value, ok, expected in checks:
        if isinstance(value, bool) or not ok:
            raise ValueError(f"{name}: expected {expected}, got {value!r}")


def _gather(x: Array, indices: Array) -> Array:
    """``x [batch, n, ...]``, ``indices [batch, m]`` -> ``[batch, m, ...]`` along the beam axis."""
    return jax.vmap(lambda row, idx: jnp.take(row, idx, axis=0))(x, indices)


def zero_after_eos(tokens: Array, eos_id: int) -> Array:
    """Replace every token after the first EOS of each row (last axis) with padding 0."""
    is_eos = (tokens == eos_id).astype(jnp.int32)
    eos_before = jnp.cumsum(is_eos, axis=-1) - is_eos  # EOS strictly before this position
    return jnp.where(eos_before > 0, 0, tokens)


def _beam_step(
    model: T5, state: BeamState, *, beam_size: int, alpha: float, eos_id: int
) -> BeamState:
    """Extend every live hypothesis by one token (T5X ``beam_search_loop_body_fn``)."""
    batch, _, max_len = state.live_seqs.shape
    k, step = beam_size, state.step

    # Decoder input: the last generated token (0, T5X's start id, at step 0).
    previous = jnp.take(state.live_seqs, jnp.maximum(step - 1, 0), axis=2)
    previous = jnp.where(step == 0, 0, previous)
    logits, cache = model.decode_step(state.cache, previous.reshape(batch * k))
    vocab = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, k, vocab)
    log_probs = log_probs + state.live_logprobs[:, :, None]

    # Top 2k of all one-token extensions: enough that k stay live even if k end in EOS.
    top_logprobs, top_indices = jax.lax.top_k(log_probs.reshape(batch, k * vocab), 2 * k)
    top_ids = (top_indices % vocab).astype(jnp.int32)
    top_parents = top_indices // vocab
    top_seqs = _gather(state.live_seqs, top_parents).at[:, :, step].set(top_ids)
    newly_finished = top_ids == eos_id

    # Live: the best k extensions that did not end in EOS; their caches follow their parents.
    live_candidates = top_logprobs + newly_finished * NEG_INF
    live_logprobs, keep = jax.lax.top_k(live_candidates, k)
    live_seqs = _gather(top_seqs, keep)
    parents = jnp.take_along_axis(top_parents, keep, axis=1)
    flat_parents = (jnp.arange(batch)[:, None] * k + parents).reshape(batch * k)
    cache = cache.take(flat_parents)

    # Finished: penalised scores of new EOS extensions compete with the previous finished set
    # (previous first, so ties keep the old hypotheses and their order).
    new_scores = top_logprobs / brevity_penalty(alpha, step + 1) + (~newly_finished) * NEG_INF
    scores = jnp.concatenate([state.finished_scores, new_scores], axis=1)
    finished_scores, best = jax.lax.top_k(scores, k)
    finished_seqs = _gather(jnp.concatenate([state.finished_seqs, top_seqs], axis=1), best)
    flags = jnp.concatenate([state.finished_flags, newly_finished], axis=1)
    finished_flags = jnp.take_along_axis(flags, best, axis=1)

    return BeamState(
        step + 1, live_logprobs, live_seqs, finished_scores, finished_seqs, finished_flags, cache
    )


def _search_can_improve(state: BeamState, *, max_len: int, alpha: float) -> Array:
    """False once no live hypothesis can still displace a finished one, in any row."""
    best_live = state.live_logprobs[:, 0] / brevity_penalty(alpha, max_len)
    worst_finished = jnp.where(
        state.finished_flags.all(axis=1), state.finished_scores[:, -1], NEG_INF
    )
    return ~jnp.all(worst_finished > best_live)


def beam_search(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    rest: nnx.State,
    encoder_input_tokens: Array,
    max_decode_length: int,
    *,
    beam_size: int = 4,
    alpha: float = 0.6,
    eos_id: int = 1,
) -> tuple[Array, Array]:
    """T5X beam search: ``(tokens [b, beam, L] int32, scores [b, beam] float32)``, best first.

    ``scores`` are the summed token log-probabilities (EOS included) divided by
    ``brevity_penalty(alpha, length)``; positions after EOS are 0. A row in which no hypothesis
    reached EOS within ``L = max_decode_length`` returns its live hypotheses and raw
    log-probabilities instead. See the module docstring for the exact semantics.
    """
    model: T5 = nnx.merge(graphdef, params, rest)
    _validate(model, encoder_input_tokens, max_decode_length, beam_size, alpha, eos_id)
    batch, k, max_len = encoder_input_tokens.shape[0], beam_size, max_decode_length

    cache = model.init_cache(encoder_input_tokens, max_len)  # encode once per row ...
    cache = cache.take(jnp.repeat(jnp.arange(batch), k))  # ... then copy it to every beam
    start_logprobs = jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32)
    empty_seqs = jnp.zeros((batch, k, max_len), jnp.int32)
    state = BeamState(
        step=jnp.zeros((), jnp.int32),
        live_logprobs=jnp.tile(start_logprobs, (batch, 1)),
        live_seqs=empty_seqs,
        finished_scores=jnp.full((batch, k), NEG_INF, jnp.float32),
        finished_seqs=empty_seqs,
        finished_flags=jnp.zeros((batch, k), bool),
        cache=cache,
    )

    def cond(state: BeamState) -> Array:
        not_done = state.step < max_len
        return not_done & _search_can_improve(state, max_len=max_len, alpha=alpha)

    def body(state: BeamState) -> BeamState:
        return _beam_step(model, state, beam_size=k, alpha=alpha, eos_id=eos_id)

    final = jax.lax.while_loop(cond, body, state)

    any_finished = final.finished_flags.any(axis=1)
    tokens = jnp.where(any_finished[:, None, None], final.finished_seqs, final.live_seqs)
    scores = jnp.where(any_finished[:, None], final.finished_scores, final.live_logprobs)
    return zero_after_eos(tokens, eos_id), scores


def decode(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    rest: nnx.State,
    encoder_input_tokens: Array,
    max_decode_length: int,
    *,
    beam_size: int = 1,
    alpha: float = 0.6,
    eos_id: int = 1,
) -> Array:
    """Predicted target ids ``[b, max_decode_length]`` int32, 0 after EOS.

    ``beam_size == 1`` is greedy (`greedy_decode`; ``alpha`` unused), otherwise the best
    hypothesis of `beam_search`.
    """
    if beam_size == 1:
        model: T5 = nnx.merge(graphdef, params, rest)
        _validate(model, encoder_input_tokens, max_decode_length, beam_size, alpha, eos_id)
        return greedy_decode(
            graphdef, params, rest, encoder_input_tokens, max_decode_length, eos_id=eos_id
        )
    tokens, _ = beam_search(
        graphdef, params, rest, encoder_input_tokens, max_decode_length,
        beam_size=beam_size, alpha=alpha, eos_id=eos_id,
    )
    return tokens[:, 0]


def strip_after_eos(tokens: Array | np.ndarray | Sequence[Sequence[int]], eos_id: int = 1
                    ) -> list[list[int]]:
    """Host side: each row's ids before its first EOS, without padding (0).

    Matches what seqio's ``Vocabulary.decode`` keeps: it truncates at EOS, and SentencePiece
    drops the pad control id wherever it occurs.
    """
    rows = np.asarray(tokens)
    if rows.ndim != 2:
        raise ValueError(f"tokens: expected a [batch, length] array, got shape {rows.shape}")
    out = []
    for row in rows.tolist():
        if eos_id in row:
            row = row[: row.index(eos_id)]
        out.append([int(t) for t in row if t != 0])
    return out


__all__ = [
    "DECODE_STATIC_ARGNAMES",
    "NEG_INF",
    "BeamState",
    "beam_search",
    "brevity_penalty",
    "decode",
    "strip_after_eos",
    "zero_after_eos",
]
