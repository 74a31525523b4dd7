"""Decoder-only LMs (pipeline_lib.models.decoder_lm): causality, Primer's dconv, MLPs, presets."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pipeline_lib.models.decoder_lm import (
    DCONV_INIT,
    DECODER_LM_PRESETS,
    VARIANTS,
    DecoderLM,
    DecoderLMConfig,
    CausalSelfAttention,
    DepthwiseConv,
    FeedForward,
    broadcast_over_batch,
    causal_depthwise_conv,
    decoder_lm_config,
    decoder_lm_config_from_dict,
    decoder_lm_logits,
    decoder_lm_matmul_flops,
    validate_decoder_lm_config,
)
from pipeline_lib.models.layers import (
    RelativePositionBias,
    dot_product_attention,
    flat_params,
    load_flat_params,
)

VOCAB, LENGTH = 37, 8
TINY = DecoderLMConfig(
    vocab_size=VOCAB, d_model=16, num_layers=2, num_heads=2, head_dim=4, d_ff=24,
    relpos_buckets=8, relpos_max_distance=16,
)
TINY_VANILLA = dataclasses.replace(TINY, variant="vanilla")

forward = jax.jit(decoder_lm_logits)


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def abstract(cfg: DecoderLMConfig) -> DecoderLM:
    return nnx.eval_shape(lambda: DecoderLM(cfg, rngs=nnx.Rngs(params=0)))


def randomise(module: nnx.Module, seed: int, scale: float = 0.5) -> nnx.Module:
    """Every parameter random (dconv taps and norms included), from numpy: no JAX init."""
    rng = np.random.default_rng(seed)
    load_flat_params(
        module, {k: rng.normal(0, scale, v.shape) for k, v in flat_params(module).items()}
    )
    return module


def variant_config(variant: str) -> DecoderLMConfig:
    # transformer_pp runs untied, so both logit paths are covered by the same compiles.
    return dataclasses.replace(TINY, variant=variant, tie_embeddings=variant != "transformer_pp")


# --------------------------------------------------------------------------------------------
# Causality: the property the Primer dconv could break.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_changing_token_t_never_changes_earlier_logits(variant: str):
    model = randomise(abstract(variant_config(variant)), seed=VARIANTS.index(variant))
    rng = np.random.default_rng(0)
    base = rng.integers(1, VOCAB, (LENGTH,))
    changed_at = [0, 1, 2, 5, LENGTH - 1]
    rows = [base]
    for t in changed_at:
        row = base.copy()
        row[t] = row[t] % (VOCAB - 1) + 1  # another id in 1..VOCAB-1
        rows.append(row)
    logits = np.asarray(forward(*nnx.split(model), jnp.asarray(np.stack(rows))))
    assert logits.shape == (len(rows), LENGTH, VOCAB)
    assert np.all(np.isfinite(logits))
    for i, t in enumerate(changed_at, start=1):
        np.testing.assert_allclose(logits[i, :t], logits[0, :t], atol=1e-5, err_msg=f"t={t}")
        assert np.abs(logits[i, t] - logits[0, t]).max() > 1e-3  # the change is seen at t


# --------------------------------------------------------------------------------------------
# Multi-DConv-Head Attention pieces.
# --------------------------------------------------------------------------------------------


def test_depthwise_conv_is_a_per_channel_causal_three_tap_filter():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 5)).astype(np.float32)
    kernel = rng.normal(size=(3, 5)).astype(np.float32)
    expected = np.zeros_like(x)
    for b in range(2):
        for t in range(6):
            for c in range(5):
                for s in range(3):
                    if t - s >= 0:
                        expected[b, t, c] += kernel[s, c] * x[b, t - s, c]
    np.testing.assert_allclose(causal_depthwise_conv(jnp.asarray(x), jnp.asarray(kernel)),
                               expected, atol=1e-5)


def test_dconv_parameters_and_reference_initialisation():
    conv = DepthwiseConv(6)
    np.testing.assert_allclose(conv.kernel[...], np.tile(np.array(DCONV_INIT)[:, None], (1, 6)))
    assert DCONV_INIT == (0.5, 0.5 / 3, 0.5 / 3)
    # At the reference init a constant sequence becomes 0.5, 0.5 * 4/3, then 0.5 * 5/3.
    y = conv(jnp.ones((1, 4, 6)))
    np.testing.assert_allclose(y[0, :, 0], [0.5, 0.5 + 0.5 / 3, 0.5 + 1 / 3, 0.5 + 1 / 3], rtol=1e-6)
    flat = flat_params(abstract(dataclasses.replace(TINY, variant="primer_ez")))
    inner = TINY.num_heads * TINY.head_dim
    for name in ("query", "key", "value"):
        assert flat[f"decoder/layers_1/self_attention/{name}_dconv/kernel"].shape == (3, inner)
    assert not any("dconv" in k for k in flat_params(abstract(TINY_VANILLA)))


def test_joined_qkv_attention_equals_three_projections_with_their_dconvs():
    """The attention joins the q/k/v kernels into one matmul: same numbers as separate ones."""
    cfg = dataclasses.replace(TINY, variant="primer_ez")
    attn = randomise(nnx.eval_shape(lambda: CausalSelfAttention(cfg, rngs=nnx.Rngs(0))), 6)
    x = jnp.asarray(np.random.default_rng(7).normal(size=(3, LENGTH, 16)), jnp.float32)
    mask = jnp.tril(jnp.ones((LENGTH, LENGTH), bool))[None, None]
    bias = jnp.asarray(np.random.default_rng(8).normal(size=(1, 2, LENGTH, LENGTH)), jnp.float32)
    heads = lambda z: z.reshape(3, LENGTH, 2, 4)
    q, k, v = (
        heads(causal_depthwise_conv(x @ getattr(attn, n).kernel[...],
                                    getattr(attn, f"{n}_dconv").kernel[...]))
        for n in ("query", "key", "value")
    )
    expected = dot_product_attention(q, k, v, mask, bias).reshape(3, LENGTH, 8)
    expected = expected @ attn.out.kernel[...]
    np.testing.assert_allclose(attn(x, mask, bias), expected, rtol=1e-5, atol=1e-5)


def test_broadcast_over_batch_gradient_is_the_batch_sum():
    rng = np.random.default_rng(9)
    bias = jnp.asarray(rng.normal(size=(1, 2, 3, 5)), jnp.float32)
    weights = rng.normal(size=(4, 2, 3, 5)).astype(np.float32)
    value, grad = jax.value_and_grad(
        lambda b: jnp.sum(broadcast_over_batch(b, 4) * weights))(bias)
    np.testing.assert_allclose(value, np.sum(np.asarray(bias) * weights), rtol=1e-5)
    np.testing.assert_allclose(grad, weights.sum(0, keepdims=True), rtol=1e-5, atol=1e-6)
    assert broadcast_over_batch(bias, 4).shape == (4, 2, 3, 5)


def test_relpos_table_gradient_through_the_model_matches_plain_broadcasting():
    """The batch-sum-by-matmul gradient reaches the shared table as autodiff's would."""
    relpos = randomise(nnx.eval_shape(lambda: RelativePositionBias(
        2, num_buckets=8, max_distance=16, bidirectional=False, rngs=nnx.Rngs(0))), 10)
    weights = jnp.asarray(np.random.default_rng(11).normal(size=(3, 2, 6, 6)), jnp.float32)
    graphdef, state = nnx.split(relpos)

    def loss(state, broadcast):
        bias = nnx.merge(graphdef, state)(6, 6)
        return jnp.sum(broadcast(bias) * weights)

    ours = jax.grad(loss)(state, lambda b: broadcast_over_batch(b, 3))
    plain = jax.grad(loss)(state, lambda b: jnp.broadcast_to(b, (3, 2, 6, 6)))
    np.testing.assert_allclose(ours["rel_embedding"][...], plain["rel_embedding"][...],
                               rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(ours["rel_embedding"][...])).max() > 1e-3


# --------------------------------------------------------------------------------------------
# MLPs against numpy.
# --------------------------------------------------------------------------------------------


def _ff(cfg: DecoderLMConfig) -> FeedForward:
    return randomise(nnx.eval_shape(lambda: FeedForward(cfg, rngs=nnx.Rngs(params=0))), 3)


def test_squared_relu_mlp_matches_numpy():
    ff = _ff(dataclasses.replace(TINY, variant="primer_ez"))
    p = {k: np.asarray(v, np.float64) for k, v in flat_params(ff).items()}
    assert set(p) == {"wi/kernel", "wi/bias", "wo/kernel", "wo/bias"}  # Primer: biases on
    x = np.random.default_rng(4).normal(size=(2, 3, 16))
    h = np.maximum(x @ p["wi/kernel"] + p["wi/bias"], 0.0) ** 2
    np.testing.assert_allclose(ff(jnp.asarray(x, jnp.float32)),
                               h @ p["wo/kernel"] + p["wo/bias"], rtol=1e-4, atol=1e-4)


def test_swiglu_mlp_matches_numpy():
    ff = _ff(dataclasses.replace(TINY, variant="transformer_pp"))
    p = {k: np.asarray(v, np.float64) for k, v in flat_params(ff).items()}
    assert set(p) == {"wi_0/kernel", "wi_1/kernel", "wo/kernel"}  # Transformer++: no biases
    x = np.random.default_rng(5).normal(size=(2, 3, 16))
    gate = x @ p["wi_0/kernel"]
    h = gate / (1.0 + np.exp(-gate)) * (x @ p["wi_1/kernel"])
    np.testing.assert_allclose(ff(jnp.asarray(x, jnp.float32)), h @ p["wo/kernel"],
                               rtol=1e-4, atol=1e-4)


def test_swiglu_mlp_with_biases_matches_numpy():
    """The two gate kernels (and their biases) are joined into one matmul in the forward."""
    ff = _ff(dataclasses.replace(TINY, variant="transformer_pp", mlp_bias=True))
    p = {k: np.asarray(v, np.float64) for k, v in flat_params(ff).items()}
    assert set(p) == {f"{n}/{w}" for n in ("wi_0", "wi_1", "wo") for w in ("kernel", "bias")}
    x = np.random.default_rng(12).normal(size=(2, 3, 16))
    gate = x @ p["wi_0/kernel"] + p["wi_0/bias"]
    h = gate / (1.0 + np.exp(-gate)) * (x @ p["wi_1/kernel"] + p["wi_1/bias"])
    np.testing.assert_allclose(ff(jnp.asarray(x, jnp.float32)),
                               h @ p["wo/kernel"] + p["wo/bias"], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Names, presets, validation.
# --------------------------------------------------------------------------------------------


def test_parameter_paths_per_variant():
    def layer0(cfg: DecoderLMConfig) -> set[str]:
        prefix = "decoder/layers_0/"
        return {k[len(prefix):] for k in flat_params(abstract(cfg)) if k.startswith(prefix)}

    attention = {f"self_attention/{n}/kernel" for n in ("query", "key", "value", "out")}
    layer_norms = {f"{n}/{p}" for n in ("pre_self_attention_layer_norm", "pre_mlp_layer_norm")
                   for p in ("scale", "bias")}
    assert layer0(TINY_VANILLA) == attention | layer_norms | {
        "mlp/wi/kernel", "mlp/wi/bias", "mlp/wo/kernel", "mlp/wo/bias"}
    assert layer0(dataclasses.replace(TINY, variant="primer_ez")) == layer0(TINY_VANILLA) | {
        f"self_attention/{n}_dconv/kernel" for n in ("query", "key", "value")}
    assert layer0(dataclasses.replace(TINY, variant="transformer_pp")) == attention | {
        "pre_self_attention_layer_norm/scale", "pre_mlp_layer_norm/scale",
        "mlp/wi_0/kernel", "mlp/wi_1/kernel", "mlp/wo/kernel"}
    tied = flat_params(abstract(TINY))
    assert {k for k in tied if not k.startswith("decoder/layers_")} == {
        "token_embedder/embedding", "decoder/relpos_bias/rel_embedding",
        "decoder/decoder_norm/scale", "decoder/decoder_norm/bias"}
    untied = flat_params(abstract(dataclasses.replace(TINY, tie_embeddings=False)))
    assert untied["decoder/logits_dense/kernel"].shape == (16, VOCAB)


@pytest.mark.parametrize("variant", VARIANTS)
def test_primer_small_has_35m_parameters(variant: str):
    """§B.4: 35-36M for every variant (T5's 32128 vocabulary, shared embeddings); the
    Transformer++ d_ff of 1364 is what keeps its 3-matrix MLP at the same size."""
    cfg = decoder_lm_config("primer_small", variant=variant)
    count = sum(int(np.prod(v.shape)) for v in flat_params(abstract(cfg)).values())
    assert abs(count / 1e6 - 35.35) < 0.1, count


def test_presets_and_validation():
    medium = decoder_lm_config("primer_medium")
    assert (medium.d_model, medium.num_layers, medium.num_heads, medium.d_ff) == (768, 12, 12, 3072)
    large = decoder_lm_config("primer_large")
    assert (large.d_model, large.num_layers, large.num_heads, large.d_ff) == (1024, 24, 16, 8192)
    assert decoder_lm_config("primer_small", variant="transformer_pp").d_ff == 1364
    assert decoder_lm_config("primer_large", variant="transformer_pp").d_ff == 5462
    assert decoder_lm_config("bench", variant="transformer_pp", d_ff=512).d_ff == 512
    bench = decoder_lm_config("bench")
    assert (bench.d_model, bench.num_layers) == (256, 4) and bench.variant == "primer_ez"
    assert bench.dconv and bench.resolved_mlp == "squared_relu" and bench.norm == "layer_norm"
    pp = decoder_lm_config_from_dict({"preset": "laptop", "variant": "transformer_pp"})
    assert pp.norm == "rms_norm" and pp.resolved_mlp == "swiglu" and not pp.resolved_mlp_bias
    assert decoder_lm_config("laptop", variant="vanilla", mlp="relu").resolved_mlp == "relu"
    assert set(DECODER_LM_PRESETS) == {"primer_small", "primer_medium", "primer_large",
                                       "laptop", "bench"}
    assert decoder_lm_matmul_flops(bench, 16, 256) > 0
    with pytest.raises(ValueError, match=r"model\.num_heads: 5 does not divide model\.d_model"):
        decoder_lm_config("bench", num_heads=5, head_dim=None)
    with pytest.raises(ValueError, match=r"model\.variant"):
        decoder_lm_config("bench", variant="primer")
    with pytest.raises(ValueError, match=r"model\.mlp"):
        decoder_lm_config("bench", mlp="geglu")
    with pytest.raises(ValueError, match=r"model\.preset"):
        decoder_lm_config("huge")
    with pytest.raises(ValueError, match=r"model\.layers: unknown key"):
        decoder_lm_config("bench", layers=2)
    with pytest.raises(ValueError, match=r"model\.relpos_max_distance"):
        decoder_lm_config("bench", relpos_max_distance=8)
    with pytest.raises(ValueError, match=r"model\.dropout_rate"):
        decoder_lm_config("bench", dropout_rate=-0.1)
    with pytest.raises(ValueError, match=r"model\.d_model"):
        validate_decoder_lm_config(dataclasses.replace(TINY, d_model=0))
    with pytest.raises(ValueError, match=r"model\.tie_embeddings"):
        validate_decoder_lm_config(dataclasses.replace(TINY, tie_embeddings="yes"))


def test_dropout_needs_a_key():
    cfg = dataclasses.replace(TINY, dropout_rate=0.1)
    graphdef, state = nnx.split(abstract(cfg))
    with pytest.raises(ValueError, match="dropout_rng"):
        decoder_lm_logits(graphdef, state, jnp.ones((1, 4), jnp.int32), deterministic=False)


# --------------------------------------------------------------------------------------------
# Fidelity to the Primer gins, the dconv against lax's convolution, FLOPs against XLA.
# --------------------------------------------------------------------------------------------


def test_gins_fidelity_variants():
    """`defaults.gin`: MLP biases for every model; `*_transformer_vanilla` is T5 1.0's ReLU."""
    vanilla = decoder_lm_config("laptop", variant="vanilla", fidelity="gins")
    assert (vanilla.resolved_mlp, vanilla.norm, vanilla.resolved_mlp_bias) == ("relu", "layer_norm", True)
    flat = flat_params(abstract(dataclasses.replace(TINY, variant="vanilla", fidelity="gins")))
    assert "decoder/layers_0/pre_mlp_layer_norm/bias" in flat
    assert {"decoder/layers_0/mlp/wi/bias", "decoder/layers_0/mlp/wo/bias"} <= set(flat)
    pp = decoder_lm_config("laptop", variant="transformer_pp", fidelity="gins")
    assert (pp.norm, pp.resolved_mlp, pp.resolved_mlp_bias, pp.d_ff) == ("rms_norm", "swiglu", True, 168)
    flat = flat_params(abstract(dataclasses.replace(TINY, variant="transformer_pp", fidelity="gins")))
    assert {"decoder/layers_0/mlp/wi_0/bias", "decoder/layers_0/mlp/wi_1/bias"} <= set(flat)
    assert "decoder/layers_0/pre_mlp_layer_norm/bias" not in flat  # RMSNorm: scale only
    ez = decoder_lm_config("laptop", variant="primer_ez", fidelity="gins")
    assert ez == dataclasses.replace(decoder_lm_config("laptop", variant="primer_ez"), fidelity="gins")
    gelu = decoder_lm_config("laptop", variant="transformer_gelu", fidelity="gins")
    assert gelu.resolved_mlp == "gelu" and not gelu.dconv
    # project mode keeps the earlier definitions
    assert decoder_lm_config("laptop", variant="vanilla").resolved_mlp == "gelu"
    assert not decoder_lm_config("laptop", variant="transformer_pp").resolved_mlp_bias
    with pytest.raises(ValueError, match=r"model\.fidelity"):
        decoder_lm_config("laptop", fidelity="mesh")


@pytest.mark.parametrize("preset,millions", [("primer_small", 35.35), ("primer_medium", 110.0)])
@pytest.mark.parametrize("variant", ["vanilla", "primer_ez", "transformer_pp"])
def test_gins_parameter_counts_match_the_gin_comments(preset, millions, variant):
    """§B.4: 35-36M (small) and 110M (medium) per the gin comments, biases included."""
    cfg = decoder_lm_config(preset, variant=variant, fidelity="gins")
    count = sum(int(np.prod(v.shape)) for v in flat_params(abstract(cfg)).values())
    assert abs(count / 1e6 - millions) / millions < 0.03, count


def _lax_depthwise(x, kernel):
    """An independent reference: lax's grouped convolution, one group per channel, causal
    padding (2, 0); the kernel's tap s multiplies x[t - s], so it is flipped for lax's
    cross-correlation."""
    channels = x.shape[-1]
    rhs = kernel[::-1].T[:, None, :]  # [out = channels, in / groups = 1, width]
    y = jax.lax.conv_general_dilated(
        x.transpose(0, 2, 1), rhs, window_strides=(1,), padding=[(kernel.shape[0] - 1, 0)],
        feature_group_count=channels,
    )
    return y.transpose(0, 2, 1)


def test_dconv_equals_lax_grouped_convolution():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(3, 11, 24)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 24)), jnp.float32)
    np.testing.assert_allclose(causal_depthwise_conv(x, kernel), _lax_depthwise(x, kernel),
                               atol=1e-6)


def test_dconv_flops_match_xla_cost_of_the_convolution():
    """18 per channel, token and layer (3 convs x 3 taps x 2); XLA's count of the lax
    convolution is the same less the taps that fall into the causal padding."""
    from pipeline_lib.models.decoder_lm import decoder_lm_dconv_flops

    cfg = decoder_lm_config("laptop", variant="primer_ez", vocab_size=64)
    batch, length = 2, 32
    x = jnp.ones((batch, length, cfg.qkv_dim))
    k = jnp.ones((3, cfg.qkv_dim))
    xla_one = jax.jit(_lax_depthwise).lower(x, k).cost_analysis()["flops"]
    assert xla_one == 2 * batch * cfg.qkv_dim * (3 * length - 3)
    ours = decoder_lm_dconv_flops(cfg, batch, length)
    assert ours == 3 * cfg.num_layers * 2 * 3 * batch * length * cfg.qkv_dim
    assert 0.9 < 3 * cfg.num_layers * xla_one / ours <= 1.0
    assert decoder_lm_dconv_flops(dataclasses.replace(cfg, variant="vanilla"), batch, length) == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_flops_match_xla_cost_analysis(variant):
    """matmul + dconv FLOPs within [0.9, 1.0] of XLA's count of the whole forward (the rest:
    norms, softmax, activations, biases)."""
    from pipeline_lib.models.decoder_lm import decoder_lm_dconv_flops, decoder_lm_train_flops

    cfg = decoder_lm_config("laptop", variant=variant, fidelity="gins", vocab_size=64)
    graphdef, params = nnx.split(abstract(cfg))
    tokens = jnp.ones((2, 32), jnp.int32)
    xla = jax.jit(decoder_lm_logits).lower(graphdef, params, tokens).cost_analysis()["flops"]
    ours = decoder_lm_matmul_flops(cfg, 2, 32) + decoder_lm_dconv_flops(cfg, 2, 32)
    assert 0.9 * xla < ours <= xla
    assert decoder_lm_train_flops(cfg, 2, 32) == 3 * ours
