"""HINT (Ivison et al., ACL 2023): a hypernetwork turns an instruction into adapters and prefixes
for a T5 v1.1, and the instruction's encoding is fused into the decoder (FiD).

Semantics follow allenai/hyper-task-descriptions ``modeling/hyper_network.py`` with the flags of
``instruction_embed.gin`` (``use_adapter, use_prefix, use_fusion_in_decoder,
share_hnet_encoder=True, use_linear=False``, ``layer_embedding_method="component"``) [code]:

* **Hyperencoder** = the underlying T5 encoder, same weights, on ``hyper_inputs`` without any
  generated module; its output H_instr (after ``encoder_norm``) is zeroed where the token is 0.
* **Generator**: learned queries ``hyper/component_embedding [L*C, d]`` (L = n_enc + 2 n_dec
  layer slots, C = 2a + 2 + 2P components) attend to H_instr through one T5 attention
  ``hyper/hyperattn`` (no relative bias); the result ``[B, L, C, d]`` is cut into component
  rows (wd [0,a), wu [a,2a), bd 2a, bu 2a+1, prefix_key P rows, prefix_value P rows) and each
  slice goes through its own bias-free MLP (``wi`` d->d, gelu, dropout, ``wo`` d->out), is
  reshaped (a plain reshape, no transpose, for wd) and divided by sqrt(d_model).
* **Adapters** run parallel to every FFN: x <- x + dropout(MLP(h)) + adapter(h) with h the
  pre-MLP LayerNorm output (`layers.parallel_adapter`); encoder layer l uses slot l, decoder
  layer i slot n_enc + 2i.
* **Prefixes** are prepended to keys/values with bias 0 (`layers.prepend_prefix`): encoder
  self-attention slot l, decoder self-attention n_enc + 2i, cross-attention n_enc + 2i + 1.
* **FiD**: the decoder cross-attends to concat([H_instr * mask, encoder(inputs)]), its mask
  from concat([hyper_tokens, input_tokens]) != 0.

Parameter names: the T5 ones keep their T5X paths (`models.t5`), the hypernetwork's live under
``hyper/``: ``component_embedding``, ``hyperattn/{query,key,value,out}/kernel`` and
``{adapter_down,adapter_up,adapter_bias_down,adapter_bias_up,prefix_key,prefix_value}/{wi,wo}/
kernel``. `restore_t5_params` fills the T5 ones from a T5 checkpoint and leaves ``hyper``
fresh (``restore_pretrained.gin`` skips ``^.*hyper.*$``).

Two inference paths, with identical scores:

* released, per example: `hint_encode` (hyperencoder + generator + encoder every call), then
  `hint_decode_logits`;
* per task (requirement 11, absent upstream): `hint_task_cache` computes H_instr, the
  generated modules and the instruction's cross-attention keys/values once per instruction;
  `hint_cached_encode` then runs only the instance encoder, and `hint_decode_logits` reuses the
  cached keys/values.

Layout: `hint_config` (config, presets, input checks), `hint_model` (the modules), this module
(the pure functional API and the restore), `hint_flops` (analytic FLOPs). Everything public is
re-exported here. Two deliberate differences from the upstream code, both switchable in
`HyperT5Config` (details in `hint_config`):

* ``hyperencoder_self_mask=True``: upstream calls the encoder on ``hyper_inputs`` without an
  attention mask (``HyperEncoder(..., encoder_mask=None)``), so real instruction tokens attend
  to padding and H_instr depends on how far the batch is padded. We mask padding like every
  other encoder call; ``False`` reproduces upstream.
* ``generator_dropout_rate=0.0``: the generator MLPs are built with
  ``intermediate_dropout_rate=0.0`` in the upstream code read here (hyper_network.py,
  ``def hypernetwork``); the issue text says they keep ``MlpBlock``'s default 0.1. Set 0.1 to
  get that behaviour. ``hyperattn`` uses the model's dropout rate, as upstream.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pipeline_lib.errors import ConfigError
from pipeline_lib.models.hint_config import (
    HINT_PRESETS,
    HyperT5Config,
    check_hyper_inputs,
    hint_config,
    require_no_packing,
    validate_hint_config,
)
from pipeline_lib.models.hint_model import (
    GeneratedModules,
    HyperT5,
    Hypernet,
    generated_shapes,
    generator_out_features,
)
from pipeline_lib.models.layers import Array, KVCache, flat_params, flat_to_state
from pipeline_lib.models.t5 import DecodeCache

# --------------------------------------------------------------------------------------------
# Functional API (pure functions of graphdef + params, for jax.jit / jax.grad).
# --------------------------------------------------------------------------------------------


def split_hint(model: HyperT5) -> tuple[nnx.GraphDef, nnx.State]:
    """``graphdef, params``: every variable of the model is an ``nnx.Param``."""
    return nnx.split(model)


def _merge(graphdef: nnx.GraphDef, params: nnx.State) -> HyperT5:
    return nnx.merge(graphdef, params)


def hint_forward(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    hyper_tokens: Array,
    input_tokens: Array,
    decoder_input_tokens: Array,
    decoder_target_tokens: Array | None = None,
    *,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
) -> Array:
    """Pure `HyperT5.__call__`: float32 logits ``[B, Y, vocab]``."""
    return _merge(graphdef, params)(
        hyper_tokens, input_tokens, decoder_input_tokens, decoder_target_tokens,
        dropout_rng=dropout_rng, deterministic=deterministic,
    )


def hint_generate(
    graphdef: nnx.GraphDef, params: nnx.State, hyper_tokens: Array
) -> GeneratedModules:
    """The hypernetwork alone (hyperencoder + generator), deterministic."""
    return _merge(graphdef, params).instruction_modules(hyper_tokens)[2]


def hint_encode(
    graphdef: nnx.GraphDef, params: nnx.State, hyper_tokens: Array, input_tokens: Array
) -> tuple[Array, Array, GeneratedModules]:
    """Released per-example path: (encoded ``[B, I+X, d]`` with FiD, enc_mask, modules)."""
    model = _merge(graphdef, params)
    instruction, valid, modules = model.instruction_modules(hyper_tokens)
    encoded, enc_mask = model.encode_instances(input_tokens, instruction, valid, modules)
    return encoded, enc_mask, modules


def hint_decode_logits(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    encoded: Array | Sequence[KVCache],
    enc_mask: Array,
    modules: GeneratedModules,
    decoder_input_tokens: Array,
    decoder_target_tokens: Array | None = None,
) -> Array:
    """Logits ``[B, Y, vocab]`` from `hint_encode` or `hint_cached_encode` output."""
    return _merge(graphdef, params).decode_with(
        encoded, enc_mask, modules, decoder_input_tokens, decoder_target_tokens
    )


class HintTaskCache(NamedTuple):
    """Everything that depends on the instruction only, computed once per (task, template).

    Batch axis T = number of instructions. ``instruction_kv``: per decoder layer, the
    cross-attention keys/values of H_instr (None without FiD).
    """

    instruction: Array
    hyper_valid: Array
    modules: GeneratedModules
    instruction_kv: tuple[KVCache, ...] | None


def hint_task_cache(
    graphdef: nnx.GraphDef, params: nnx.State, hyper_tokens: Array
) -> HintTaskCache:
    """Run the hypernetwork, and project H_instr for every cross-attention, once."""
    model = _merge(graphdef, params)
    instruction, valid, modules = model.instruction_modules(hyper_tokens)
    kvs = None
    if model.config.use_fusion_in_decoder:
        kvs = tuple(layer.encoder_decoder_attention.key_value(instruction)
                    for layer in model.decoder.layers())
    return HintTaskCache(instruction, valid, modules, kvs)


def _rows(tree: Any, task_ids: Array | None, batch: int) -> Any:
    """Cache rows per instance: ``take(task_ids)``, or a batch-1 cache broadcast to ``batch``."""
    if task_ids is not None:
        return jax.tree.map(lambda x: jnp.take(x, task_ids, axis=0), tree)

    def broadcast(x):
        if x.shape[0] not in (1, batch):
            raise ValueError(f"task cache has {x.shape[0]} rows for {batch} instances; "
                             "pass task_ids")
        return jnp.broadcast_to(x, (batch, *x.shape[1:]))

    return jax.tree.map(broadcast, tree)


def hint_cached_encode(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    cache: HintTaskCache,
    input_tokens: Array,
    task_ids: Array | None = None,
) -> tuple[Array | tuple[KVCache, ...], Array, GeneratedModules]:
    """Per-task path: only the instances are encoded. Returns (encoded, enc_mask, modules) for
    `hint_decode_logits`, where with FiD ``encoded`` is the per-layer cross keys/values
    ``[P_instr; K_inputs]`` joined from the cache. ``task_ids [B]`` picks each instance's row
    of the cache (None: a one-row cache shared by the whole batch)."""
    model = _merge(graphdef, params)
    batch = input_tokens.shape[0]
    modules = _rows(cache.modules, task_ids, batch)
    enc_modules, _ = model.layer_modules(modules)
    encoded = model.encode(input_tokens, modules=enc_modules)
    valid = input_tokens > 0
    if not model.config.use_fusion_in_decoder:
        return encoded, valid, modules
    instr_kv = _rows(cache.instruction_kv, task_ids, batch)
    kvs = []
    for layer, ikv in zip(model.decoder.layers(), instr_kv, strict=True):
        kv = layer.encoder_decoder_attention.key_value(encoded)
        kvs.append(KVCache(jnp.concatenate([ikv.key, kv.key], 1),
                           jnp.concatenate([ikv.value, kv.value], 1)))
    mask = jnp.concatenate([_rows(cache.hyper_valid, task_ids, batch), valid], axis=1)
    return tuple(kvs), mask, modules


def hint_cached_logits(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    cache: HintTaskCache,
    input_tokens: Array,
    decoder_input_tokens: Array,
    decoder_target_tokens: Array | None = None,
    task_ids: Array | None = None,
) -> Array:
    """The cached instance forward: `hint_cached_encode` + `hint_decode_logits`."""
    encoded, mask, modules = hint_cached_encode(graphdef, params, cache, input_tokens, task_ids)
    return hint_decode_logits(graphdef, params, encoded, mask, modules, decoder_input_tokens,
                              decoder_target_tokens)


def hint_rank_fns(graphdef: nnx.GraphDef):
    """``(encode, decode_logits)`` for a generic rank scorer: ``encode(params, hyper_tokens,
    input_tokens) -> (encoded, enc_mask, modules)`` and ``decode_logits(params, encoded,
    enc_mask, modules, decoder_input_tokens, decoder_target_tokens) -> logits``."""

    def encode(params, hyper_tokens, input_tokens):
        return hint_encode(graphdef, params, hyper_tokens, input_tokens)

    def decode_logits(params, encoded, enc_mask, modules, decoder_input_tokens,
                      decoder_target_tokens=None):
        return hint_decode_logits(graphdef, params, encoded, enc_mask, modules,
                                  decoder_input_tokens, decoder_target_tokens)

    return encode, decode_logits


def hint_step_logits(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    hyper_tokens: Array,
    input_tokens: Array,
    decoder_input_tokens: Array,
) -> Array:
    """Teacher-forced logits one position at a time through the decoding cache, with the
    prefixes prepended to the self-attention cache at every step (requirement 5)."""
    model = _merge(graphdef, params)
    encoded, enc_mask, modules = hint_encode(graphdef, params, hyper_tokens, input_tokens)
    _, dec_modules = model.layer_modules(modules)
    cfg = model.config
    batch, length = decoder_input_tokens.shape
    shape = (batch, length, cfg.num_heads, cfg.resolved_head_dim)
    empty = KVCache(jnp.zeros(shape, cfg.compute_dtype), jnp.zeros(shape, cfg.compute_dtype))
    layers = model.decoder.layers()
    cache = DecodeCache(
        index=jnp.zeros((), jnp.int32), encoder_valid=enc_mask,
        cross=tuple(layer.encoder_decoder_attention.key_value(encoded) for layer in layers),
        self_attn=(empty,) * len(layers),
    )

    def body(cache, tokens):
        logits, cache = model.decode_step(cache, tokens, modules=dec_modules)
        return cache, logits

    _, logits = jax.lax.scan(body, cache, decoder_input_tokens.T)
    return jnp.swapaxes(logits, 0, 1)


PACKING_KEYS = ("encoder_segment_ids", "decoder_segment_ids", "hyper_encoder_segment_ids")


def hint_batch_forward(graphdef: nnx.GraphDef):
    """``forward(params, batch, rng) -> logits`` over HINT batches (``hyper_encoder_input_tokens``
    plus the T5 keys); a packed batch raises. What the engine's token loss wraps."""

    def forward(params, batch, rng):
        packed = [k for k in PACKING_KEYS if k in batch]
        if packed:
            raise ConfigError(f"batch key {packed[0]}: packed batches are not supported: HINT "
                              "does not use packing")
        return hint_forward(
            graphdef, params, batch["hyper_encoder_input_tokens"],
            batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch["decoder_target_tokens"], dropout_rng=rng, deterministic=rng is None,
        )

    return forward


# --------------------------------------------------------------------------------------------
# Restore from a T5 checkpoint.
# --------------------------------------------------------------------------------------------

SKIP_ON_RESTORE = re.compile(r"^.*hyper.*$")
"""``restore_pretrained.gin``: parameters matching this are not restored but freshly initialised."""


def _load_flat(checkpoint: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(checkpoint, Mapping):
        return dict(checkpoint)
    path = Path(checkpoint)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read a T5 parameter .npz ({err})") from None


def restore_t5_params(
    params: nnx.State, checkpoint: Mapping[str, Any] | str | Path, *, source: str | None = None
) -> nnx.State:
    """``params`` (a fresh HINT init) with every T5 parameter taken from ``checkpoint``.

    ``checkpoint``: a flat '/'-joined mapping (`layers.flat_params` of a T5) or an ``.npz`` of
    one. Names matching `SKIP_ON_RESTORE` keep their fresh values; any other name the model has
    and the checkpoint lacks, or a shape mismatch, raises one `ConfigError` listing them.
    """
    where = source or (str(checkpoint) if not isinstance(checkpoint, Mapping) else "checkpoint")
    given = {k: v for k, v in _load_flat(checkpoint).items() if not SKIP_ON_RESTORE.match(k)}
    fresh = flat_params(params)
    wanted = {k: v for k, v in fresh.items() if not SKIP_ON_RESTORE.match(k)}
    problems = []
    missing = sorted(set(wanted) - set(given))
    if missing:
        more = f", ... ({len(missing) - 10} more)" if len(missing) > 10 else ""
        shown = ", ".join(missing[:10]) + more
        problems.append(f"{len(missing)} T5 parameter(s) missing: {shown}")
    unexpected = sorted(set(given) - set(wanted))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {', '.join(unexpected[:10])}")
    for key in sorted(set(wanted) & set(given)):
        if tuple(np.shape(given[key])) != tuple(wanted[key].shape):
            problems.append(f"{key}: shape {tuple(np.shape(given[key]))}, the model has "
                            f"{tuple(wanted[key].shape)}")
    if problems:
        raise ConfigError(f"{where}: cannot restore the T5 weights: " + "; ".join(problems))
    return flat_to_state({**fresh, **given}, params)


__all__ = [
    "HINT_PRESETS",
    "GeneratedModules",
    "HintTaskCache",
    "HyperT5",
    "HyperT5Config",
    "Hypernet",
    "SKIP_ON_RESTORE",
    "check_hyper_inputs",
    "generated_shapes",
    "generator_out_features",
    "hint_batch_forward",
    "hint_cached_encode",
    "hint_cached_logits",
    "hint_config",
    "hint_decode_logits",
    "hint_encode",
    "hint_forward",
    "hint_generate",
    "hint_rank_fns",
    "hint_step_logits",
    "hint_task_cache",
    "require_no_packing",
    "restore_t5_params",
    "split_hint",
    "validate_hint_config",
]
