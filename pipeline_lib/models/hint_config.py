"""HINT's config: `HyperT5Config` (a T5 v1.1 config plus the hypernetwork's fields), the presets
``hyper_tiny``, ``hyper_laptop``, ``hyper_xl`` (upstream ``gins/hyper_*.gin``), validation, and
the host-side input checks (no packing, no empty instruction). See `models.hint` for the model.

Two fields exist to make deliberate differences from the upstream code switchable:

* ``hyperencoder_self_mask=True``: upstream calls the encoder on ``hyper_inputs`` without an
  attention mask (``HyperEncoder(..., encoder_mask=None)`` in ``Hypernet.__call__``), so real
  instruction tokens attend to padding and H_instr depends on how far a batch is padded. We
  mask padding like every other encoder call; ``False`` reproduces upstream.
* ``generator_dropout_rate=0.0``: the generator MLPs are built with
  ``intermediate_dropout_rate=0.0`` in the upstream ``hyper_network.py`` versions read for this
  port (``def hypernetwork``); the issue says they keep ``MlpBlock``'s default 0.1. Set 0.1 for
  that reading. ``hyperattn`` uses the model's dropout rate, as upstream.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pipeline_lib.errors import ConfigError
from pipeline_lib.models.configs import (
    T5Config,
    config_from_preset,
    require_bool,
    require_choice,
    require_non_negative_int,
    require_positive_int,
    require_rate,
    validate_t5_config,
)

# --------------------------------------------------------------------------------------------
# Config.
# --------------------------------------------------------------------------------------------

LAYER_EMBEDDING_METHODS = ("component",)
"""Upstream also has layer, concat and decoder; only ``component`` (the paper's) is built."""


@dataclasses.dataclass(frozen=True)
class HyperT5Config(T5Config):
    """A T5 v1.1 config plus HINT's hypernetwork fields (``HyperT5Config`` upstream).

    ``adapter_size`` a and ``num_prefix_tokens`` P size the generated modules; the flags are the
    ones ``instruction_embed.gin`` sets. See the module docstring for
    ``hyperencoder_self_mask`` and ``generator_dropout_rate``. ``hyperencoder_d_model`` is the
    width of a separate hyperencoder (None = the shared encoder, the only one implemented).
    """

    adapter_size: int = 8
    num_prefix_tokens: int = 4
    use_adapter: bool = True
    use_prefix: bool = True
    use_fusion_in_decoder: bool = True
    share_hnet_encoder: bool = True
    layer_embedding_method: str = "component"
    generator_dropout_rate: float = 0.0
    hyperencoder_self_mask: bool = True
    hyperencoder_d_model: int | None = None

    @property
    def num_slots(self) -> int:
        """L: one slot per encoder layer, two per decoder layer (self- and cross-attention)."""
        return self.num_encoder_layers + 2 * self.num_decoder_layers

    @property
    def has_prefix(self) -> bool:
        return self.use_prefix and self.num_prefix_tokens > 0

    @property
    def component_ranges(self) -> dict[str, tuple[int, int]]:
        """Rows of C per generated tensor, upstream's ``create_component_id_dict`` order."""
        ranges, start = {}, 0
        if self.use_adapter:
            a = self.adapter_size
            ranges |= {"adapter_wd": (0, a), "adapter_wu": (a, 2 * a),
                       "adapter_bd": (2 * a, 2 * a + 1), "adapter_bu": (2 * a + 1, 2 * a + 2)}
            start = 2 * a + 2
        if self.has_prefix:
            p = self.num_prefix_tokens
            ranges |= {"prefix_key": (start, start + p), "prefix_value": (start + p, start + 2 * p)}
        return ranges

    @property
    def num_components(self) -> int:
        """C = (2a + 2) + 2P (the enabled parts only)."""
        return max((end for _, end in self.component_ranges.values()), default=0)


def _v11(**fields: Any) -> dict[str, Any]:
    return {"mlp": "gated-gelu", "tie_embeddings": False, **fields}


HINT_PRESETS: dict[str, HyperT5Config] = {
    # gins/hyper_tiny.gin: a test preset (C = 22).
    "hyper_tiny": HyperT5Config(**_v11(
        d_model=8, num_heads=4, head_dim=3, d_ff=16, num_encoder_layers=2, num_decoder_layers=2,
        adapter_size=8, num_prefix_tokens=2,
    )),
    # The T0 laptop T5 v1.1 (models.configs "t5_1_1_laptop"), a 8, P 4: L = 6, C = 26,
    # component_embedding [156, 128].
    "hyper_laptop": HyperT5Config(**_v11(
        d_model=128, num_heads=4, head_dim=32, d_ff=512, num_encoder_layers=2,
        num_decoder_layers=2, adapter_size=8, num_prefix_tokens=4,
    )),
    # gins/hyper_xl.gin (HINT 3B): C = 1086, L = 72, component_embedding [78192, 2048].
    "hyper_xl": HyperT5Config(**_v11(
        d_model=2048, num_heads=32, head_dim=64, d_ff=5120, num_encoder_layers=24,
        num_decoder_layers=24, adapter_size=512, num_prefix_tokens=30, dtype="bfloat16",
    )),
}


def validate_hint_config(cfg: HyperT5Config, prefix: str = "model") -> HyperT5Config:
    """`validate_t5_config` plus HINT's fields; one `ConfigError` naming the first bad key."""
    validate_t5_config(cfg, prefix)
    require_positive_int(prefix, "adapter_size", cfg.adapter_size)
    require_non_negative_int(prefix, "num_prefix_tokens", cfg.num_prefix_tokens)
    for name in ("use_adapter", "use_prefix", "use_fusion_in_decoder", "share_hnet_encoder",
                 "hyperencoder_self_mask"):
        require_bool(prefix, name, getattr(cfg, name))
    require_choice(prefix, "layer_embedding_method", cfg.layer_embedding_method,
                   LAYER_EMBEDDING_METHODS, "layer embedding method (implemented)")
    require_rate(prefix, "generator_dropout_rate", cfg.generator_dropout_rate)
    if cfg.hyperencoder_d_model is not None:
        require_positive_int(prefix, "hyperencoder_d_model", cfg.hyperencoder_d_model)
        if cfg.hyperencoder_d_model != cfg.d_model:
            if cfg.use_fusion_in_decoder:
                raise ConfigError(
                    f"{prefix}.use_fusion_in_decoder: FiD concatenates the hyperencoder output "
                    f"(width {prefix}.hyperencoder_d_model {cfg.hyperencoder_d_model}) with the "
                    f"encoder output (width {prefix}.d_model {cfg.d_model}); upstream needs "
                    "use_linear for that, which is not implemented"
                )
            raise ConfigError(
                f"{prefix}.hyperencoder_d_model: {cfg.hyperencoder_d_model} differs from "
                f"{prefix}.d_model {cfg.d_model}, but only the shared hyperencoder (the "
                "model's own encoder) is implemented"
            )
    if not cfg.share_hnet_encoder:
        raise ConfigError(
            f"{prefix}.share_hnet_encoder: false is not implemented; HINT (instruction_embed.gin) "
            "shares the underlying encoder"
        )
    if cfg.num_components == 0:
        raise ConfigError(
            f"{prefix}.use_adapter: nothing to generate; enable use_adapter or use_prefix "
            "(with num_prefix_tokens > 0)"
        )
    return cfg


def hint_config(
    preset: str = "hyper_laptop", prefix: str = "model", **overrides: Any
) -> HyperT5Config:
    """A validated HINT preset with overrides, e.g. ``hint_config("hyper_tiny", vocab_size=64)``."""
    return config_from_preset(HINT_PRESETS, preset, overrides, prefix=prefix,
                              kind="HINT preset", validate=validate_hint_config)


def require_no_packing(pack: bool, key: str = "hint.pack") -> None:
    """HINT generates modules per example, so examples cannot share a row (upstream raises
    "We do not use packing")."""
    if pack:
        raise ConfigError(f"{key}: packing is not supported: HINT does not use packing "
                          "(each example has its own generated adapters and prefixes)")


def check_hyper_inputs(hyper_tokens: Any, name: str = "hyper_inputs") -> None:
    """Host-side check before a batch reaches the model: an instruction must have a token.

    An all-padding instruction would make upstream's mean-pooled features divide by zero; here
    it would silently generate zero modules. Raises `ConfigError` naming the empty rows.
    """
    tokens = np.asarray(hyper_tokens)
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        raise ConfigError(f"{name}: empty instructions (shape {tokens.shape}); every example "
                          "needs at least one instruction token")
    empty = np.flatnonzero((tokens != 0).sum(axis=1) == 0)
    if empty.size:
        rows = ", ".join(str(i) for i in empty[:10]) + (" ..." if empty.size > 10 else "")
        raise ConfigError(f"{name}: {empty.size} all-padding instruction(s), rows {rows}")


__all__ = [
    "HINT_PRESETS",
    "LAYER_EMBEDDING_METHODS",
    "HyperT5Config",
    "check_hyper_inputs",
    "hint_config",
    "require_no_packing",
    "validate_hint_config",
]
