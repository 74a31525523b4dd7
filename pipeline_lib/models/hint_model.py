"""HINT's modules: the hypernetwork (`Hypernet`: ``component_embedding``, ``hyperattn`` and one
generator MLP per generated tensor) and `HyperT5`, a T5 that carries it under ``hyper/`` and runs
the instances with the generated adapters, prefixes and FiD. Semantics: `models.hint`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from pipeline_lib.errors import ConfigError
from pipeline_lib.models.hint_config import HyperT5Config, validate_hint_config
from pipeline_lib.models.layers import (
    MLP_INIT,
    Array,
    Attention,
    Dense,
    KVCache,
    ParallelAdapter,
    dropout,
    make_attention_mask,
    split_rng,
)
from pipeline_lib.models.t5 import T5, LayerModules

# --------------------------------------------------------------------------------------------
# The hypernetwork.
# --------------------------------------------------------------------------------------------

COMPONENT_INIT = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
"""``component_embedding`` [L*C, d]: with in_axis -2 = out_axis 0, fan_in works out to d, so
N(0, 1/d) (upstream ``variance_scaling(1.0, "fan_in", "normal", out_axis=0)``)."""

GENERATOR_NAMES = {
    "adapter_wd": "adapter_down", "adapter_wu": "adapter_up",
    "adapter_bd": "adapter_bias_down", "adapter_bu": "adapter_bias_up",
    "prefix_key": "prefix_key", "prefix_value": "prefix_value",
}
"""Generated tensor -> its generator MLP's parameter name under ``hyper/`` (upstream names)."""


class GeneratedModules(NamedTuple):
    """Per-example generated tensors over all L slots (None when that part is off).

    ``adapter_wd [B,L,d,a]``, ``adapter_wu [B,L,a,d]``, ``adapter_bd [B,L,a]``,
    ``adapter_bu [B,L,d]``, ``prefix_key``/``prefix_value [B,L,P,H,Dh]``.
    """

    adapter_wd: Array | None = None
    adapter_wu: Array | None = None
    adapter_bd: Array | None = None
    adapter_bu: Array | None = None
    prefix_key: Array | None = None
    prefix_value: Array | None = None


def generated_shapes(cfg: HyperT5Config, batch: int) -> dict[str, tuple[int, ...]]:
    """The shape of every generated tensor (the issue's table)."""
    b, n, d, a = batch, cfg.num_slots, cfg.d_model, cfg.adapter_size
    prefix = (b, n, cfg.num_prefix_tokens, cfg.num_heads, cfg.resolved_head_dim)
    shapes = {"adapter_wd": (b, n, d, a), "adapter_wu": (b, n, a, d),
              "adapter_bd": (b, n, a), "adapter_bu": (b, n, d),
              "prefix_key": prefix, "prefix_value": prefix}
    return {k: v for k, v in shapes.items() if k in cfg.component_ranges}


def generator_out_features(cfg: HyperT5Config, kind: str) -> int:
    return {"adapter_wd": cfg.d_model, "adapter_wu": cfg.d_model, "adapter_bd": cfg.adapter_size,
            "adapter_bu": cfg.d_model, "prefix_key": cfg.qkv_dim, "prefix_value": cfg.qkv_dim}[kind]


class GeneratorMlp(nnx.Module):
    """Upstream ``MlpBlock(intermediate_dim=d, output_dim=out, activations=('gelu',))``: bias-free
    ``wo(dropout(gelu(wi x)))``, dropout shared along the component-row axis (-2)."""

    def __init__(self, d_model: int, out: int, *, dropout_rate: float, dtype: Any,
                 rngs: nnx.Rngs):
        self.dropout_rate = dropout_rate
        self.wi = Dense(d_model, d_model, kernel_init=MLP_INIT, dtype=dtype, rngs=rngs)
        self.wo = Dense(d_model, out, kernel_init=MLP_INIT, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array, *, rng: Array | None = None) -> Array:
        h = jax.nn.gelu(self.wi(x), approximate=True)  # flax nn.gelu's default: tanh form
        return self.wo(dropout(h, self.dropout_rate, rng, broadcast_dims=(-2,)))


class Hypernet(nnx.Module):
    """``component_embedding`` + ``hyperattn`` + one `GeneratorMlp` per generated tensor."""

    def __init__(self, cfg: HyperT5Config, *, rngs: nnx.Rngs):
        self.config = cfg
        rows = cfg.num_slots * cfg.num_components
        self.component_embedding = nnx.Param(
            COMPONENT_INIT(rngs.params(), (rows, cfg.d_model), jnp.float32)
        )
        self.hyperattn = Attention(
            cfg.d_model, cfg.num_heads, cfg.resolved_head_dim, dropout_rate=cfg.dropout_rate,
            float32_logits=cfg.float32_attention_logits, dtype=cfg.compute_dtype, rngs=rngs,
        )
        for kind in cfg.component_ranges:
            setattr(self, GENERATOR_NAMES[kind], GeneratorMlp(
                cfg.d_model, generator_out_features(cfg, kind),
                dropout_rate=cfg.generator_dropout_rate, dtype=cfg.compute_dtype, rngs=rngs,
            ))

    def __call__(
        self, instruction: Array, hyper_valid: Array, *, rng: Array | None = None
    ) -> GeneratedModules:
        """H_instr ``[B, I, d]`` (masked) and its validity ``[B, I]`` -> the generated modules."""
        cfg = self.config
        batch, slots, comps = instruction.shape[0], cfg.num_slots, cfg.num_components
        table = self.component_embedding[...]
        if table.shape[0] != slots * comps:
            raise ConfigError(
                f"hyper/component_embedding: {table.shape[0]} rows, expected L*C = "
                f"{slots}*{comps} = {slots * comps} for this config"
            )
        r_attn, *r_gen = split_rng(rng, 1 + len(cfg.component_ranges))
        queries = jnp.broadcast_to(table[None], (batch, *table.shape))
        mask = make_attention_mask(jnp.ones((batch, table.shape[0]), bool), hyper_valid)
        summary = self.hyperattn(queries, instruction, mask, rng=r_attn)
        summary = summary.reshape(batch, slots, comps, cfg.d_model)
        shapes = generated_shapes(cfg, batch)
        out = {}
        for (kind, (start, end)), r in zip(cfg.component_ranges.items(), r_gen):
            generator: GeneratorMlp = getattr(self, GENERATOR_NAMES[kind])
            values = generator(summary[:, :, start:end], rng=r)
            out[kind] = values.reshape(shapes[kind]) / math.sqrt(cfg.d_model)
        return GeneratedModules(**out)


class HyperT5(T5):
    """T5 (same attributes and T5X parameter paths) plus ``hyper``, the hypernetwork."""

    def __init__(self, config: HyperT5Config, *, rngs: nnx.Rngs):
        validate_hint_config(config)
        super().__init__(config, rngs=rngs)
        self.hyper = Hypernet(config, rngs=rngs)

    def hyperencode(self, hyper_tokens: Array, *, rng: Array | None = None) -> tuple[Array, Array]:
        """``hyper_tokens [B, I]`` -> (H_instr ``[B, I, d]`` zeroed at padding, valid ``[B, I]``).

        The shared encoder with no generated module (upstream ``hyper=True``).
        """
        if hyper_tokens.ndim != 2 or hyper_tokens.shape[1] == 0:
            raise ConfigError(f"hyper_inputs: empty instructions (shape {hyper_tokens.shape})")
        valid = hyper_tokens > 0
        if self.config.hyperencoder_self_mask:
            encoded = self.encode(hyper_tokens, rng=rng)
        else:  # upstream: HyperEncoder(..., encoder_mask=None), padding is attended
            batch, length = hyper_tokens.shape
            full = jnp.ones((batch, 1, length, length), bool)
            encoded = self.encoder(self.token_embedder(hyper_tokens), full, rng=rng)
        return encoded * valid[..., None].astype(encoded.dtype), valid

    def layer_modules(
        self, modules: GeneratedModules
    ) -> tuple[tuple[LayerModules, ...], tuple[LayerModules, ...]]:
        """Slots -> per-layer modules: encoder layer l slot l; decoder layer i uses slot
        n_enc + 2i (adapter, self-attention prefix) and n_enc + 2i + 1 (cross prefix)."""
        cfg = self.config

        def adapter(slot: int) -> ParallelAdapter | None:
            if modules.adapter_wd is None:
                return None
            return ParallelAdapter(modules.adapter_wd[:, slot], modules.adapter_wu[:, slot],
                                   modules.adapter_bd[:, slot], modules.adapter_bu[:, slot])

        def prefix(slot: int) -> KVCache | None:
            if modules.prefix_key is None:
                return None
            return KVCache(modules.prefix_key[:, slot], modules.prefix_value[:, slot])

        n_enc = cfg.num_encoder_layers
        enc = tuple(LayerModules(adapter(l), prefix(l)) for l in range(n_enc))
        dec = tuple(
            LayerModules(adapter(n_enc + 2 * i), prefix(n_enc + 2 * i), prefix(n_enc + 2 * i + 1))
            for i in range(cfg.num_decoder_layers)
        )
        return enc, dec

    def instruction_modules(
        self, hyper_tokens: Array, *, rng: Array | None = None
    ) -> tuple[Array, Array, GeneratedModules]:
        """(H_instr masked, its validity, generated modules) of a batch of instructions."""
        r_henc, r_gen = split_rng(rng, 2)
        instruction, valid = self.hyperencode(hyper_tokens, rng=r_henc)
        return instruction, valid, self.hyper(instruction, valid, rng=r_gen)

    def encode_instances(
        self, input_tokens: Array, instruction: Array, hyper_valid: Array,
        modules: GeneratedModules, *, rng: Array | None = None,
    ) -> tuple[Array, Array]:
        """Instances through the encoder with their modules; FiD-joined. (encoded, enc_mask)."""
        enc_modules, _ = self.layer_modules(modules)
        encoded = self.encode(input_tokens, rng=rng, modules=enc_modules)
        valid = input_tokens > 0
        if self.config.use_fusion_in_decoder:
            encoded = jnp.concatenate([instruction.astype(encoded.dtype), encoded], axis=1)
            valid = jnp.concatenate([hyper_valid, valid], axis=1)
        return encoded, valid

    def decode_with(
        self,
        encoded: Array | Sequence[KVCache],
        enc_mask: Array,
        modules: GeneratedModules,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array | None = None,
        *,
        rng: Array | None = None,
    ) -> Array:
        """Teacher-forced logits; ``encoded`` is ``[B, K, d]`` or per-layer cross keys/values."""
        _, dec_modules = self.layer_modules(modules)
        cross_kvs = None
        if isinstance(encoded, (tuple, list)):  # per-layer KVCache from the task cache
            cross_kvs, encoded = tuple(encoded), None
        return self.decode(
            encoded, enc_mask.astype(jnp.int32), decoder_input_tokens, decoder_target_tokens,
            rng=rng, modules=dec_modules, cross_kvs=cross_kvs,
        )

    def __call__(
        self,
        hyper_tokens: Array,
        input_tokens: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array | None = None,
        *,
        dropout_rng: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """The released forward (modules generated per example): logits ``[B, Y, vocab]``."""
        rng = self._dropout_rng(dropout_rng, deterministic)
        r_hyper, r_enc, r_dec = split_rng(rng, 3)
        instruction, valid, modules = self.instruction_modules(hyper_tokens, rng=r_hyper)
        encoded, enc_mask = self.encode_instances(input_tokens, instruction, valid, modules,
                                                  rng=r_enc)
        return self.decode_with(encoded, enc_mask, modules, decoder_input_tokens,
                                decoder_target_tokens, rng=r_dec)


__all__ = [
    "COMPONENT_INIT",
    "GENERATOR_NAMES",
    "GeneratedModules",
    "GeneratorMlp",
    "HyperT5",
    "Hypernet",
    "generated_shapes",
    "generator_out_features",
]
