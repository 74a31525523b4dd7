"""Decoder-only language models of So et al. (2021, Primer) in flax NNX: Primer-EZ and baselines.

Variants (t0_primer_hint §B.1-B.3; google-research ``primer/`` gins and ``t5_models.py``), all
pre-norm stacks of causal self-attention + MLP with a final norm:

| variant              | norm                     | MLP (default ``mlp``)       | MLP biases    | dconv |
|----------------------|--------------------------|-----------------------------|---------------|-------|
| ``vanilla``          | LayerNorm (scale + bias) | ReLU (gins) / GELU (project) | yes          | no    |
| ``primer_ez``        | LayerNorm (scale + bias) | squared ReLU                | yes           | yes   |
| ``transformer_pp``   | RMSNorm (scale)          | SwiGLU                      | gins: yes, project: no | no |
| ``transformer_gelu`` | LayerNorm (scale + bias) | GELU (tanh form)            | yes           | no    |

``fidelity`` picks the definitions. ``"gins"`` follows the Primer gins: ``*_transformer_vanilla``
includes ``t5.1.0.base.gin`` (ReLU), and ``defaults.gin`` sets ``DenseReluDense.use_bias = True``
for every model, Transformer++ included (its gin does not override it). ``"project"`` keeps
this project's earlier definitions (GELU vanilla, bias-free LLaMA-style Transformer++), so old
runs and benchmarks keep their meaning. ``transformer_gelu`` is the gins' ``*_transformer_gelu``.
``mlp`` overrides any variant's MLP (the gins' squared-ReLU and SwiGLU ablations are
``vanilla`` + ``mlp=...``).

* **Multi-DConv-Head Attention** (``primer_ez``): after each of the Q, K and V projections, a
  causal depthwise convolution of width 3 along time, one 3-tap kernel per channel of the
  ``heads * head_dim`` projection: ``y[t] = w0*z[t] + w1*z[t-1] + w2*z[t-2]`` with ``z[<0] = 0``,
  initialised to the reference constants ``w0 = 0.5``, ``w1 = w2 = 0.5/3``
  (``causal_depthwise_conv``: three shifted multiply-adds, no loop over tokens). Only current
  and past positions are read, so the model stays causal.
* **Positions**: as in every Primer config, baselines included, there is no absolute position
  embedding: a T5 relative position bias (32 buckets, max distance 128, causal buckets) is
  added to the attention logits, one table shared by all layers (``bias_shared``).
* **Attention scaling**: 1/sqrt(head_dim) is folded into the query initialiser as in mesh
  (``fold_scaling_into_initializer=True``), and T5X (`layers.query_init`); logits are not
  rescaled. Attention has no biases (mesh's has none).
* **Embeddings**: ``tie_embeddings=True`` (the Primer configs) computes logits with the
  transposed token embedding times d_model**-0.5 (mesh/T5 v1.0); ``False`` adds a separate
  ``decoder/logits_dense`` kernel. Initialisers are T5X's (`layers`).
* MLP biases: the Primer gins set ``DenseReluDense.use_bias = True`` for every model
  (``fidelity="gins"``); ``fidelity="project"`` defines Transformer++ without biases
  (LLaMA-style). ``mlp_bias`` overrides either.

Parameter names (flattened with '/')::

    token_embedder/embedding                                       [vocab, d_model]
    decoder/relpos_bias/rel_embedding                              [heads, buckets]
    decoder/layers_{i}/pre_self_attention_layer_norm/scale (+ bias unless RMSNorm)
    decoder/layers_{i}/self_attention/{query,key,value,out}/kernel
    decoder/layers_{i}/self_attention/{query,key,value}_dconv/kernel   [3, heads * head_dim]
                                                                   (primer_ez; row s = shift s)
    decoder/layers_{i}/pre_mlp_layer_norm/scale (+ bias)
    decoder/layers_{i}/mlp/{wi | wi_0, wi_1}/kernel, mlp/wo/kernel (+ .../bias with mlp_bias)
    decoder/decoder_norm/scale (+ bias)
    decoder/logits_dense/kernel                                    (untied only)

Teacher-forced forward only (no KV cache): ``logits[:, t]`` is the distribution of the token
after ``tokens[:, t]`` given ``tokens[:, :t + 1]``; the caller shifts (e.g. inputs = sequence
``[:-1]``, targets = ``[1:]``, or `t5.shift_right`). There is no padding mask: with causal
attention, padding at the end never influences earlier positions, and the loss ignores it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from pipeline_lib.errors import ConfigError
from pipeline_lib.models.configs import (
    config_from_preset,
    require_bool,
    require_choice,
    require_dtype,
    require_head_dim,
    require_positive_int,
    require_positive_number,
    require_rate,
    require_relpos_max_distance,
)
from pipeline_lib.models.layers import (
    ATTENTION_INIT,
    MLP_INIT,
    Array,
    Dense,
    Embed,
    LayerNorm,
    Linear,
    RelativePositionBias,
    RMSNorm,
    broadcast_over_batch,
    dot_product_attention,
    dropout,
    query_init,
    split_rng,
)

# --------------------------------------------------------------------------------------------
# Config, presets, validation.
# --------------------------------------------------------------------------------------------

VARIANTS = ("vanilla", "primer_ez", "transformer_pp", "transformer_gelu")
FIDELITIES = ("gins", "project")
DECODER_MLPS = ("relu", "gelu", "squared_relu", "swiglu")
GATED = frozenset({"swiglu"})

_VARIANT_DEFAULTS = {
    # fidelity: {variant: (norm, mlp, mlp_bias, dconv)}
    "gins": {
        "vanilla": ("layer_norm", "relu", True, False),
        "primer_ez": ("layer_norm", "squared_relu", True, True),
        "transformer_pp": ("rms_norm", "swiglu", True, False),
        "transformer_gelu": ("layer_norm", "gelu", True, False),
    },
    "project": {
        "vanilla": ("layer_norm", "gelu", True, False),
        "primer_ez": ("layer_norm", "squared_relu", True, True),
        "transformer_pp": ("rms_norm", "swiglu", False, False),
        "transformer_gelu": ("layer_norm", "gelu", True, False),
    },
}

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),  # mesh/T5X's gelu is the tanh form
    "squared_relu": lambda x: jnp.square(jax.nn.relu(x)),
    "swiglu": jax.nn.silu,  # gated: silu(wi_0 x) * (wi_1 x)
}

DCONV_WIDTH = 3
DCONV_INIT = (0.5, 0.5 / 3, 0.5 / 3)
"""Reference init of the taps for shifts 0, 1, 2 (``t5_models.causal_depthwise_conv``)."""


@dataclasses.dataclass(frozen=True)
class DecoderLMConfig:
    """Shape and numerics of a decoder-only LM; ``None`` fields take the variant's default."""

    vocab_size: int = 32128
    d_model: int = 512
    num_layers: int = 6
    num_heads: int = 8
    head_dim: int | None = 64
    d_ff: int = 2048
    variant: str = "primer_ez"
    fidelity: str = "project"  # "gins": the Primer gins' definitions (see the module docstring)
    mlp: str | None = None
    mlp_bias: bool | None = None
    tie_embeddings: bool = True
    dropout_rate: float = 0.0
    relpos_buckets: int = 32
    relpos_max_distance: int = 128
    layer_norm_eps: float = 1e-6
    dtype: str = "float32"
    float32_attention_logits: bool = False

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.num_heads

    @property
    def qkv_dim(self) -> int:
        return self.num_heads * self.resolved_head_dim

    @property
    def _defaults(self) -> tuple[str, str, bool, bool]:
        return _VARIANT_DEFAULTS[self.fidelity][self.variant]

    @property
    def norm(self) -> str:
        return self._defaults[0]

    @property
    def resolved_mlp(self) -> str:
        return self.mlp if self.mlp is not None else self._defaults[1]

    @property
    def resolved_mlp_bias(self) -> bool:
        return self.mlp_bias if self.mlp_bias is not None else self._defaults[2]

    @property
    def dconv(self) -> bool:
        return self._defaults[3]

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)


DECODER_LM_PRESETS: dict[str, DecoderLMConfig] = {
    # Primer's decoder-only sizes (§B.4); T5's 32000 + 100 vocabulary padded to 32128.
    "primer_small": DecoderLMConfig(d_model=512, num_layers=6, num_heads=8, d_ff=2048),
    "primer_medium": DecoderLMConfig(d_model=768, num_layers=12, num_heads=12, d_ff=3072),
    "primer_large": DecoderLMConfig(d_model=1024, num_layers=24, num_heads=16, d_ff=8192),
    # §B.5 toy scale; vocab_size is normally overridden by the local vocabulary.
    "laptop": DecoderLMConfig(d_model=64, num_layers=2, num_heads=4, head_dim=16, d_ff=256),
    # The MFU benchmark shape.
    "bench": DecoderLMConfig(d_model=256, num_layers=4, num_heads=4, head_dim=64, d_ff=1024),
}

TRANSFORMER_PP_D_FF = {
    # The gins cut d_ff so that the gated MLP's 3 matrices match the parameters of 2 (x 2/3);
    # laptop/bench: the same rule, rounded to a multiple of 8.
    "primer_small": 1364, "primer_medium": 2048, "primer_large": 5462, "laptop": 168, "bench": 680,
}


def validate_decoder_lm_config(cfg: DecoderLMConfig, prefix: str = "model") -> DecoderLMConfig:
    """Check that ``cfg`` is buildable; raise `ConfigError` (ValueError) naming the key."""
    for name in ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "relpos_buckets",
                 "relpos_max_distance"):
        require_positive_int(prefix, name, getattr(cfg, name))
    require_head_dim(prefix, cfg.head_dim, cfg.num_heads, cfg.d_model)
    require_choice(prefix, "variant", cfg.variant, VARIANTS, "decoder LM variant")
    require_choice(prefix, "fidelity", cfg.fidelity, FIDELITIES, "variant fidelity")
    if cfg.mlp is not None:
        require_choice(prefix, "mlp", cfg.mlp, DECODER_MLPS, "MLP type")
    require_dtype(prefix, cfg.dtype)
    if cfg.relpos_buckets < 2:
        raise ConfigError(f"{prefix}.relpos_buckets: {cfg.relpos_buckets} must be >= 2")
    require_relpos_max_distance(prefix, cfg.relpos_buckets, cfg.relpos_max_distance)
    require_rate(prefix, "dropout_rate", cfg.dropout_rate, allow_bool=True)
    require_positive_number(prefix, "layer_norm_eps", cfg.layer_norm_eps, allow_bool=True)
    for name in ("tie_embeddings", "float32_attention_logits"):
        require_bool(prefix, name, getattr(cfg, name))
    if cfg.mlp_bias is not None and not isinstance(cfg.mlp_bias, bool):
        raise ConfigError(f"{prefix}.mlp_bias: {cfg.mlp_bias!r} must be true, false or null")
    return cfg


def decoder_lm_config(
    preset: str = "primer_small", prefix: str = "model", **overrides: Any
) -> DecoderLMConfig:
    """A validated preset with overrides, e.g. ``decoder_lm_config("bench", variant="vanilla")``.

    ``variant="transformer_pp"`` takes the preset's parameter-matched d_ff unless ``d_ff`` is
    given.
    """

    def matched_d_ff(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
        if overrides.get("variant") == "transformer_pp" and "d_ff" not in overrides:
            overrides["d_ff"] = TRANSFORMER_PP_D_FF[preset]
        return overrides

    return config_from_preset(
        DECODER_LM_PRESETS, preset, overrides, prefix=prefix, kind="decoder LM preset",
        validate=validate_decoder_lm_config, prepare=matched_d_ff,
    )


def decoder_lm_config_from_dict(values: Mapping[str, Any], prefix: str = "model") -> DecoderLMConfig:
    """From a YAML mapping: optional ``preset`` (default primer_small) + overrides."""
    values = dict(values)
    return decoder_lm_config(values.pop("preset", "primer_small"), prefix=prefix, **values)


# --------------------------------------------------------------------------------------------
# Multi-DConv-Head Attention.
# --------------------------------------------------------------------------------------------


def causal_depthwise_conv(x: Array, kernel: Array) -> Array:
    """``y[:, t] = sum_s kernel[s] * x[:, t - s]`` over ``s < width``, with ``x[:, <0] = 0``.

    ``x [batch, length, channels]``, ``kernel [width, channels]`` (one filter per channel).
    A static loop over the taps: each is a shifted view of a left-padded copy, so XLA fuses the
    whole filter into one elementwise pass.
    """
    width, length = kernel.shape[0], x.shape[-2]
    kernel = kernel.astype(x.dtype)
    padded = jnp.pad(x, ((0, 0), (width - 1, 0), (0, 0)))
    y = x * kernel[0]
    for shift in range(1, width):
        start = width - 1 - shift
        y = y + padded[:, start:start + length] * kernel[shift]
    return y


class DepthwiseConv(nnx.Module):
    """Causal depthwise conv of width 3 with Primer's constant init (0.5, 0.5/3, 0.5/3)."""

    def __init__(self, channels: int):
        taps = jnp.asarray(DCONV_INIT, jnp.float32)[:, None]
        self.kernel = nnx.Param(jnp.broadcast_to(taps, (DCONV_WIDTH, channels)))

    def __call__(self, x: Array) -> Array:
        return causal_depthwise_conv(x, self.kernel[...])


class CausalSelfAttention(nnx.Module):
    """Bias-free multi-head causal self-attention, optionally with Primer's dconv on Q, K, V."""

    def __init__(self, cfg: DecoderLMConfig, *, rngs: nnx.Rngs):
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.resolved_head_dim
        self.dropout_rate = cfg.dropout_rate
        self.float32_logits = cfg.float32_attention_logits
        d, inner, dtype = cfg.d_model, cfg.qkv_dim, cfg.compute_dtype
        self.query = Dense(d, inner, kernel_init=query_init(self.head_dim), dtype=dtype, rngs=rngs)
        self.key = Dense(d, inner, kernel_init=ATTENTION_INIT, dtype=dtype, rngs=rngs)
        self.value = Dense(d, inner, kernel_init=ATTENTION_INIT, dtype=dtype, rngs=rngs)
        self.out = Dense(inner, d, kernel_init=ATTENTION_INIT, dtype=dtype, rngs=rngs)
        if cfg.dconv:
            self.query_dconv = DepthwiseConv(inner)
            self.key_dconv = DepthwiseConv(inner)
            self.value_dconv = DepthwiseConv(inner)
        else:
            self.query_dconv = self.key_dconv = self.value_dconv = None

    def __call__(
        self, x: Array, mask: Array, bias: Array, *, rng: Array | None = None
    ) -> Array:
        """``x [b, l, d]``, ``mask [1, 1, l, l]`` (causal), ``bias [1, h, l, l]`` -> ``[b, l, d]``.

        Q, K and V come from one matmul with the three kernels concatenated, split after: the
        same numbers as three projections, fewer and larger kernel launches both ways (the
        parameters stay the T5X-named ``query``/``key``/``value`` kernels). The dconvs then
        run per projection: one dconv over the joined [b, l, 3 x inner] was measured slower
        (its fused backward passes and transposes got larger and slower than three).
        """
        dense = (self.query, self.key, self.value)
        dtype = self.query.dtype
        kernel = jnp.concatenate([p.kernel[...] for p in dense], axis=1).astype(dtype)
        projections = jnp.split(jnp.dot(x.astype(dtype), kernel), 3, axis=-1)
        convs = (self.query_dconv, self.key_dconv, self.value_dconv)
        q, k, v = (
            (z if conv is None else conv(z)).reshape(*z.shape[:-1], self.num_heads, self.head_dim)
            for z, conv in zip(projections, convs)
        )  # dconv on the joined heads, before the split into heads: per channel
        bias = broadcast_over_batch(bias, x.shape[0])  # for its faster gradient
        y = dot_product_attention(
            q, k, v, mask, bias, dropout_rate=self.dropout_rate, rng=rng,
            float32_logits=self.float32_logits,
        )
        return self.out(y.reshape(*y.shape[:-2], -1))


# --------------------------------------------------------------------------------------------
# MLP, layers, stack, model.
# --------------------------------------------------------------------------------------------


def _joined_linear(linears: Sequence[Linear], x: Array) -> Array:
    """``concat([lin(x) for lin in linears], -1)`` as one matmul (kernels joined in the forward)."""
    dtype = linears[0].dtype
    kernel = jnp.concatenate([lin.kernel[...] for lin in linears], axis=1).astype(dtype)
    y = jnp.dot(x.astype(dtype), kernel)
    if linears[0].bias is not None:
        y = y + jnp.concatenate([lin.bias[...] for lin in linears]).astype(dtype)
    return y


class FeedForward(nnx.Module):
    """``wo(act(wi x))`` or, SwiGLU, ``wo(silu(wi_0 x) * wi_1 x)``; optional biases.

    Kernels as T5X's ``MlpBlock`` (``wi``/``wi_0``/``wi_1``/``wo``, T5X's MLP init); the biases
    (Primer's ``DenseReluDense.use_bias``) sit next to them as ``.../bias``.
    """

    def __init__(self, cfg: DecoderLMConfig, *, rngs: nnx.Rngs):
        self.kind = cfg.resolved_mlp
        self.dropout_rate = cfg.dropout_rate
        linear = lambda i, o: Linear(
            i, o, kernel_init=MLP_INIT, use_bias=cfg.resolved_mlp_bias,
            dtype=cfg.compute_dtype, rngs=rngs,
        )
        if self.kind in GATED:
            self.wi_0 = linear(cfg.d_model, cfg.d_ff)
            self.wi_1 = linear(cfg.d_model, cfg.d_ff)
        else:
            self.wi = linear(cfg.d_model, cfg.d_ff)
        self.wo = linear(cfg.d_ff, cfg.d_model)

    def __call__(self, x: Array, *, rng: Array | None = None) -> Array:
        act = ACTIVATIONS[self.kind]
        if self.kind in GATED:
            # One matmul over [wi_0 | wi_1] concatenated, split after: the same numbers as two,
            # with the parameters kept as T5X's two kernels.
            gate, up = jnp.split(_joined_linear((self.wi_0, self.wi_1), x), 2, axis=-1)
            h = act(gate) * up
        else:
            h = act(self.wi(x))
        return self.wo(dropout(h, self.dropout_rate, rng, broadcast_dims=(-2,)))


def _norm(cfg: DecoderLMConfig) -> LayerNorm | RMSNorm:
    if cfg.norm == "rms_norm":
        return RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps, dtype=cfg.compute_dtype)
    return LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, dtype=cfg.compute_dtype)


class DecoderLayer(nnx.Module):
    """Pre-norm causal self-attention and MLP, each followed by dropout and a residual add."""

    def __init__(self, cfg: DecoderLMConfig, *, rngs: nnx.Rngs):
        self.dropout_rate = cfg.dropout_rate
        self.pre_self_attention_layer_norm = _norm(cfg)
        self.self_attention = CausalSelfAttention(cfg, rngs=rngs)
        self.pre_mlp_layer_norm = _norm(cfg)
        self.mlp = FeedForward(cfg, rngs=rngs)

    def __call__(self, x: Array, mask: Array, bias: Array, *, rng: Array | None = None) -> Array:
        r_attn, r_attn_out, r_mlp, r_mlp_out = split_rng(rng, 4)
        h = self.self_attention(self.pre_self_attention_layer_norm(x), mask, bias, rng=r_attn)
        x = x + dropout(h, self.dropout_rate, r_attn_out, broadcast_dims=(-2,))
        h = self.mlp(self.pre_mlp_layer_norm(x), rng=r_mlp)
        return x + dropout(h, self.dropout_rate, r_mlp_out, broadcast_dims=(-2,))


class Decoder(nnx.Module):
    """Embedded tokens -> dropout -> layers (shared relpos bias) -> decoder_norm -> dropout."""

    def __init__(self, cfg: DecoderLMConfig, *, rngs: nnx.Rngs):
        self.num_layers = cfg.num_layers
        self.dropout_rate = cfg.dropout_rate
        self.relpos_bias = RelativePositionBias(
            cfg.num_heads, num_buckets=cfg.relpos_buckets, max_distance=cfg.relpos_max_distance,
            bidirectional=False, dtype=cfg.compute_dtype, rngs=rngs,
        )
        for i in range(cfg.num_layers):
            setattr(self, f"layers_{i}", DecoderLayer(cfg, rngs=rngs))
        self.decoder_norm = _norm(cfg)
        if not cfg.tie_embeddings:
            self.logits_dense = Dense(
                cfg.d_model, cfg.vocab_size, kernel_init=MLP_INIT, dtype=jnp.float32, rngs=rngs
            )

    def layers(self) -> list[DecoderLayer]:
        return [getattr(self, f"layers_{i}") for i in range(self.num_layers)]

    def __call__(self, x: Array, *, rng: Array | None = None) -> Array:
        r_in, r_out, *r_layers = split_rng(rng, self.num_layers + 2)
        length = x.shape[-2]
        mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
        bias = self.relpos_bias(length, length)  # once per stack: the table is shared
        x = dropout(x, self.dropout_rate, r_in, broadcast_dims=(-2,))
        for layer, r in zip(self.layers(), r_layers):
            x = layer(x, mask, bias, rng=r)
        return dropout(self.decoder_norm(x), self.dropout_rate, r_out, broadcast_dims=(-2,))


class DecoderLM(nnx.Module):
    """Decoder-only LM; ``model(tokens)`` -> float32 next-token logits ``[b, l, vocab]``."""

    def __init__(self, config: DecoderLMConfig, *, rngs: nnx.Rngs):
        self.config = cfg = validate_decoder_lm_config(config)
        self.token_embedder = Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype, rngs=rngs)
        self.decoder = Decoder(cfg, rngs=rngs)

    def logits(self, hidden: Array) -> Array:
        if self.config.tie_embeddings:
            return self.token_embedder.attend(hidden) / math.sqrt(hidden.shape[-1])
        return self.decoder.logits_dense(hidden)

    def __call__(
        self, tokens: Array, *, dropout_rng: Array | None = None, deterministic: bool = True
    ) -> Array:
        rng = None
        if not deterministic and self.config.dropout_rate > 0:
            if dropout_rng is None:
                raise ValueError("dropout_rng is required when deterministic=False and dropout > 0")
            rng = dropout_rng
        return self.logits(self.decoder(self.token_embedder(tokens), rng=rng))


# --------------------------------------------------------------------------------------------
# Functional API.
# --------------------------------------------------------------------------------------------


def decoder_lm_logits(
    graphdef: nnx.GraphDef,
    state: nnx.State | Sequence[nnx.State],
    tokens: Array,
    *,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
) -> Array:
    """Pure teacher-forced forward: ``tokens [b, l]`` -> float32 logits ``[b, l, vocab]``.

    ``graphdef, state = nnx.split(model)``; the model holds only parameters, so ``state`` is
    what ``jax.grad`` differentiates. A tuple of states is merged with ``nnx.merge``.
    """
    states = tuple(state) if isinstance(state, (tuple, list)) else (state,)
    model: DecoderLM = nnx.merge(graphdef, *states)
    return model(tokens, dropout_rng=dropout_rng, deterministic=deterministic)


def decoder_lm_matmul_flops(cfg: DecoderLMConfig, batch: int, length: int) -> int:
    """Forward matmul FLOPs (2 per multiply-add) of one batch, for MFU accounting.

    Projections, full (unmasked) attention scores and weighted values, MLP and logits; norms,
    softmax, biases and the dconv filters (`decoder_lm_dconv_flops`) are ignored.
    """
    d, inner, ff = cfg.d_model, cfg.qkv_dim, cfg.d_ff
    n_in = 2 if cfg.resolved_mlp in GATED else 1
    per_layer = 2 * length * d * inner * 4 + 2 * 2 * length * length * inner
    per_layer += 2 * length * d * ff * (n_in + 1)
    return batch * (cfg.num_layers * per_layer + 2 * length * d * cfg.vocab_size)


def decoder_lm_dconv_flops(cfg: DecoderLMConfig, batch: int, length: int) -> int:
    """Forward FLOPs of the Q/K/V dconvs: 3 convs x 3 taps x 2 (a multiply-add per tap, as for
    matmuls) = 18 per channel of ``heads * head_dim``, token and layer; 0 without dconv."""
    if not cfg.dconv:
        return 0
    return 3 * DCONV_WIDTH * 2 * batch * length * cfg.qkv_dim * cfg.num_layers


def decoder_lm_train_flops(cfg: DecoderLMConfig, batch: int, length: int) -> int:
    """Model FLOPs of one training step: 3 x the forward (matmuls + dconv), the usual
    forward + 2 x forward for the backward."""
    return 3 * (decoder_lm_matmul_flops(cfg, batch, length)
                + decoder_lm_dconv_flops(cfg, batch, length))


__all__ = [
    "DCONV_INIT",
    "DECODER_LM_PRESETS",
    "FIDELITIES",
    "TRANSFORMER_PP_D_FF",
    "VARIANTS",
    "CausalSelfAttention",
    "DecoderLM",
    "DecoderLMConfig",
    "DepthwiseConv",
    "FeedForward",
    "broadcast_over_batch",
    "causal_depthwise_conv",
    "decoder_lm_config",
    "decoder_lm_config_from_dict",
    "decoder_lm_logits",
    "decoder_lm_dconv_flops",
    "decoder_lm_matmul_flops",
    "decoder_lm_train_flops",
    "validate_decoder_lm_config",
]
