"""T5 (pipeline_lib.models): T5X names and initialisers, masks, dropout, cache, configs."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pipeline_lib.models import (
    T5,
    T5_PRESETS,
    T5Config,
    flat_params,
    flat_to_state,
    greedy_decode,
    load_flat_params,
    shift_right,
    split_model,
    t5_cached_logits,
    t5_config,
    t5_config_from_dict,
    t5_forward,
    t5_matmul_flops,
    validate_t5_config,
)
from pipeline_lib.models.layers import KVCache, relative_position_bucket
from pipeline_lib.models.t5 import DecodeCache

# One encoder layer keeps compiles short; two decoder layers exercise per-layer caches.
TINY = T5Config(
    vocab_size=61, d_model=24, num_heads=3, head_dim=8, d_ff=40,
    num_encoder_layers=1, num_decoder_layers=2, dropout_rate=0.1,
)
TINY_V11 = dataclasses.replace(TINY, mlp="gated-gelu", tie_embeddings=False, head_dim=6)

forward = jax.jit(t5_forward, static_argnames=("deterministic",))


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(scope="module")
def tiny():
    """v1.1 (gated MLP, logits_dense); the tied v1.0 head is checked against Hugging Face in
    test_models_interop. Tests share ENC/DEC shapes, so jit compiles are reused."""
    return split_model(random_model(TINY_V11, 0))


ENC_SHAPE, DEC_SHAPE = (2, 6), (2, 5)


def tokens(seed: int, shape: tuple[int, ...], vocab: int = TINY.vocab_size) -> np.ndarray:
    """Random non-pad ids. numpy, not jax.random: eager JAX ops compile once per shape."""
    return np.random.default_rng(seed).integers(1, vocab, shape, dtype=np.int32)


def abstract(cfg: T5Config) -> T5:
    return nnx.eval_shape(lambda: T5(cfg, rngs=nnx.Rngs(params=0)))


def random_model(cfg: T5Config, seed: int) -> T5:
    """Shapes from an abstract init, values from numpy: no per-op JAX compiles (fast tests)."""
    model, rng = abstract(cfg), np.random.default_rng(seed)
    load_flat_params(model, {k: rng.normal(0, 0.3, v.shape) for k, v in flat_params(model).items()})
    return model


# --------------------------------------------------------------------------------------------
# Names, shapes, initialisers.
# --------------------------------------------------------------------------------------------


def expected_names(layers: int, gated: bool) -> set[str]:
    mlp = ["wi_0", "wi_1", "wo"] if gated else ["wi", "wo"]
    names = {"token_embedder/embedding", "encoder/encoder_norm/scale",
             "encoder/relpos_bias/rel_embedding", "decoder/decoder_norm/scale",
             "decoder/relpos_bias/rel_embedding"}
    for i in range(layers):
        enc, dec = f"encoder/layers_{i}", f"decoder/layers_{i}"
        names |= {f"{enc}/attention/{p}/kernel" for p in ("query", "key", "value", "out")}
        names |= {f"{enc}/pre_attention_layer_norm/scale", f"{enc}/pre_mlp_layer_norm/scale"}
        names |= {f"{enc}/mlp/{w}/kernel" for w in mlp}
        for att in ("self_attention", "encoder_decoder_attention"):
            names |= {f"{dec}/{att}/{p}/kernel" for p in ("query", "key", "value", "out")}
        names |= {f"{dec}/{n}/scale" for n in ("pre_self_attention_layer_norm",
                                                "pre_cross_attention_layer_norm",
                                                "pre_mlp_layer_norm")}
        names |= {f"{dec}/mlp/{w}/kernel" for w in mlp}
    if gated:
        names.add("decoder/logits_dense/kernel")
    return names


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_parameter_names_and_shapes_match_t5x(version):
    v11 = version == "v1.1"
    cfg = dataclasses.replace(
        T5_PRESETS["t5_1_1_small" if v11 else "t5_small"],
        num_encoder_layers=2, num_decoder_layers=2,
    )
    params = flat_params(abstract(cfg))
    assert set(params) == expected_names(2, gated=v11)
    d, inner = 512, (384 if v11 else 512)
    ff = 1024 if v11 else 2048
    shapes = {k: tuple(v.shape) for k, v in params.items()}
    assert shapes["token_embedder/embedding"] == (32128, d)
    assert shapes["encoder/layers_1/attention/query/kernel"] == (d, inner)
    assert shapes["decoder/layers_0/encoder_decoder_attention/out/kernel"] == (inner, d)
    assert shapes["encoder/relpos_bias/rel_embedding"] == (6 if v11 else 8, 32)
    assert shapes["decoder/layers_1/pre_mlp_layer_norm/scale"] == (d,)
    mlp_in = "wi_0" if v11 else "wi"
    assert shapes[f"decoder/layers_1/mlp/{mlp_in}/kernel"] == (d, ff)
    assert shapes["encoder/layers_0/mlp/wo/kernel"] == (ff, d)
    if v11:
        assert shapes["decoder/logits_dense/kernel"] == (d, 32128)
    assert all(v.dtype == jnp.float32 for v in params.values())


def test_t5_small_has_the_papers_130_non_embedding_parameters():
    assert len(flat_params(abstract(T5_PRESETS["t5_small"]))) == 131  # + token_embedder


def test_default_initialisers_are_t5xs():
    # Square kernels everywhere: eager init compiles once per (initialiser, shape).
    cfg = T5Config(vocab_size=128, d_model=128, num_heads=4, head_dim=32, d_ff=128,
                   num_encoder_layers=1, num_decoder_layers=1, mlp="gated-gelu",
                   tie_embeddings=False)
    p = {k: np.asarray(v) for k, v in flat_params(T5(cfg, rngs=nnx.Rngs(params=3))).items()}
    std = lambda k: p[k].std()
    assert std("token_embedder/embedding") == pytest.approx(1.0, rel=0.05)
    att = "encoder/layers_0/attention"
    # variance_scaling(1, fan_in, normal); the query is further divided by sqrt(head_dim).
    assert std(f"{att}/key/kernel") == pytest.approx(128 ** -0.5, rel=0.05)
    assert std(f"{att}/query/kernel") == pytest.approx(128 ** -0.5 / 32 ** 0.5, rel=0.05)
    assert std(f"{att}/out/kernel") == pytest.approx(128 ** -0.5, rel=0.05)
    # truncated normal at 2 sigma, rescaled so the variance is still 1/fan_in.
    for name, fan_in in (("encoder/layers_0/mlp/wi_1/kernel", 128),
                         ("decoder/layers_0/mlp/wo/kernel", 128),
                         ("decoder/logits_dense/kernel", 128)):
        assert std(name) == pytest.approx(fan_in ** -0.5, rel=0.05)
        assert np.abs(p[name]).max() <= 2 * fan_in ** -0.5 / 0.87962566 + 1e-6
    # variance_scaling(1, fan_avg, uniform) on [heads, buckets]: bound sqrt(3 / mean(4, 32)).
    rel = p["decoder/relpos_bias/rel_embedding"]
    assert np.abs(rel).max() <= np.sqrt(3 / 18) and np.abs(rel).max() > 0.8 * np.sqrt(3 / 18)
    assert all((p[k] == 1).all() for k in p if k.endswith("/scale"))


def test_relative_position_buckets():
    rel = np.arange(-200, 201)
    causal = relative_position_bucket(rel, bidirectional=False, num_buckets=32, max_distance=128)
    assert (causal[rel >= 0] == 0).all()  # the future is one bucket (masked anyway)
    assert (causal[(rel < 0) & (rel > -16)] == -rel[(rel < 0) & (rel > -16)]).all()
    assert causal[rel == -200] == 31 and causal.max() == 31
    both = relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    assert (both[(rel > 0) & (rel < 8)] == 16 + rel[(rel > 0) & (rel < 8)]).all()
    assert (both[(rel <= 0) & (rel > -8)] == -rel[(rel <= 0) & (rel > -8)]).all()
    assert both.max() == 31 and both.min() == 0


# --------------------------------------------------------------------------------------------
# Forward: masks, packing, dropout, dtype, gradients.
# --------------------------------------------------------------------------------------------


def test_packed_examples_match_separate_ones(tiny):
    """Segment ids give block-diagonal masks (relative positions need no offsets), and padding
    is masked: the packed row must equal each example run alone, padded. One jit call."""
    graphdef, params, rest = tiny
    enc_a, enc_b = tokens(3, (4,)), tokens(4, (3,))
    tgt_a, tgt_b = tokens(5, (3,)), tokens(6, (2,))
    pad = lambda x, n: np.pad(x, (0, n - len(x)))
    enc = np.stack([pad(np.concatenate([enc_a, enc_b]), 8), pad(enc_a, 8), pad(enc_b, 8)])
    tgt = np.stack([pad(np.concatenate([tgt_a, tgt_b]), 6), pad(tgt_a, 6), pad(tgt_b, 6)])
    enc_seg = np.array([[1, 1, 1, 1, 2, 2, 2, 0]] + [[1] * 8] * 2)
    dec_seg = np.array([[1, 1, 1, 2, 2, 0]] + [[1] * 6] * 2)
    dec = shift_right(tgt, segment_ids=dec_seg)
    assert dec[0].tolist() == [0, *tgt_a[:2].tolist(), 0, int(tgt_b[0]), 0]
    logits = forward(graphdef, params, rest, enc, dec, tgt,
                     encoder_segment_ids=enc_seg, decoder_segment_ids=dec_seg)
    assert logits.shape == (3, 6, TINY.vocab_size) and logits.dtype == jnp.float32
    np.testing.assert_allclose(logits[0, :3], logits[1, :3], atol=1e-5)
    np.testing.assert_allclose(logits[0, 3:5], logits[2, :2], atol=1e-5)


def test_shift_right():
    tgt = jnp.array([[5, 6, 7, 1], [8, 1, 0, 0]])
    assert shift_right(tgt).tolist() == [[0, 5, 6, 7], [0, 8, 1, 0]]


def test_bfloat16_compute_keeps_float32_params(tiny):
    graphdef, params, rest = tiny
    bf16 = abstract(dataclasses.replace(TINY_V11, dtype="bfloat16"))
    load_flat_params(bf16, flat_params(params))
    assert all(v.dtype == jnp.float32 for v in flat_params(bf16).values())
    enc, dec = tokens(9, ENC_SHAPE), shift_right(tokens(10, DEC_SHAPE))
    low = forward(*split_model(bf16), enc, dec)
    high = forward(graphdef, params, rest, enc, dec)
    assert low.dtype == jnp.float32
    assert np.abs(low - high).max() < 0.05 * np.abs(high).max()


def test_pure_jitted_train_step_with_dropout():
    # One decoder layer: random bits dominate this compile, and every layer adds six sites.
    cfg = dataclasses.replace(TINY_V11, num_decoder_layers=1)
    graphdef, params, rest = split_model(random_model(cfg, 0))
    enc, tgt = tokens(11, ENC_SHAPE), tokens(12, DEC_SHAPE)

    def loss(params, key, deterministic):
        logits = t5_forward(graphdef, params, rest, enc, shift_right(tgt), tgt,
                            dropout_rng=key, deterministic=deterministic)
        logp = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(logp, tgt[..., None], -1).sum()

    with pytest.raises(ValueError, match="dropout_rng is required"):
        loss(params, None, False)
    # Rate 0 needs no key even with deterministic=False (traced only, nothing compiled).
    graphdef0, _, _ = split_model(
        abstract(dataclasses.replace(cfg, dropout_rate=0.0))
    )
    jax.eval_shape(lambda p: t5_forward(graphdef0, p, rest, enc, tgt, deterministic=False), params)

    # Any typed key works; an "rbg" key compiles about twice as fast as the default threefry.
    step = jax.jit(jax.value_and_grad(loss), static_argnums=2)
    key = lambda seed: jax.random.key(seed, impl="rbg")
    value, grads = step(params, key(1), False)
    again, _ = step(params, key(1), False)
    other, _ = step(params, key(2), False)
    assert value == again and value != other
    flat = flat_params(grads)
    assert set(flat) == set(flat_params(params)) and np.isfinite(value)
    assert all(np.isfinite(g).all() for g in flat.values())
    assert np.abs(flat["encoder/relpos_bias/rel_embedding"]).sum() > 0


def test_matmul_flops_match_xla_cost_analysis():
    cfg = T5Config(vocab_size=256, d_model=64, num_heads=4, head_dim=16, d_ff=256,
                   num_encoder_layers=2, num_decoder_layers=2)
    graphdef, params, rest = split_model(abstract(cfg))
    enc, dec = jnp.ones((2, 16), jnp.int32), jnp.ones((2, 12), jnp.int32)
    lowered = jax.jit(t5_forward).lower(graphdef, params, rest, enc, dec)
    xla = lowered.cost_analysis()["flops"]
    ours = t5_matmul_flops(cfg, 2, 16, 12)
    assert 0.9 * xla < ours <= xla


# --------------------------------------------------------------------------------------------
# Incremental decoding.
# --------------------------------------------------------------------------------------------


def test_cached_decoding_matches_teacher_forcing(tiny):
    """Requirement: max abs diff < 1e-5 in float32 (the head does not matter to the cache)."""
    graphdef, params, rest = tiny
    enc = tokens(13, ENC_SHAPE)
    enc[1, 4:] = 0  # one padded example
    dec = shift_right(tokens(14, DEC_SHAPE))
    full = forward(graphdef, params, rest, enc, dec)
    cached = jax.jit(t5_cached_logits)(graphdef, params, rest, enc, dec)
    assert cached.shape == full.shape
    assert float(jnp.abs(cached - full).max()) < 1e-5


def test_decode_cache_take_gathers_the_batch():
    arange = lambda *shape: jnp.arange(np.prod(shape)).reshape(shape)
    kv = KVCache(arange(3, 4, 1, 2), -arange(3, 4, 1, 2))
    cache = DecodeCache(jnp.array(2), jnp.array([[1, 0], [1, 1], [0, 0]], bool), (kv,), (kv, kv))
    picked = cache.take(jnp.array([2, 0, 0]))
    assert int(picked.index) == 2 and picked.encoder_valid.tolist() == [[0, 0], [1, 0], [1, 0]]
    np.testing.assert_array_equal(picked.self_attn[1].value, kv.value[jnp.array([2, 0, 0])])
    assert jax.tree.structure(picked) == jax.tree.structure(cache)


def test_greedy_decode_is_argmax_of_its_own_prefix(tiny):
    graphdef, params, rest = tiny
    enc = tokens(15, ENC_SHAPE)
    out = jax.jit(greedy_decode, static_argnames="max_decode_length")(
        graphdef, params, rest, enc, max_decode_length=DEC_SHAPE[1]
    )
    assert out.shape == DEC_SHAPE and out.dtype == jnp.int32
    logits = forward(graphdef, params, rest, enc, shift_right(out))
    argmax = np.asarray(jnp.argmax(logits, -1))
    for row, best in zip(np.asarray(out), argmax):
        stop = int(np.argmax(row == 1)) + 1 if (row == 1).any() else len(row)
        assert (row[:stop] == best[:stop]).all() and (row[stop:] == 0).all()


# --------------------------------------------------------------------------------------------
# Flat params.
# --------------------------------------------------------------------------------------------


def test_flat_params_round_trip_and_errors():
    model, other = random_model(TINY, 0), random_model(TINY, 1)
    load_flat_params(other, flat_params(model))
    for k, v in flat_params(model).items():
        np.testing.assert_array_equal(flat_params(other)[k], v)
    _, params, _ = split_model(model)
    state = flat_to_state({k: np.zeros(v.shape) for k, v in flat_params(params).items()}, params)
    assert float(flat_params(state)["token_embedder/embedding"].sum()) == 0.0
    assert float(np.abs(flat_params(params)["token_embedder/embedding"]).sum()) > 0  # untouched

    good = flat_params(model)
    missing = {k: v for k, v in good.items() if k != "decoder/decoder_norm/scale"}
    with pytest.raises(ValueError, match="1 missing: decoder/decoder_norm/scale"):
        load_flat_params(other, missing)
    with pytest.raises(ValueError, match="1 unexpected: decoder/logits_dense/kernel"):
        load_flat_params(other, {**good, "decoder/logits_dense/kernel": np.zeros((24, 61))})
    bad = {**good, "encoder/layers_0/mlp/wi/kernel": np.zeros((40, 24))}
    shapes = r"encoder/layers_0/mlp/wi/kernel: expected shape \(24, 40\), got \(40, 24\)"
    with pytest.raises(ValueError, match=shapes):
        load_flat_params(other, bad)


# --------------------------------------------------------------------------------------------
# Configs.
# --------------------------------------------------------------------------------------------


def test_presets():
    small, v11 = T5_PRESETS["t5_small"], T5_PRESETS["t5_1_1_small"]
    assert (small.d_model, small.num_heads, small.head_dim, small.d_ff) == (512, 8, 64, 2048)
    assert (small.num_encoder_layers, small.vocab_size, small.mlp, small.tie_embeddings) == (
        6, 32128, "relu", True)
    assert (v11.num_heads, v11.d_ff, v11.num_encoder_layers, v11.mlp, v11.tie_embeddings) == (
        6, 1024, 8, "gated-gelu", False)
    laptop = T5_PRESETS["t5_laptop"]
    assert (laptop.d_model, laptop.num_heads, laptop.d_ff, laptop.num_encoder_layers) == (
        128, 4, 512, 2)
    assert T5_PRESETS["t5_bench"].num_decoder_layers == 4
    for cfg in T5_PRESETS.values():
        validate_t5_config(cfg)
    assert t5_config("t5_laptop", vocab_size=612).vocab_size == 612
    assert t5_config_from_dict({"preset": "t5_bench", "dtype": "bfloat16"}).dtype == "bfloat16"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"head_dim": None, "num_heads": 6},
         "model.num_heads: 6 does not divide model.d_model 512"),
        ({"d_model": 0}, "model.d_model: 0 must be a positive integer"),
        ({"num_encoder_layers": -1}, "model.num_encoder_layers: -1 must be a positive integer"),
        ({"head_dim": 0}, "model.head_dim: 0 must be a positive integer"),
        ({"mlp": "gelu"}, "model.mlp: 'gelu' is not a known MLP type; allowed: relu, gated-gelu"),
        ({"dtype": "float64"}, "model.dtype: 'float64' is not a known compute dtype"),
        ({"dropout_rate": 1.0}, r"model.dropout_rate: 1.0 must be in \[0, 1\)"),
        ({"relpos_buckets": 7}, "model.relpos_buckets: 7 must be an even number >= 4"),
        ({"relpos_max_distance": 16}, "model.relpos_max_distance: 16 must exceed"),
        ({"vocab_size": 3.5}, "model.vocab_size: 3.5 must be a positive integer"),
    ],
)
def test_config_validation_names_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        validate_t5_config(dataclasses.replace(T5_PRESETS["t5_small"], **overrides))


def test_config_from_dict_rejects_unknown_keys_and_presets():
    with pytest.raises(ValueError, match="model.d_modle: unknown key"):
        t5_config_from_dict({"preset": "t5_small", "d_modle": 3})
    with pytest.raises(ValueError, match="model.preset: 't5_huge' is not a known T5 preset"):
        t5_config("t5_huge")
    # Keys named like the shared helper's own parameters are still just unknown keys.
    with pytest.raises(ValueError, match="model.kind: unknown key"):
        t5_config("t5_small", kind="T5")
    with pytest.raises(ValueError, match="model.num_heads: 6 does not divide model.d_model 512"):
        T5(dataclasses.replace(T5_PRESETS["t5_small"], head_dim=None, num_heads=6),
           rngs=nnx.Rngs(params=0))
