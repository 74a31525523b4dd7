"""T5 decoding (pipeline_lib.evaluate.decode): T5X beam search checked against brute force."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pipeline_lib.evaluate.decode import (
    DECODE_STATIC_ARGNAMES,
    NEG_INF,
    beam_search,
    brevity_penalty,
    decode,
    strip_after_eos,
    zero_after_eos,
)
from pipeline_lib.models import (
    T5,
    T5Config,
    flat_params,
    greedy_decode,
    load_flat_params,
    shift_right,
    split_model,
    t5_forward,
)

Array = jax.Array
EOS = 1
TINY = T5Config(
    vocab_size=5, d_model=16, num_heads=2, head_dim=8, d_ff=32,
    num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0,
)
ENC_SHAPE = (2, 4)

search = jax.jit(beam_search, static_argnames=DECODE_STATIC_ARGNAMES)
greedy = jax.jit(greedy_decode, static_argnames=("max_decode_length", "eos_id"))
forward = jax.jit(t5_forward)


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def random_model(cfg: T5Config, seed: int, *, peak: float = 1.0, edit=None):
    """``(graphdef, params, rest)`` with N(0, 0.3) weights from numpy (no per-op compiles).

    ``peak`` multiplies ``decoder_norm/scale``, which feeds only the logits: it scales every
    logit, making the next-token distributions peaky. ``edit(flat)`` may change weights further.
    """
    model = nnx.eval_shape(lambda: T5(cfg, rngs=nnx.Rngs(params=0)))
    rng = np.random.default_rng(seed)
    flat = {k: rng.normal(0, 0.3, v.shape) for k, v in flat_params(model).items()}
    flat["decoder/decoder_norm/scale"] = np.full(cfg.d_model, peak)
    if edit is not None:
        edit(flat)
    load_flat_params(model, flat)
    return split_model(model)


def encoder_tokens(seed: int, shape=ENC_SHAPE, vocab: int = TINY.vocab_size) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, vocab, shape, dtype=np.int32)


def brute_force(graph, enc_row: np.ndarray, vocab: int, length: int, alpha: float):
    """Every hypothesis up to ``length`` tokens, scored from teacher-forced log-probs.

    Returns ``(finished, unfinished, next_log_probs)``: dicts from the output row (zero-padded
    to ``length``) to its score -- ``log p / brevity_penalty(alpha, n)`` for a hypothesis
    ending in EOS after n tokens; the raw log-probability for the ``length``-token hypotheses
    without EOS -- and from every prefix (a tuple) to the next token's log-probs ``[vocab]``.
    """
    seqs = np.array(list(itertools.product(range(vocab), repeat=length)), np.int32)
    enc = np.repeat(enc_row[None], len(seqs), axis=0)
    logits = forward(*graph, enc, shift_right(jnp.asarray(seqs)))
    log_probs = np.asarray(jax.nn.log_softmax(logits), np.float64)
    prefix = np.cumsum(np.take_along_axis(log_probs, seqs[..., None], -1)[..., 0], axis=1)
    finished, unfinished, next_log_probs = {}, {}, {}
    for seq, cum, lp in zip(seqs, prefix, log_probs):
        for j in range(length):
            next_log_probs[tuple(seq[:j].tolist())] = lp[j]
        eos = np.flatnonzero(seq == EOS)
        if eos.size:
            n = int(eos[0]) + 1
            row = tuple(seq[:n].tolist()) + (0,) * (length - n)
            finished[row] = float(cum[n - 1]) / float(brevity_penalty(alpha, n))
        else:
            unfinished[tuple(seq.tolist())] = float(cum[-1])
    return finished, unfinished, next_log_probs


def t5x_reference(next_log_probs, vocab: int, length: int, beam: int, alpha: float):
    """T5X's beam_search written over explicit hypotheses (no cache, no arrays, no NEG_INF
    fillers, no early stop): keep the top 2k extensions by log-prob; those ending in EOS
    compete, penalised, for k finished slots; the best k others stay live.

    ``next_log_probs(prefix)`` gives the next token's log-probs. Returns ``(beams, stoppable)``:
    ``[(row, score)]`` best first, and whether T5X's early-stop condition held before the last
    step (all k slots finished and the worst beats the best live log-prob / max penalty).
    """
    live, finished, stoppable = [((), 0.0)], [], False
    for step in range(length):
        extensions = [
            (seq + (t,), lp + float(next_log_probs(seq)[t])) for seq, lp in live
            for t in range(vocab)
        ]
        top = sorted(extensions, key=lambda c: -c[1])[: 2 * beam]
        penalty = float(brevity_penalty(alpha, step + 1))
        finished += [(seq, lp / penalty) for seq, lp in top if seq[-1] == EOS]
        finished = sorted(finished, key=lambda c: -c[1])[:beam]
        live = [c for c in top if c[0][-1] != EOS][:beam]
        bound = live[0][1] / float(brevity_penalty(alpha, length))
        if step < length - 1 and len(finished) == beam and finished[-1][1] > bound:
            stoppable = True
    out = finished or live  # T5X: rows with no finished hypothesis return the live ones
    return [(seq + (0,) * (length - len(seq)), score) for seq, score in out], stoppable


def lazy_next_log_probs(graph, enc_row: np.ndarray, length: int):
    """``prefix -> next-token log-probs``, by teacher forcing one padded row per prefix."""
    def next_log_probs(prefix: tuple[int, ...]) -> np.ndarray:
        row = np.zeros((1, length), np.int32)
        row[0, : len(prefix)] = prefix
        logits = forward(*graph, enc_row[None], shift_right(jnp.asarray(row)))
        return np.asarray(jax.nn.log_softmax(logits[0, len(prefix)]), np.float64)

    return next_log_probs


def sequence_log_probs(graph, enc_row: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Teacher-forced log-probability of each full row ``[n, length]`` (no EOS handling)."""
    enc = np.repeat(enc_row[None], len(rows), axis=0)
    log_probs = jax.nn.log_softmax(forward(*graph, enc, shift_right(jnp.asarray(rows))))
    return np.asarray(jnp.take_along_axis(log_probs, rows[..., None], -1)[..., 0].sum(-1))


def ranked(scores: dict) -> list[tuple[tuple[int, ...], float]]:
    return sorted(scores.items(), key=lambda item: -item[1])


# --------------------------------------------------------------------------------------------
# Beam search against brute force.
# --------------------------------------------------------------------------------------------


def test_wide_beam_is_exhaustive_and_returns_the_brute_force_ranking():
    """Vocab 3, length 4, beam 12: the 2^3 = 8 non-EOS prefixes of length 3 all stay live and
    all 8 * 3 = 24 = 2k extensions are kept, so T5X's search sees every finished hypothesis
    (1 + 2 + 4 + 8 = 15): its 12 beams must be exactly the brute-force top 12."""
    cfg, length, beam, alpha = dataclasses.replace(TINY, vocab_size=3), 4, 12, 0.6
    for seed in (0, 1):
        graph = random_model(cfg, seed, peak=2.0)
        enc = encoder_tokens(10 + seed, vocab=3)
        tokens, scores = search(*graph, enc, max_decode_length=length, beam_size=beam, alpha=alpha)
        assert tokens.shape == (2, beam, length) and tokens.dtype == jnp.int32
        assert scores.shape == (2, beam) and scores.dtype == jnp.float32
        for r in range(2):
            finished, _, _ = brute_force(graph, enc[r], 3, length, alpha)
            expected = ranked(finished)[:beam]
            assert [tuple(t) for t in np.asarray(tokens[r]).tolist()] == [s for s, _ in expected]
            np.testing.assert_allclose(scores[r], [v for _, v in expected], atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_beam_4_top_1_matches_brute_force(seed):
    """Vocab 5, length 3, beam 4, alpha 0.6: the best beam is the brute-force best finished
    hypothesis, and every real beam's score is its recomputed penalised log-probability.

    Beam search is approximate; on this random model it finds the optimum. Peaky models do not
    help here: they push EOS so far down that its extension can miss the raw-log-prob top 2k
    (T5X's cut) -- see the next test, which pins such a case to T5X's algorithm.
    """
    length, alpha = 3, 0.6
    graph = random_model(TINY, seed)
    enc = encoder_tokens(20 + seed)
    tokens, scores = search(*graph, enc, max_decode_length=length, beam_size=4, alpha=alpha)
    for r in range(2):
        finished, _, _ = brute_force(graph, enc[r], TINY.vocab_size, length, alpha)
        best, best_score = ranked(finished)[0]
        assert tuple(np.asarray(tokens[r, 0]).tolist()) == best
        assert abs(float(scores[r, 0]) - best_score) < 1e-4
        for row, score in real_beams(tokens[r], scores[r]):  # T5X's filler slots excluded
            assert abs(finished[row] - score) < 1e-4


def real_beams(tokens: Array, scores: Array) -> list[tuple[tuple[int, ...], float]]:
    """One row's ``(tokens, score)`` pairs without T5X's filler slots."""
    pairs = zip(np.asarray(tokens).tolist(), np.asarray(scores).tolist())
    return [(tuple(row), score) for row, score in pairs if score > NEG_INF / 2]


def assert_matches_t5x_reference(graph, enc, length, beam, alpha) -> int:
    """Compare every row with `t5x_reference`; return how many rows miss the brute-force best."""
    tokens, scores = search(*graph, enc, max_decode_length=length, beam_size=beam, alpha=alpha)
    misses = 0
    for r in range(len(enc)):
        finished, _, table = brute_force(graph, enc[r], TINY.vocab_size, length, alpha)
        expected, _ = t5x_reference(table.__getitem__, TINY.vocab_size, length, beam, alpha)
        found = real_beams(tokens[r], scores[r])
        assert [row for row, _ in found] == [row for row, _ in expected]
        np.testing.assert_allclose([s for _, s in found], [s for _, s in expected], atol=1e-4)
        misses += found[0][0] != ranked(finished)[0][0]
    return misses


@pytest.mark.parametrize(("seed", "peak"), [(3, 30.0), (5, 30.0), (6, 10.0), (3, 3.0)])
def test_beam_4_matches_t5x_algorithm_including_its_pruning(seed, peak):
    """All real beams (tokens and scores) equal `t5x_reference` run on the model's
    conditional log-prob table. On these peaky models T5X's pruning misses the brute-force
    best for at least one row, and so must the cached implementation."""
    graph = random_model(TINY, seed, peak=peak)
    assert assert_matches_t5x_reference(graph, encoder_tokens(20 + seed), 3, 4, 0.6) >= 1


@pytest.mark.parametrize(("beam", "alpha"), [(1, 0.0), (2, 0.6)])
def test_small_beams_match_t5x_algorithm(beam, alpha):
    for seed, peak in [(0, 1.0), (0, 30.0), (4, 3.0)]:
        graph = random_model(TINY, seed, peak=peak)
        assert_matches_t5x_reference(graph, encoder_tokens(80 + seed), 3, beam, alpha)


@pytest.mark.parametrize(("seed", "peak", "stops_early"), [(0, 1.0, True), (3, 3.0, False)])
def test_long_decode_matches_t5x_algorithm_with_or_without_early_stop(seed, peak, stops_early):
    """Length 8 (too long for brute force; the reference teacher-forces only the prefixes it
    visits). With seed 0 T5X's stop condition holds in both rows before the last step, so the
    while_loop exits early -- and must still return what the full-length reference returns;
    seed 3 runs to full length and finishes hypotheses of length 7 and 8."""
    length, beam, alpha = 8, 4, 0.6
    graph = random_model(TINY, seed, peak=peak)
    enc = encoder_tokens(90 + seed)
    tokens, scores = search(*graph, enc, max_decode_length=length, beam_size=beam, alpha=alpha)
    for r in range(2):
        expected, stoppable = t5x_reference(
            lazy_next_log_probs(graph, enc[r], length), TINY.vocab_size, length, beam, alpha
        )
        found = real_beams(tokens[r], scores[r])
        assert stoppable == stops_early
        assert [row for row, _ in found] == [row for row, _ in expected]
        np.testing.assert_allclose([s for _, s in found], [s for _, s in expected], atol=1e-4)


def test_row_without_any_finished_hypothesis_returns_live_beams_with_raw_log_probs():
    """T5X's fallback. Built so that EOS can never be in the top 2k: its embedding is 0 (logit
    0) and tokens 2..11 come in pairs e and -e, so each beam has >= 5 >= 2k extensions whose
    logit is >= 0 -- EOS never ends a hypothesis, and alpha must not touch the scores."""
    cfg, length, beam = dataclasses.replace(TINY, vocab_size=13), 3, 2

    def pair_up(flat):
        emb = flat["token_embedder/embedding"]
        emb[EOS] = 0.0
        emb[3:12:2] = -emb[2:12:2]

    graph = random_model(cfg, 5, peak=4.0, edit=pair_up)
    enc = encoder_tokens(30, vocab=13)
    tokens, scores = search(*graph, enc, max_decode_length=length, beam_size=beam, alpha=0.6)
    assert not (np.asarray(tokens) == EOS).any()
    for r in range(2):  # raw log-probs: the brevity penalty (1.19 at length 3) is not applied
        log_probs = sequence_log_probs(graph, enc[r], np.asarray(tokens[r]))
        np.testing.assert_allclose(scores[r], log_probs, atol=1e-4)
        assert float(scores[r, 0]) >= float(scores[r, 1])


def test_one_beam_search_follows_the_greedy_path():
    """With one beam and alpha 0 the live hypothesis is the greedy path, so T5X's 1-beam search
    agrees with greedy decoding up to the shorter of the two EOS positions; if nothing finished
    it returns the greedy tokens with their raw log-prob; if greedy finished, the search's score
    is at least greedy's. (It is not greedy decoding: a prefix ended by a runner-up EOS is a
    finished candidate, and e.g. seed 0 returns [2, 1] where greedy says [2, 2, 2].)"""
    length, outcomes = 3, set()
    for seed, peak in [(0, 1.0), (1, 1.0), (2, 1.0), (0, 30.0), (3, 30.0)]:
        graph = random_model(TINY, seed, peak=peak)
        enc = encoder_tokens(40 + seed)
        tokens, scores = search(*graph, enc, max_decode_length=length, beam_size=1, alpha=0.0)
        expected = np.asarray(greedy(*graph, enc, max_decode_length=length))
        for r in range(2):
            finished, unfinished, _ = brute_force(graph, enc[r], TINY.vocab_size, length, 0.0)
            found, wanted = np.asarray(tokens[r, 0]), expected[r]
            end = lambda row: int(np.argmax(row == EOS)) if (row == EOS).any() else length
            common = min(end(found), end(wanted))
            np.testing.assert_array_equal(found[:common], wanted[:common])
            if (found == EOS).any():
                assert abs(finished[tuple(found.tolist())] - float(scores[r, 0])) < 1e-4
            else:  # T5X's fallback: nothing finished, so the live (greedy) hypothesis
                np.testing.assert_array_equal(found, wanted)
                assert abs(unfinished[tuple(wanted.tolist())] - float(scores[r, 0])) < 1e-4
            if (wanted == EOS).any():
                assert float(scores[r, 0]) >= finished[tuple(wanted.tolist())] - 1e-4
            outcomes.add(bool((found == wanted).all()))
    assert outcomes == {True, False}  # both agreeing and diverging rows were exercised


# --------------------------------------------------------------------------------------------
# Invariants.
# --------------------------------------------------------------------------------------------


def test_scores_sorted_zero_after_eos_and_jit_compiles_once_per_shape():
    graph, traces = random_model(TINY, 7, peak=3.0), []

    def traced_beam_search(*args, **kwargs):
        traces.append(1)  # runs once per trace, i.e. per compile
        return beam_search(*args, **kwargs)

    jitted = jax.jit(traced_beam_search, static_argnames=DECODE_STATIC_ARGNAMES)
    for seed in (50, 51):
        tokens, scores = jitted(*graph, encoder_tokens(seed), max_decode_length=5)
        s = np.asarray(scores)
        assert (np.diff(s, axis=1) <= 0).all()
        for row in np.asarray(tokens).reshape(-1, 5):
            if (row == EOS).any():
                assert (row[int(np.argmax(row == EOS)) + 1:] == 0).all()
    assert len(traces) == 1


def test_batch_rows_are_independent():
    """Row i of a batch decode equals decoding row i alone (including a padded input), even
    though the batch's while_loop runs until its slowest row stops."""
    graph = random_model(TINY, 8, peak=3.0)
    enc = encoder_tokens(60, (3, 4))
    enc[1, 2:] = 0
    tokens, scores = search(*graph, enc, max_decode_length=8)
    for r in range(3):
        alone_tokens, alone_scores = search(*graph, enc[r:r + 1], max_decode_length=8)
        np.testing.assert_array_equal(tokens[r], alone_tokens[0])
        np.testing.assert_allclose(scores[r], alone_scores[0], atol=1e-5)


def test_decode_is_greedy_for_one_beam_and_the_best_beam_otherwise():
    graph = random_model(TINY, 9, peak=3.0)
    enc = encoder_tokens(70)
    jitted = jax.jit(decode, static_argnames=DECODE_STATIC_ARGNAMES)
    np.testing.assert_array_equal(
        jitted(*graph, enc, max_decode_length=3), greedy(*graph, enc, max_decode_length=3)
    )
    tokens, _ = search(*graph, enc, max_decode_length=3, beam_size=4, alpha=0.6)
    best = jitted(*graph, enc, max_decode_length=3, beam_size=4)
    np.testing.assert_array_equal(best, tokens[:, 0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beam_size": 0}, "beam_size"),
        ({"alpha": -0.5}, "alpha"),
        ({"eos_id": 0}, "eos_id"),
        ({"eos_id": 5}, "eos_id"),
        ({"max_decode_length": 0}, "max_decode_length"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    graph = random_model(TINY, 0)
    args = {"max_decode_length": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        beam_search(*graph, encoder_tokens(0), **args)


def test_bad_encoder_input_is_rejected():
    graph = random_model(TINY, 0)
    with pytest.raises(ValueError, match="encoder_input_tokens"):
        beam_search(*graph, np.array([2, 3, 4], np.int32), 3)
    with pytest.raises(ValueError, match="encoder_input_tokens"):
        decode(*graph, np.ones((1, 3), np.float32), 3, beam_size=2)


# --------------------------------------------------------------------------------------------
# Helpers.
# --------------------------------------------------------------------------------------------


def test_brevity_penalty_is_t5x_formula():
    np.testing.assert_allclose(brevity_penalty(0.6, 7), (12 / 6) ** 0.6, rtol=1e-6)
    assert float(brevity_penalty(0.0, 30)) == 1.0


def test_zero_after_eos_and_strip_after_eos():
    tokens = np.array([[5, 6, 1, 7, 1], [0, 3, 0, 4, 2], [1, 2, 3, 0, 0]], np.int32)
    np.testing.assert_array_equal(
        zero_after_eos(jnp.asarray(tokens), EOS),
        [[5, 6, 1, 0, 0], [0, 3, 0, 4, 2], [1, 0, 0, 0, 0]],
    )
    assert strip_after_eos(tokens) == [[5, 6], [3, 4, 2], []]
    assert strip_after_eos([[4, 9, 2]], eos_id=9) == [[4]]
    with pytest.raises(ValueError, match="tokens"):
        strip_after_eos(np.zeros(3, np.int32))
