"""Model size presets (frozen dataclasses) and their validation.

This module holds the validation helpers every model config shares (`require_choice`,
`require_positive_int`, ..., and `config_from_preset`: a preset name plus field overrides ->
a validated config) and the T5 configs; BERT's and the decoder LM's live beside their models.

A config is plain data: it is hashable (so it can sit in an NNX graphdef and key a jit cache),
YAML-friendly (``dtype`` is a string) and checked once, before any parameter is allocated, by
`validate_t5_config`, which raises a `ConfigError` (a `ValueError`) whose one message names the
offending key, e.g. ``model.num_heads: 6 does not divide model.d_model 512``.

The T5 presets follow T5X's gin files (``t5_1_0/small.gin``, ``t5_1_1/small.gin``); the laptop
sizes keep the same structure at a size a 2-core CPU trains in minutes. ``vocab_size`` is a field
because the project's ``laptop`` vocabulary layout is much smaller than T5's 32128.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax.numpy as jnp

from pipeline_lib.errors import ConfigError

MLP_TYPES = ("relu", "gated-gelu", "swiglu", "squared-relu")
"""MLP variants (see `layers.Mlp`): T5 v1.0 ReLU, T5 v1.1 gated-GELU, SwiGLU, Primer's
squared ReLU. Gated variants have kernels ``wi_0`` (activated), ``wi_1`` (linear) and ``wo``."""

DTYPES = ("float32", "bfloat16")
"""Compute dtypes. Parameters are always stored in float32, as in T5X (which never used float16:
its -1e10 attention-mask bias overflows there)."""


# --------------------------------------------------------------------------------------------
# Validation helpers shared by every model config (T5, BERT, decoder LM). Each raises one
# `ConfigError` naming the key as ``<prefix>.<name>``; callers check in a fixed order, so the
# first problem found is the one reported.
# --------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_check(allow_bool: bool) -> Callable[[Any], bool]:
    # bool is an int subclass: the T5 and decoder LM checks have always let True/False through
    # as 1/0 (BERT's never did). Kept per call site so that sharing the helpers changes nothing.
    return (lambda value: isinstance(value, (int, float))) if allow_bool else _is_number


def require_positive_int(prefix: str, name: str, value: Any) -> None:
    """Raise ``ConfigError('<prefix>.<name>: ...')`` unless value is an int >= 1."""
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{prefix}.{name}: {value!r} must be a positive integer")


def require_non_negative_int(prefix: str, name: str, value: Any) -> None:
    """Raise ``ConfigError`` naming the key unless value is an int >= 0."""
    if not _is_int(value) or value < 0:
        raise ConfigError(f"{prefix}.{name}: {value!r} must be a non-negative integer")


def require_choice(prefix: str, name: str, value: Any, allowed: tuple[str, ...], what: str) -> None:
    """Raise ``ConfigError`` naming the key unless value is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(
            f"{prefix}.{name}: {value!r} is not a known {what}; allowed: {', '.join(allowed)}"
        )


def require_dtype(prefix: str, value: Any) -> None:
    """``<prefix>.dtype`` must be one of `DTYPES`."""
    require_choice(prefix, "dtype", value, DTYPES, "compute dtype")


def require_bool(prefix: str, name: str, value: Any) -> None:
    """Raise ``ConfigError`` naming the key unless value is True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"{prefix}.{name}: {value!r} must be true or false")


def require_rate(prefix: str, name: str, value: Any, *, allow_bool: bool = False) -> None:
    """A probability such as a dropout rate: a number in [0, 1)."""
    if not _number_check(allow_bool)(value) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{prefix}.{name}: {value!r} must be in [0, 1)")


def require_positive_number(
    prefix: str, name: str, value: Any, *, allow_bool: bool = False
) -> None:
    """A number > 0 (an eps, an init scale)."""
    if not _number_check(allow_bool)(value) or not value > 0:
        raise ConfigError(f"{prefix}.{name}: {value!r} must be positive")


def require_divides(prefix: str, name: str, value: int, width_name: str, width: int) -> None:
    """``<prefix>.<name>`` (e.g. num_heads) must divide ``<prefix>.<width_name>``."""
    if width % value:
        raise ConfigError(
            f"{prefix}.{name}: {value} does not divide {prefix}.{width_name} {width}"
        )


def require_head_dim(prefix: str, head_dim: Any, num_heads: int, d_model: int) -> None:
    """T5-style heads: an explicit positive ``head_dim``, or None = d_model // num_heads (then
    num_heads must divide d_model). Call after num_heads and d_model are known positive."""
    if head_dim is None:
        require_divides(prefix, "num_heads", num_heads, "d_model", d_model)
    else:
        require_positive_int(prefix, "head_dim", head_dim)


def require_relpos_max_distance(prefix: str, buckets: int, max_distance: Any) -> None:
    """T5 relative positions: ``relpos_max_distance`` beyond the exact-distance buckets."""
    if max_distance <= buckets // 2:
        raise ConfigError(
            f"{prefix}.relpos_max_distance: {max_distance} must exceed "
            f"{prefix}.relpos_buckets // 2 = {buckets // 2} (the exact-distance buckets)"
        )


C = TypeVar("C")


def config_from_preset(
    presets: Mapping[str, C],
    preset: str,
    overrides: Mapping[str, Any],
    *,
    prefix: str,
    kind: str,
    validate: Callable[[C, str], C],
    prepare: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
) -> C:
    """``validate(dataclasses.replace(presets[preset], **overrides), prefix)``, with errors.

    In order: the preset must be known (``<prefix>.preset: ... is not a known <kind>``), every
    override must be a field of the config dataclass (``<prefix>.<key>: unknown key``), then
    ``prepare(preset, overrides)``, if given, may raise or fill in preset-specific defaults.

    ``overrides`` is a mapping, not ``**kwargs``: a user key that happened to be named like one
    of these parameters (``kind``, ``validate``) must still be reported as an unknown key.
    """
    require_choice(prefix, "preset", preset, tuple(presets), kind)
    base = presets[preset]
    known = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"{prefix}.{unknown[0]}: unknown key; allowed keys: preset, {', '.join(sorted(known))}"
        )
    overrides = dict(overrides)
    if prepare is not None:
        overrides = prepare(preset, overrides)
    return validate(dataclasses.replace(base, **overrides), prefix)


# --------------------------------------------------------------------------------------------
# T5.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Shape and numerics of a T5 encoder-decoder, T5X semantics.

    ``tie_embeddings=True`` is T5 v1.0 (T5X ``logits_via_embedding``): the decoder's logits are
    the token embedding applied transposed, divided by sqrt(d_model). ``False`` is T5 v1.1: a
    separate ``decoder/logits_dense`` kernel and no scaling.

    ``head_dim=None`` means d_model // num_heads (then num_heads must divide d_model); T5 itself
    does not need num_heads * head_dim == d_model (T5 v1.1 small is 6 x 64 over d_model 512).
    """

    vocab_size: int = 32128
    d_model: int = 512
    num_heads: int = 8
    head_dim: int | None = 64
    d_ff: int = 2048
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    mlp: str = "relu"
    tie_embeddings: bool = True
    dropout_rate: float = 0.1
    relpos_buckets: int = 32
    relpos_max_distance: int = 128
    layer_norm_eps: float = 1e-6
    dtype: str = "float32"
    float32_attention_logits: bool = False

    @property
    def resolved_head_dim(self) -> int:
        """Width of one attention head (``head_dim`` or d_model // num_heads)."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.num_heads

    @property
    def qkv_dim(self) -> int:
        """Width of the joined heads: the second axis of the q/k/v kernels."""
        return self.num_heads * self.resolved_head_dim

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)


T5_PRESETS: dict[str, T5Config] = {
    # T5 v1.0 small as in T5X t5_1_0/small.gin (the Wu et al. 2022 model).
    "t5_small": T5Config(),
    # T5 v1.1 small (t5_1_1/small.gin). T5X ran it with bfloat16 activations; here the compute
    # dtype stays float32 (CPU); use dataclasses.replace(cfg, dtype="bfloat16") on accelerators.
    "t5_1_1_small": T5Config(
        num_heads=6, head_dim=64, d_ff=1024, num_encoder_layers=8, num_decoder_layers=8,
        mlp="gated-gelu", tie_embeddings=False,
    ),
    # Laptop sizes: the v1.0 structure, minutes on 2 CPU cores.
    "t5_laptop": T5Config(
        d_model=128, num_heads=4, head_dim=32, d_ff=512, num_encoder_layers=2, num_decoder_layers=2,
    ),
    # The T0 / HINT laptop base: T5 v1.1 structure (gated-GELU, untied logits, dropout 0.1)
    # at the laptop width, LM-adapted by `lm-adapt` before T0 training.
    "t5_1_1_laptop": T5Config(
        d_model=128, num_heads=4, head_dim=32, d_ff=512, num_encoder_layers=2, num_decoder_layers=2,
        mlp="gated-gelu", tie_embeddings=False,
    ),
    # T5 v1.1 XL (t5_1_1/xl.gin; google/t5-xl-lm-adapt, the T0-3B base).
    "t5_1_1_xl": T5Config(
        d_model=2048, num_heads=32, head_dim=64, d_ff=5120, num_encoder_layers=24,
        num_decoder_layers=24, mlp="gated-gelu", tie_embeddings=False, dtype="bfloat16",
    ),
    "t5_bench": T5Config(
        d_model=256, num_heads=4, head_dim=64, d_ff=1024,
        num_encoder_layers=4, num_decoder_layers=4,
    ),
}


def validate_t5_config(cfg: T5Config, prefix: str = "model") -> T5Config:
    """Check that ``cfg`` describes a buildable model; return it unchanged.

    Raises `ConfigError` (a ``ValueError``) for the first problem found, with one message that
    names the key as ``<prefix>.<field>``.
    """
    for name in ("vocab_size", "d_model", "num_heads", "d_ff", "num_encoder_layers",
                 "num_decoder_layers", "relpos_buckets", "relpos_max_distance"):
        require_positive_int(prefix, name, getattr(cfg, name))
    require_head_dim(prefix, cfg.head_dim, cfg.num_heads, cfg.d_model)
    require_choice(prefix, "mlp", cfg.mlp, MLP_TYPES, "MLP type")
    require_dtype(prefix, cfg.dtype)
    if cfg.relpos_buckets < 4 or cfg.relpos_buckets % 2:
        raise ConfigError(
            f"{prefix}.relpos_buckets: {cfg.relpos_buckets} must be an even number >= 4 "
            "(the bidirectional encoder splits the buckets in half, then half again)"
        )
    require_relpos_max_distance(prefix, cfg.relpos_buckets, cfg.relpos_max_distance)
    require_rate(prefix, "dropout_rate", cfg.dropout_rate, allow_bool=True)
    require_positive_number(prefix, "layer_norm_eps", cfg.layer_norm_eps, allow_bool=True)
    for name in ("tie_embeddings", "float32_attention_logits"):
        require_bool(prefix, name, getattr(cfg, name))
    return cfg


def t5_config(preset: str = "t5_small", prefix: str = "model", **overrides: Any) -> T5Config:
    """A validated preset with field overrides, e.g. ``t5_config("t5_laptop", vocab_size=612)``."""
    return config_from_preset(
        T5_PRESETS, preset, overrides, prefix=prefix, kind="T5 preset", validate=validate_t5_config
    )


def t5_config_from_dict(values: Mapping[str, Any], prefix: str = "model") -> T5Config:
    """Build a config from a YAML mapping: optional ``preset`` (default t5_small) + overrides."""
    values = dict(values)
    return t5_config(values.pop("preset", "t5_small"), prefix=prefix, **values)
