"""T5 v1.0 / v1.1 encoder-decoder in flax NNX, built as T5X builds it.

What makes it T5X's T5 (``t5x/examples/t5/network.py``; reference: wu2022 §3.1, §8):
pre-LN blocks with RMS LayerNorm (scale only, eps 1e-6); no biases; unscaled attention with the
1/sqrt(head_dim) folded into the query initialiser; one relative-position bias table per stack
(32 buckets, max distance 128; bidirectional in the encoder, causal in the decoder); dropout with
T5X's masks (shared along the length axis); final ``encoder_norm``/``decoder_norm``; v1.0 logits
through the transposed token embedding divided by sqrt(d_model), v1.1 through
``decoder/logits_dense``; T5X's default initialisers.

Parameter names, flattened with '/', are T5X's (`flat_params`), e.g. for layer i:

    token_embedder/embedding                                      [vocab, d_model]
    encoder/layers_i/attention/{query,key,value}/kernel           [d_model, heads * head_dim]
    encoder/layers_i/attention/out/kernel                         [heads * head_dim, d_model]
    encoder/layers_i/{pre_attention_layer_norm,pre_mlp_layer_norm}/scale
    encoder/layers_i/mlp/{wi,wo}/kernel        (gated MLPs: wi_0, wi_1, wo)
    encoder/{encoder_norm/scale, relpos_bias/rel_embedding [heads, buckets]}
    decoder/layers_i/{self_attention,encoder_decoder_attention}/{query,key,value,out}/kernel
    decoder/layers_i/{pre_self_attention_layer_norm,pre_cross_attention_layer_norm,
                      pre_mlp_layer_norm}/scale
    decoder/layers_i/mlp/...
    decoder/{decoder_norm/scale, relpos_bias/rel_embedding}
    decoder/logits_dense/kernel                                   (v1.1 only) [d_model, vocab]

Parameters are float32; ``config.dtype`` ("bfloat16" on accelerators) sets the compute dtype,
with LayerNorm statistics and logits in float32 as in T5X.

Two ways to run it:

* Object style: ``model = T5(cfg, rngs=nnx.Rngs(params=0)); logits = model(enc, dec_in)``.
* Functional style for a pure jitted step: ``graphdef, params, rest = split_model(model)``, then
  ``t5_forward(graphdef, params, rest, enc, dec_in, dropout_rng=key, deterministic=False)``
  inside ``jax.jit``/``jax.grad`` over ``params``; ``nnx.update(model, params)`` at the edges.

Masks come from pad id 0, as in T5X: encoder keys/queries with token 0 are masked; decoder
padding comes from ``decoder_target_tokens`` when given (T5X's choice: the first decoder input is
the pad id 0, so the inputs cannot tell padding); optional segment ids give packed examples
block-diagonal masks. Decoding (`init_cache` + `decode_step`) encodes once, projects the
cross-attention keys/values once, and appends one position per step to a self-attention cache.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from pipeline_lib.models.configs import T5Config, validate_t5_config
from pipeline_lib.models.layers import (
    MLP_INIT,
    Array,
    Attention,
    Dense,
    Embed,
    KVCache,
    Mlp,
    ParallelAdapter,
    RelativePositionBias,
    RMSNorm,
    dropout,
    make_attention_mask,
    parallel_adapter,
    split_rng,
)

# --------------------------------------------------------------------------------------------
# Blocks.
# --------------------------------------------------------------------------------------------


def _attention(cfg: T5Config, rngs: nnx.Rngs) -> Attention:
    return Attention(
        cfg.d_model, cfg.num_heads, cfg.resolved_head_dim, dropout_rate=cfg.dropout_rate,
        float32_logits=cfg.float32_attention_logits, dtype=cfg.compute_dtype, rngs=rngs,
    )


def _mlp(cfg: T5Config, rngs: nnx.Rngs) -> Mlp:
    return Mlp(
        cfg.d_model, cfg.d_ff, kind=cfg.mlp, dropout_rate=cfg.dropout_rate,
        dtype=cfg.compute_dtype, rngs=rngs,
    )


def _norm(cfg: T5Config) -> RMSNorm:
    return RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps, dtype=cfg.compute_dtype)


class LayerModules(NamedTuple):
    """Per-example modules one layer may use (HINT's generated adapters and prefixes).

    Every field None (or no ``modules`` argument at all) runs plain T5 with exactly the ops it
    had before these hooks existed. ``cross_prefix`` only applies to decoder layers.
    """

    adapter: ParallelAdapter | None = None
    self_prefix: KVCache | None = None
    cross_prefix: KVCache | None = None


_NO_MODULES = LayerModules()


def _mlp_block(
    layer: EncoderLayer | DecoderLayer,
    x: Array,
    adapter: ParallelAdapter | None,
    r_mlp: Array | None,
    r_out: Array | None,
) -> Array:
    """``x + dropout(MLP(LN(x)))``, plus HINT's parallel adapter on LN(x) when given:
    ``x + (dropout(MLP(h)) + adapter(h))``, no dropout on the adapter branch [code]."""
    h = layer.pre_mlp_layer_norm(x)
    y = dropout(layer.mlp(h, rng=r_mlp), layer.dropout_rate, r_out, broadcast_dims=(-2,))
    if adapter is not None:
        y = y + parallel_adapter(h, adapter)
    return x + y


class EncoderLayer(nnx.Module):
    """Pre-LN self-attention + MLP, each followed by dropout and a residual add."""

    def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
        self.dropout_rate = cfg.dropout_rate
        self.pre_attention_layer_norm = _norm(cfg)
        self.attention = _attention(cfg, rngs)
        self.pre_mlp_layer_norm = _norm(cfg)
        self.mlp = _mlp(cfg, rngs)

    def __call__(
        self,
        x: Array,
        mask: Array,
        bias: Array,
        *,
        rng: Array | None = None,
        modules: LayerModules | None = None,
    ) -> Array:
        modules = _NO_MODULES if modules is None else modules
        r_attn, r_attn_out, r_mlp, r_mlp_out = split_rng(rng, 4)
        h = self.pre_attention_layer_norm(x)
        h = self.attention(h, h, mask, bias, rng=r_attn, prefix_kv=modules.self_prefix)
        x = x + dropout(h, self.dropout_rate, r_attn_out, broadcast_dims=(-2,))
        return _mlp_block(self, x, modules.adapter, r_mlp, r_mlp_out)


class DecoderLayer(nnx.Module):
    """Pre-LN causal self-attention, encoder-decoder attention and MLP."""

    def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
        self.dropout_rate = cfg.dropout_rate
        self.pre_self_attention_layer_norm = _norm(cfg)
        self.self_attention = _attention(cfg, rngs)
        self.pre_cross_attention_layer_norm = _norm(cfg)
        self.encoder_decoder_attention = _attention(cfg, rngs)
        self.pre_mlp_layer_norm = _norm(cfg)
        self.mlp = _mlp(cfg, rngs)

    def _cross_and_mlp(
        self,
        y: Array,
        cross_kv: KVCache,
        cross_mask: Array,
        rngs: tuple[Array | None, ...],
        modules: LayerModules = _NO_MODULES,
    ) -> Array:
        r_cross, r_cross_out, r_mlp, r_mlp_out = rngs
        h = self.pre_cross_attention_layer_norm(y)
        h = self.encoder_decoder_attention.attend_cached(
            h, cross_kv, cross_mask, rng=r_cross, prefix_kv=modules.cross_prefix
        )
        y = y + dropout(h, self.dropout_rate, r_cross_out, broadcast_dims=(-2,))
        return _mlp_block(self, y, modules.adapter, r_mlp, r_mlp_out)

    def __call__(
        self,
        y: Array,
        encoded: Array,
        self_mask: Array,
        self_bias: Array,
        cross_mask: Array,
        *,
        rng: Array | None = None,
        modules: LayerModules | None = None,
        cross_kv: KVCache | None = None,
    ) -> Array:
        """``cross_kv``: the encoder keys/values already projected (then ``encoded`` is unused),
        e.g. HINT's per-task cache of the instruction's projections."""
        modules = _NO_MODULES if modules is None else modules
        r_self, r_self_out, *rest = split_rng(rng, 6)
        h = self.pre_self_attention_layer_norm(y)
        h = self.self_attention(
            h, h, self_mask, self_bias, rng=r_self, prefix_kv=modules.self_prefix
        )
        y = y + dropout(h, self.dropout_rate, r_self_out, broadcast_dims=(-2,))
        if cross_kv is None:
            cross_kv = self.encoder_decoder_attention.key_value(encoded)
        return self._cross_and_mlp(y, cross_kv, cross_mask, tuple(rest), modules)

    def step(
        self,
        y: Array,
        cache: KVCache,
        cross_kv: KVCache,
        index: Array,
        self_mask: Array,
        self_bias: Array,
        cross_mask: Array,
        *,
        modules: LayerModules | None = None,
    ) -> tuple[Array, KVCache]:
        """One decoding position ``y [b, 1, d]`` (no dropout); returns the updated cache."""
        modules = _NO_MODULES if modules is None else modules
        h, cache = self.self_attention.step(
            self.pre_self_attention_layer_norm(y), cache, index, self_mask, self_bias,
            prefix_kv=modules.self_prefix,
        )
        return self._cross_and_mlp(y + h, cross_kv, cross_mask, (None,) * 4, modules), cache


# --------------------------------------------------------------------------------------------
# Stacks. Layers are attributes ``layers_0``, ``layers_1``, ... so paths match T5X.
# --------------------------------------------------------------------------------------------


class Encoder(nnx.Module):
    """Embedded tokens -> dropout -> layers (shared relpos bias) -> encoder_norm -> dropout."""

    def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
        self.num_layers = cfg.num_encoder_layers
        self.dropout_rate = cfg.dropout_rate
        self.relpos_bias = RelativePositionBias(
            cfg.num_heads, num_buckets=cfg.relpos_buckets, max_distance=cfg.relpos_max_distance,
            bidirectional=True, dtype=cfg.compute_dtype, rngs=rngs,
        )
        for i in range(self.num_layers):
            setattr(self, f"layers_{i}", EncoderLayer(cfg, rngs=rngs))
        self.encoder_norm = _norm(cfg)

    def layers(self) -> list[EncoderLayer]:
        return [getattr(self, f"layers_{i}") for i in range(self.num_layers)]

    def __call__(
        self,
        x: Array,
        mask: Array,
        *,
        rng: Array | None = None,
        modules: Sequence[LayerModules] | None = None,
    ) -> Array:
        """``x [b, l, d]`` embedded tokens, ``mask [b, 1, l, l]`` bool -> ``[b, l, d]``.

        ``modules``: one `LayerModules` per layer (HINT), or None for plain T5.
        """
        r_in, r_out, *r_layers = split_rng(rng, self.num_layers + 2)
        length = x.shape[-2]
        bias = self.relpos_bias(length, length)  # once per stack: the table is shared
        x = dropout(x, self.dropout_rate, r_in, broadcast_dims=(-2,))
        per_layer = (None,) * self.num_layers if modules is None else tuple(modules)
        for layer, r, mods in zip(self.layers(), r_layers, per_layer, strict=True):
            x = layer(x, mask, bias, rng=r, modules=mods)
        # T5X's last encoder dropout is the only one without broadcast_dims.
        return dropout(self.encoder_norm(x), self.dropout_rate, r_out)


class Decoder(nnx.Module):
    """Embedded decoder inputs -> dropout -> layers -> decoder_norm -> dropout (hidden states).

    Logits are taken by `T5.logits`, because the v1.0 ones reuse the token embedding; the v1.1
    ``logits_dense`` kernel lives here so that its path is ``decoder/logits_dense/kernel``.
    """

    def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
        self.num_layers = cfg.num_decoder_layers
        self.dropout_rate = cfg.dropout_rate
        self.relpos_bias = RelativePositionBias(
            cfg.num_heads, num_buckets=cfg.relpos_buckets, max_distance=cfg.relpos_max_distance,
            bidirectional=False, dtype=cfg.compute_dtype, rngs=rngs,
        )
        for i in range(self.num_layers):
            setattr(self, f"layers_{i}", DecoderLayer(cfg, rngs=rngs))
        self.decoder_norm = _norm(cfg)
        if not cfg.tie_embeddings:
            # T5X: DenseGeneral default init, computed in float32 for stability.
            self.logits_dense = Dense(
                cfg.d_model, cfg.vocab_size, kernel_init=MLP_INIT, dtype=jnp.float32, rngs=rngs
            )

    def layers(self) -> list[DecoderLayer]:
        return [getattr(self, f"layers_{i}") for i in range(self.num_layers)]

    def __call__(
        self,
        y: Array,
        encoded: Array,
        self_mask: Array,
        cross_mask: Array,
        *,
        rng: Array | None = None,
        modules: Sequence[LayerModules] | None = None,
        cross_kvs: Sequence[KVCache] | None = None,
    ) -> Array:
        """``modules``: one `LayerModules` per layer (HINT) or None; ``cross_kvs``: per layer,
        the encoder keys/values already projected (then ``encoded`` may be None)."""
        r_in, r_out, *r_layers = split_rng(rng, self.num_layers + 2)
        length = y.shape[-2]
        self_bias = self.relpos_bias(length, length)
        y = dropout(y, self.dropout_rate, r_in, broadcast_dims=(-2,))
        per_layer = (None,) * self.num_layers if modules is None else tuple(modules)
        kvs = (None,) * self.num_layers if cross_kvs is None else tuple(cross_kvs)
        for layer, r, mods, kv in zip(self.layers(), r_layers, per_layer, kvs, strict=True):
            y = layer(y, encoded, self_mask, self_bias, cross_mask, rng=r, modules=mods,
                      cross_kv=kv)
        return dropout(self.decoder_norm(y), self.dropout_rate, r_out, broadcast_dims=(-2,))

    def step(
        self,
        y: Array,
        caches: tuple[KVCache, ...],
        cross_kvs: tuple[KVCache, ...],
        index: Array,
        encoder_valid: Array,
        *,
        modules: Sequence[LayerModules] | None = None,
    ) -> tuple[Array, tuple[KVCache, ...]]:
        """Hidden state of one position ``y [b, 1, d]`` at ``index``, and the updated caches."""
        max_length = caches[0].key.shape[1]
        self_mask = (jnp.arange(max_length) <= index)[None, None, None, :]  # written so far
        self_bias = self.relpos_bias.step(index, max_length)
        cross_mask = encoder_valid[:, None, None, :]
        new_caches = []
        per_layer = (None,) * self.num_layers if modules is None else tuple(modules)
        for layer, cache, cross_kv, mods in zip(
            self.layers(), caches, cross_kvs, per_layer, strict=True
        ):
            y, cache = layer.step(
                y, cache, cross_kv, index, self_mask, self_bias, cross_mask, modules=mods
            )
            new_caches.append(cache)
        return self.decoder_norm(y), tuple(new_caches)


# --------------------------------------------------------------------------------------------
# The model.
# --------------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeCache:
    """Everything incremental decoding carries from step to step (a pytree).

    All arrays but ``index`` have the batch first, so beam search can expand or reorder
    hypotheses with `take`.
    """

    index: Array  # int32 scalar: position of the next decoder input token
    encoder_valid: Array  # [batch, enc_len] bool: encoder tokens that are not padding
    cross: tuple[KVCache, ...]  # per decoder layer: projected encoder keys/values
    self_attn: tuple[KVCache, ...]  # per decoder layer: [batch, max_len, heads, head_dim]

    def take(self, indices: Array) -> DecodeCache:
        """The cache of batch rows ``indices`` (e.g. repeat for beams, or reorder them)."""
        pick = lambda x: jnp.take(x, indices, axis=0)
        return DecodeCache(
            self.index,
            pick(self.encoder_valid),
            jax.tree.map(pick, self.cross),
            jax.tree.map(pick, self.self_attn),
        )


class T5(nnx.Module):
    """T5 encoder-decoder (v1.0 or v1.1 by config). Logits are float32 ``[b, l, vocab]``."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.config = validate_t5_config(config)
        self.token_embedder = Embed(
            config.vocab_size, config.d_model, dtype=config.compute_dtype, rngs=rngs
        )
        self.encoder = Encoder(config, rngs=rngs)
        self.decoder = Decoder(config, rngs=rngs)

    def _dropout_rng(self, dropout_rng: Array | None, deterministic: bool) -> Array | None:
        if deterministic or self.config.dropout_rate == 0.0:
            return None
        if dropout_rng is None:
            raise ValueError(
                "dropout_rng is required when deterministic=False and dropout_rate > 0"
            )
        return dropout_rng

    def encode(
        self,
        encoder_input_tokens: Array,
        *,
        encoder_segment_ids: Array | None = None,
        rng: Array | None = None,
        modules: Sequence[LayerModules] | None = None,
    ) -> Array:
        """``[b, l]`` token ids (0 = padding) -> encoded ``[b, l, d_model]`` (after
        ``encoder_norm`` and its dropout). ``modules``: per encoder layer (HINT), or None."""
        valid = encoder_input_tokens > 0
        mask = make_attention_mask(valid, valid)
        if encoder_segment_ids is not None:
            mask &= _segment_mask(encoder_segment_ids, encoder_segment_ids)
        return self.encoder(
            self.token_embedder(encoder_input_tokens), mask, rng=rng, modules=modules
        )

    def logits(self, hidden: Array) -> Array:
        """Decoder hidden states -> float32 logits (tied and scaled, or ``logits_dense``)."""
        if self.config.tie_embeddings:
            return self.token_embedder.attend(hidden) / math.sqrt(hidden.shape[-1])
        return self.decoder.logits_dense(hidden)

    def decode(
        self,
        encoded: Array,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array | None = None,
        *,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        rng: Array | None = None,
        modules: Sequence[LayerModules] | None = None,
        cross_kvs: Sequence[KVCache] | None = None,
    ) -> Array:
        """Teacher-forced decoder over all positions -> logits ``[b, l_dec, vocab]``.

        Without ``decoder_target_tokens`` every decoder position counts as real: that changes
        only the logits at padded target positions, which the loss ignores.
        ``encoder_input_tokens`` only gives the cross-attention mask (nonzero = attended).
        ``modules`` (per decoder layer) and ``cross_kvs`` (per decoder layer, projected encoder
        keys/values used instead of ``encoded``) are HINT's hooks; None = plain T5.
        """
        length = decoder_input_tokens.shape[-1]
        causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
        if decoder_target_tokens is not None:
            dec_valid = decoder_target_tokens > 0
        else:
            dec_valid = jnp.ones(decoder_input_tokens.shape, bool)
        self_mask = causal & make_attention_mask(dec_valid, dec_valid)
        cross_mask = make_attention_mask(dec_valid, encoder_input_tokens > 0)
        if decoder_segment_ids is not None:
            self_mask &= _segment_mask(decoder_segment_ids, decoder_segment_ids)
            if encoder_segment_ids is not None:
                cross_mask &= _segment_mask(decoder_segment_ids, encoder_segment_ids)
        hidden = self.decoder(
            self.token_embedder(decoder_input_tokens), encoded, self_mask, cross_mask, rng=rng,
            modules=modules, cross_kvs=cross_kvs,
        )
        return self.logits(hidden)

    def __call__(
        self,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array | None = None,
        *,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        dropout_rng: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """Full teacher-forced forward: logits ``[b, l_dec, vocab]`` (float32).

        Dropout needs ``deterministic=False`` and a ``dropout_rng`` key (unless the rate is 0).
        """
        rng = self._dropout_rng(dropout_rng, deterministic)
        r_enc, r_dec = split_rng(rng, 2)
        encoded = self.encode(
            encoder_input_tokens, encoder_segment_ids=encoder_segment_ids, rng=r_enc
        )
        return self.decode(
            encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
            encoder_segment_ids=encoder_segment_ids, decoder_segment_ids=decoder_segment_ids,
            rng=r_dec,
        )

    def init_cache(self, encoder_input_tokens: Array, max_decode_length: int) -> DecodeCache:
        """Encode once and project every layer's cross-attention keys/values once."""
        cfg = self.config
        encoded = self.encode(encoder_input_tokens)
        batch = encoder_input_tokens.shape[0]
        shape = (batch, max_decode_length, cfg.num_heads, cfg.resolved_head_dim)
        empty = KVCache(jnp.zeros(shape, cfg.compute_dtype), jnp.zeros(shape, cfg.compute_dtype))
        layers = self.decoder.layers()
        return DecodeCache(
            index=jnp.zeros((), jnp.int32),
            encoder_valid=encoder_input_tokens > 0,
            cross=tuple(layer.encoder_decoder_attention.key_value(encoded) for layer in layers),
            self_attn=(empty,) * len(layers),
        )

    def decode_step(
        self,
        cache: DecodeCache,
        tokens: Array,
        *,
        modules: Sequence[LayerModules] | None = None,
    ) -> tuple[Array, DecodeCache]:
        """Feed decoder input ``tokens [b]`` at ``cache.index``; logits ``[b, vocab]`` of the next.

        Decoding masks no decoder padding (T5X does the same); the caller stops at EOS.
        ``modules``: per decoder layer (HINT's adapters and prefixes, prepended every step).
        """
        y = self.token_embedder(tokens[:, None])
        hidden, self_attn = self.decoder.step(
            y, cache.self_attn, cache.cross, cache.index, cache.encoder_valid, modules=modules
        )
        new_cache = dataclasses.replace(cache, index=cache.index + 1, self_attn=self_attn)
        return self.logits(hidden)[:, 0], new_cache


def _segment_mask(query_segments: Array, key_segments: Array) -> Array:
    """Packed examples attend within their segment only: ``[b, 1, q, k]``."""
    return (query_segments[:, None, :, None] == key_segments[:, None, None, :])


# --------------------------------------------------------------------------------------------
# Functional API (pure functions of graphdef + state, for jax.jit / jax.grad).
# --------------------------------------------------------------------------------------------


def shift_right(
    targets: Array, *, segment_ids: Array | None = None, start_id: int = 0
) -> Array:
    """Decoder inputs: targets shifted right by one, starting with ``start_id`` (pad id 0).

    With ``segment_ids`` (packed examples) the first position of every segment gets
    ``start_id`` too, instead of the previous segment's last token (seqio's
    ``autoregressive_inputs``).
    """
    pad = [(0, 0)] * (targets.ndim - 1) + [(1, 0)]
    shifted = jnp.pad(targets, pad, constant_values=start_id)[..., :-1]
    if segment_ids is not None:
        previous = jnp.pad(segment_ids, pad, constant_values=0)[..., :-1]
        shifted = jnp.where(segment_ids == previous, shifted, start_id)
    return shifted.astype(targets.dtype)


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """``graphdef, params, rest = nnx.split(model, nnx.Param, ...)``; "rest" is empty for T5."""
    return nnx.split(model, nnx.Param, ...)


def t5_forward(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    rest: nnx.State,
    encoder_input_tokens: Array,
    decoder_input_tokens: Array,
    decoder_target_tokens: Array | None = None,
    *,
    encoder_segment_ids: Array | None = None,
    decoder_segment_ids: Array | None = None,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
) -> Array:
    """Pure `T5.__call__`: float32 logits ``[b, l_dec, vocab]``. See the module docstring."""
    model: T5 = nnx.merge(graphdef, params, rest)
    return model(
        encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
        encoder_segment_ids=encoder_segment_ids, decoder_segment_ids=decoder_segment_ids,
        dropout_rng=dropout_rng, deterministic=deterministic,
    )


def t5_batch_forward(graphdef: nnx.GraphDef, rest: nnx.State):
    """``forward(params, batch, rng) -> logits`` over the pipeline's T5 batch dicts (packed or
    not); ``rng`` None = deterministic (evaluation). What the training engine's loss wraps."""

    def forward(params, batch, rng):
        return t5_forward(
            graphdef, params, rest,
            batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch["decoder_target_tokens"],
            encoder_segment_ids=batch.get("encoder_segment_ids"),
            decoder_segment_ids=batch.get("decoder_segment_ids"),
            dropout_rng=rng, deterministic=rng is None,
        )

    return forward


def t5_init_cache(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    rest: nnx.State,
    encoder_input_tokens: Array,
    max_decode_length: int,
) -> DecodeCache:
    """Pure `T5.init_cache` (``max_decode_length`` must be static under jit)."""
    model: T5 = nnx.merge(graphdef, params, rest)
    return model.init_cache(encoder_input_tokens, max_decode_length)


def t5_decode_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    rest: nnx.State,
    cache: DecodeCache,
    tokens: Array,
) -> tuple[Array, DecodeCache]:
    """Pure `T5.decode_step`: logits ``[b, vocab]`` for the token after ``tokens [b]``."""
    model: T5 = nnx.merge(graphdef, params, rest)
    return model.decode_step(cache, tokens)


def t5_cached_logits(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    rest: nnx.State,
    encoder_input_tokens: Array,
    decoder_input_tokens: Array,
) -> Array:
    """Teacher-forced logits computed one position at a time through the cache.

    Encodes once, then scans `T5.decode_step` over the decoder inputs; equal to `t5_forward`
    (deterministic) up to float rounding. Useful to score candidates and to test the cache.
    """
    model: T5 = nnx.merge(graphdef, params, rest)
    cache = model.init_cache(encoder_input_tokens, decoder_input_tokens.shape[1])

    def body(cache: DecodeCache, tokens: Array) -> tuple[DecodeCache, Array]:
        logits, cache = model.decode_step(cache, tokens)
        return cache, logits

    _, logits = jax.lax.scan(body, cache, decoder_input_tokens.T)
    return jnp.swapaxes(logits, 0, 1)


def greedy_decode(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    rest: nnx.State,
    encoder_input_tokens: Array,
    max_decode_length: int,
    *,
    eos_id: int = 1,
) -> Array:
    """Argmax decoding ``[b, max_decode_length]`` int32; positions after EOS are 0 (padding).

    Fixed length (a ``lax.scan``), so it jits once per shape; ``max_decode_length`` is static.
    """
    model: T5 = nnx.merge(graphdef, params, rest)
    batch = encoder_input_tokens.shape[0]
    cache = model.init_cache(encoder_input_tokens, max_decode_length)

    def body(carry, _):
        cache, tokens, done = carry
        logits, cache = model.decode_step(cache, tokens)
        nxt = jnp.where(done, 0, jnp.argmax(logits, axis=-1).astype(jnp.int32))
        return (cache, nxt, done | (nxt == eos_id)), nxt

    start = (cache, jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), bool))
    _, tokens = jax.lax.scan(body, start, None, length=max_decode_length)
    return tokens.T


def t5_matmul_flops(cfg: T5Config, batch: int, encoder_length: int, decoder_length: int) -> int:
    """Forward-pass matmul FLOPs (2 per multiply-add) of one batch, for MFU accounting.

    Counts every projection, attention score and value product, MLP and the logits; ignores
    norms, softmax and biases (a few percent at most). A training step is ~3x this.
    """
    d, inner, ff, vocab = cfg.d_model, cfg.qkv_dim, cfg.d_ff, cfg.vocab_size
    n_in = 3 if cfg.mlp in ("gated-gelu", "swiglu") else 2  # wi (+ wi_1) and wo

    def attention(q_len: int, kv_len: int) -> int:
        projections = 2 * q_len * d * inner * 2 + 2 * kv_len * d * inner * 2  # q, out; k, v
        return projections + 2 * 2 * q_len * kv_len * inner  # scores and weighted values

    mlp = lambda n: 2 * n * d * ff * n_in
    enc = cfg.num_encoder_layers * (attention(encoder_length, encoder_length) + mlp(encoder_length))
    dec = cfg.num_decoder_layers * (
        attention(decoder_length, decoder_length)
        + attention(decoder_length, encoder_length)
        + mlp(decoder_length)
    )
    logits = 2 * decoder_length * d * vocab
    return batch * (enc + dec + logits)


__all__ = [
    "T5",
    "DecodeCache",
    "Decoder",
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "LayerModules",
    "greedy_decode",
    "shift_right",
    "split_model",
    "t5_cached_logits",
    "t5_decode_step",
    "t5_forward",
    "t5_init_cache",
    "t5_matmul_flops",
]
