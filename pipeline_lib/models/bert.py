"""BERT encoder (flax NNX) as academic-budget-bert builds it for Liu et al. (2023).

What makes it that BERT (liu2023 §5, §6.1; IntelLabs/academic-budget-bert ``modeling.py``):
learned absolute positions, token-type embeddings (1 type by default: MLM only, no NSP), an
embedding LayerNorm, LayerNorm with bias and eps 1e-12, biases on every dense layer, exact (erf)
GELU, logits scaled by 1/sqrt(head_dim), dropout 0.1 on the embeddings, attention probabilities
and both residual branches, N(0, 0.02) init with zero biases. ``pre_ln`` switches between

* **pre-LN** (the paper's ``--encoder_ln_mode pre-ln``, the default): ``x + drop(attn(LN(x)))``,
  ``x + drop(mlp(LN(x)))``, then ``encoder/final_layer_norm``;
* **post-LN** (original BERT and Hugging Face): ``LN(x + drop(attn(x)))``,
  ``LN(x + drop(mlp(x)))``, no final norm.

Heads: the MLM head (dense + GELU + LayerNorm, then the transposed word embedding + an output
bias), the [CLS] pooler (dense + tanh at position 0), and with ``num_labels > 0`` the two
downstream heads of §5: ``classifier`` (fine-tuning: pooled [CLS] -> dropout -> linear, as
``BertForSequenceClassification``) and ``probe`` (linear probe, see `Bert.probe_features`).

Parameter names (flattened with '/', `layers.flat_params`). Every 2-D kernel is ``[in, out]``
(the transpose of torch's ``Linear.weight``), embeddings are ``[rows, hidden]``, norms
``scale``/``bias`` are ``[hidden]``; no other shapes occur, which keeps the function-preserving
``enlarge`` embedding of §4.3 a per-key rule (tile rows /k; tile norms; k x k blocks of W/k;
tile biases; zero new layers)::

    embeddings/word_embeddings/embedding          [vocab, hidden]   (also the tied MLM output)
    embeddings/position_embeddings/embedding      [max_position_embeddings, hidden]
    embeddings/token_type_embeddings/embedding    [type_vocab_size, hidden]  (absent if 0 types)
    embeddings/layer_norm/{scale,bias}
    encoder/layers_{i}/attention/{query,key,value,out}/{kernel,bias}
    encoder/layers_{i}/mlp/{wi,wo}/{kernel,bias}  [hidden, intermediate], [intermediate, hidden]
    pre-LN:  encoder/layers_{i}/{pre_attention_layer_norm,pre_mlp_layer_norm}/{scale,bias}
             encoder/final_layer_norm/{scale,bias}
    post-LN: encoder/layers_{i}/{attention_output_layer_norm,mlp_output_layer_norm}/{scale,bias}
    mlm_head/dense/{kernel,bias}, mlm_head/layer_norm/{scale,bias}, mlm_head/bias [vocab]
    pooler/dense/{kernel,bias}
    num_labels > 0: classifier/{kernel,bias} [hidden, labels];
                    probe/{kernel,bias} [(probe_length - 2) * hidden, labels]

The norm names say where the norm sits, so a pre-LN checkpoint cannot be loaded into a post-LN
model by accident (`load_flat_params` raises). Names containing ``norm`` or ending in ``bias``
are the ones the project's AdamW leaves undecayed (``train.optim.NO_DECAY_PATTERNS``).

Two ways to run it, as for T5:

* Object style: ``model = Bert(cfg, rngs=nnx.Rngs(params=0)); model.mlm_logits(ids, mask)``.
* Functional style for a pure jitted step: ``graphdef, state = nnx.split(model)``, then
  ``bert_mlm_logits(graphdef, state, ids, mask, dropout_rng=key, deterministic=False)`` under
  ``jax.jit``/``jax.grad`` over ``state``. The model holds only ``nnx.Param``s (dropout keys are
  explicit), so ``state`` is exactly the parameters. ``state`` may also be a tuple of states
  (e.g. ``(probe_params, frozen)`` from `split_probe`), merged with ``nnx.merge``.

Hugging Face ``BertForMaskedLM`` (post-LN) weights convert both ways in `bert_interop`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pipeline_lib.errors import ConfigError
from pipeline_lib.models.configs import (
    config_from_preset,
    require_bool,
    require_choice,
    require_divides,
    require_dtype,
    require_non_negative_int,
    require_positive_int,
    require_positive_number,
    require_rate,
)
from pipeline_lib.models.layers import (
    Array,
    Embed,
    Initializer,
    LayerNorm,
    Linear,
    dropout,
    flat_params,
    load_flat_params,
    mask_to_bias,
    split_rng,
)

# --------------------------------------------------------------------------------------------
# Config, presets, validation.
# --------------------------------------------------------------------------------------------

BERT_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # erf GELU: torch F.gelu, HF "gelu"
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # tanh approximation
    "relu": jax.nn.relu,
}
"""Hidden activations, by their Hugging Face names."""


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Shape and numerics of a BERT encoder with its heads (academic-budget-bert semantics).

    ``num_labels = 0`` builds the pre-training model (MLM head + pooler); ``num_labels > 0``
    adds the fine-tuning ``classifier`` and the linear ``probe``, whose input is the
    ``(probe_length - 2) * hidden_size`` concatenated token features of a length
    ``probe_length`` input (the reference's probe needs exactly 20, §5).
    """

    vocab_size: int = 30528
    hidden_size: int = 1024
    num_layers: int = 16
    num_heads: int = 16
    intermediate_size: int = 4096
    max_position_embeddings: int = 512
    type_vocab_size: int = 1
    pre_ln: bool = True
    hidden_act: str = "gelu"
    hidden_dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    num_labels: int = 0
    probe_length: int = 20
    dtype: str = "float32"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def probe_features(self) -> int:
        """Width of the linear probe's input: every position but the first and the last."""
        return (self.probe_length - 2) * self.hidden_size

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)


def _paper_size(hidden: int, layers: int) -> BertConfig:
    """The paper's recipe: head dim 64 (what `enlarge` needs), intermediate 4 x hidden."""
    return BertConfig(
        hidden_size=hidden, num_layers=layers, num_heads=hidden // 64, intermediate_size=4 * hidden
    )


BERT_PRESETS: dict[str, BertConfig] = {
    # liu2023 §6.1 (vocab 30528 = 30522 padded to a multiple of 8, 512 positions); the name is
    # the paper's size label, the parameter count with the MLM head and pooler.
    "bert_2m": _paper_size(64, 2),
    "bert_9m": _paper_size(256, 2),
    "bert_41m": _paper_size(512, 8),
    "bert_67m": _paper_size(512, 16),
    "bert_67m_wide": _paper_size(768, 6),
    "bert_235m": _paper_size(1024, 16),  # the README model
    "bert_730m": _paper_size(1536, 24),
    # The MFU benchmark shape (d 256, 4 layers), full BERT vocabulary unless overridden.
    "bert_bench": _paper_size(256, 4),
    # Minutes on a laptop; vocab_size must be given (the PCFG compact vocabulary, see
    # `padded_vocab_size`). Head dim 64 as in the paper sizes, so `enlarge` stays exact.
    "bert_laptop": dataclasses.replace(_paper_size(128, 2), vocab_size=0),
}
PRESETS_NEEDING_VOCAB = frozenset({"bert_laptop"})


def padded_vocab_size(size: int, multiple: int = 8) -> int:
    """``size`` rounded up to a multiple (academic-budget-bert: 30522 -> 30528)."""
    return -(-size // multiple) * multiple


def validate_bert_config(cfg: BertConfig, prefix: str = "model") -> BertConfig:
    """Check that ``cfg`` describes a buildable model; return it unchanged.

    Raises `ConfigError` (a ``ValueError``) for the first problem, naming ``<prefix>.<key>``.
    """
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                 "max_position_embeddings", "probe_length"):
        require_positive_int(prefix, name, getattr(cfg, name))
    for name in ("type_vocab_size", "num_labels"):
        require_non_negative_int(prefix, name, getattr(cfg, name))
    require_divides(prefix, "num_heads", cfg.num_heads, "hidden_size", cfg.hidden_size)
    require_choice(prefix, "hidden_act", cfg.hidden_act, tuple(BERT_ACTIVATIONS), "activation")
    require_dtype(prefix, cfg.dtype)
    for name in ("hidden_dropout_rate", "attention_dropout_rate"):
        require_rate(prefix, name, getattr(cfg, name))
    for name in ("layer_norm_eps", "initializer_range"):
        require_positive_number(prefix, name, getattr(cfg, name))
    require_bool(prefix, "pre_ln", cfg.pre_ln)
    if not 3 <= cfg.probe_length <= cfg.max_position_embeddings:
        raise ConfigError(
            f"{prefix}.probe_length: {cfg.probe_length} must be in [3, "
            f"{prefix}.max_position_embeddings = {cfg.max_position_embeddings}] (the probe drops "
            "the first and last position)"
        )
    return cfg


def bert_config(preset: str = "bert_235m", prefix: str = "model", **overrides: Any) -> BertConfig:
    """A validated preset with overrides, e.g. ``bert_config("bert_laptop", vocab_size=208)``."""

    def require_vocab(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
        # Checked before the overrides apply: the preset's placeholder vocab_size 0 would only
        # say "must be a positive integer", not where the size comes from.
        if preset in PRESETS_NEEDING_VOCAB and "vocab_size" not in overrides:
            raise ConfigError(
                f"{prefix}.vocab_size: preset {preset} needs the vocabulary size (the PCFG "
                "compact vocabulary, e.g. padded_vocab_size(vocabulary.size))"
            )
        return overrides

    return config_from_preset(
        BERT_PRESETS, preset, overrides, prefix=prefix, kind="BERT preset",
        validate=validate_bert_config, prepare=require_vocab,
    )


def bert_config_from_dict(values: Mapping[str, Any], prefix: str = "model") -> BertConfig:
    """Build a config from a YAML mapping: optional ``preset`` (default bert_235m) + overrides."""
    values = dict(values)
    return bert_config(values.pop("preset", "bert_235m"), prefix=prefix, **values)


# --------------------------------------------------------------------------------------------
# BERT modules.
# --------------------------------------------------------------------------------------------


def _init(cfg: BertConfig) -> Initializer:
    return jax.nn.initializers.normal(stddev=cfg.initializer_range)


def _linear(cfg: BertConfig, n_in: int, n_out: int, rngs: nnx.Rngs) -> Linear:
    return Linear(n_in, n_out, kernel_init=_init(cfg), dtype=cfg.compute_dtype, rngs=rngs)


def _norm(cfg: BertConfig) -> LayerNorm:
    return LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=cfg.compute_dtype)


class BertEmbeddings(nnx.Module):
    """word + position (+ token type) embeddings -> LayerNorm -> dropout (in both LN modes)."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.dropout_rate = cfg.hidden_dropout_rate
        self.max_length = cfg.max_position_embeddings
        embed = lambda n: Embed(
            n, cfg.hidden_size, embedding_init=_init(cfg), dtype=cfg.compute_dtype, rngs=rngs
        )
        self.word_embeddings = embed(cfg.vocab_size)
        self.position_embeddings = embed(cfg.max_position_embeddings)
        self.token_type_embeddings = embed(cfg.type_vocab_size) if cfg.type_vocab_size else None
        self.layer_norm = _norm(cfg)

    def __call__(
        self, input_ids: Array, token_type_ids: Array | None, *, rng: Array | None = None
    ) -> Array:
        length = input_ids.shape[-1]
        if length > self.max_length:
            raise ValueError(
                f"input length {length} exceeds max_position_embeddings {self.max_length}"
            )
        x = self.word_embeddings(input_ids)
        # Positions 0..length-1: a slice of the table, no gather.
        x = x + self.position_embeddings.embedding[:length].astype(x.dtype)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:  # every token is type 0, as in BERT
                x = x + self.token_type_embeddings.embedding[0].astype(x.dtype)
            else:
                x = x + self.token_type_embeddings(token_type_ids)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given but the config has type_vocab_size 0")
        return dropout(self.layer_norm(x), self.dropout_rate, rng)


class BertAttention(nnx.Module):
    """Multi-head self-attention with biased q/k/v/out projections, BERT's numerics.

    Logits are scaled by 1/sqrt(head_dim) (applied to the queries: cheaper than to the
    ``[b, h, q, k]`` logits) and softmaxed in float32; padding is masked as keys only (queries
    at padding positions still attend to the real tokens, as in Hugging Face). Dropout on the
    attention probabilities is element-wise, as BERT's (T5X shares it across queries).
    """

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.dropout_rate = cfg.attention_dropout_rate
        d = cfg.hidden_size
        self.query = _linear(cfg, d, d, rngs)
        self.key = _linear(cfg, d, d, rngs)
        self.value = _linear(cfg, d, d, rngs)
        self.out = _linear(cfg, d, d, rngs)

    def __call__(self, x: Array, key_bias: Array, *, rng: Array | None = None) -> Array:
        """``x [b, l, d]``, ``key_bias [b, 1, 1, l]`` (0 or -1e10) -> ``[b, l, d]``."""
        heads = lambda y: y.reshape(*y.shape[:-1], self.num_heads, self.head_dim)
        q = heads(self.query(x)) * jnp.asarray(1.0 / math.sqrt(self.head_dim), x.dtype)
        k, v = heads(self.key(x)), heads(self.value(x))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + key_bias
        weights = dropout(jax.nn.softmax(logits).astype(x.dtype), self.dropout_rate, rng)
        y = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        return self.out(y.reshape(*y.shape[:-2], -1))


class BertMlp(nnx.Module):
    """``wo(act(wi x))`` with biases (dropout is applied by the layer, on the branch output)."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.act = BERT_ACTIVATIONS[cfg.hidden_act]
        self.wi = _linear(cfg, cfg.hidden_size, cfg.intermediate_size, rngs)
        self.wo = _linear(cfg, cfg.intermediate_size, cfg.hidden_size, rngs)

    def __call__(self, x: Array) -> Array:
        return self.wo(self.act(self.wi(x)))


class BertLayer(nnx.Module):
    """One encoder layer; where the two LayerNorms sit depends on ``pre_ln`` (module doc)."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.pre_ln = cfg.pre_ln
        self.dropout_rate = cfg.hidden_dropout_rate
        self.attention = BertAttention(cfg, rngs=rngs)
        self.mlp = BertMlp(cfg, rngs=rngs)
        if cfg.pre_ln:
            self.pre_attention_layer_norm = _norm(cfg)
            self.pre_mlp_layer_norm = _norm(cfg)
        else:
            self.attention_output_layer_norm = _norm(cfg)
            self.mlp_output_layer_norm = _norm(cfg)

    def __call__(self, x: Array, key_bias: Array, *, rng: Array | None = None) -> Array:
        r_attn, r_attn_out, r_mlp_out = split_rng(rng, 3)
        drop = lambda h, r: dropout(h, self.dropout_rate, r)
        if self.pre_ln:
            x = x + drop(self.attention(self.pre_attention_layer_norm(x), key_bias, rng=r_attn),
                         r_attn_out)
            return x + drop(self.mlp(self.pre_mlp_layer_norm(x)), r_mlp_out)
        x = self.attention_output_layer_norm(
            x + drop(self.attention(x, key_bias, rng=r_attn), r_attn_out)
        )
        return self.mlp_output_layer_norm(x + drop(self.mlp(x), r_mlp_out))


class BertEncoder(nnx.Module):
    """Layers ``layers_0..`` (paths as T5X's), then ``final_layer_norm`` when pre-LN."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.num_layers = cfg.num_layers
        for i in range(cfg.num_layers):
            setattr(self, f"layers_{i}", BertLayer(cfg, rngs=rngs))
        self.final_layer_norm = _norm(cfg) if cfg.pre_ln else None

    def layers(self) -> list[BertLayer]:
        return [getattr(self, f"layers_{i}") for i in range(self.num_layers)]

    def __call__(self, x: Array, key_bias: Array, *, rng: Array | None = None) -> Array:
        for layer, r in zip(self.layers(), split_rng(rng, self.num_layers)):
            x = layer(x, key_bias, rng=r)
        return x if self.final_layer_norm is None else self.final_layer_norm(x)


class MlmHead(nnx.Module):
    """dense -> act -> LayerNorm -> tied word embedding (transposed) + output ``bias``."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.act = BERT_ACTIVATIONS[cfg.hidden_act]
        self.dense = _linear(cfg, cfg.hidden_size, cfg.hidden_size, rngs)
        self.layer_norm = _norm(cfg)
        self.bias = nnx.Param(jnp.zeros((cfg.vocab_size,), jnp.float32))

    def __call__(self, hidden: Array, word_embeddings: Embed) -> Array:
        """``[..., d]`` -> float32 logits ``[..., vocab]``."""
        h = self.layer_norm(self.act(self.dense(hidden)))
        return word_embeddings.attend(h) + self.bias[...]


class Pooler(nnx.Module):
    """tanh(dense(h[:, 0])): the [CLS] representation."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.dense = _linear(cfg, cfg.hidden_size, cfg.hidden_size, rngs)

    def __call__(self, hidden: Array) -> Array:
        return jnp.tanh(self.dense(hidden[:, 0]))


class Bert(nnx.Module):
    """BERT encoder + MLM head + pooler (+ classifier and probe when ``num_labels > 0``).

    Inputs everywhere: ``input_ids [b, l]`` int, ``input_mask [b, l]`` (1/True = real token,
    or None = all real), ``token_type_ids [b, l]`` or None (all type 0). Dropout is active only
    with ``deterministic=False`` and a ``dropout_rng``.
    """

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = cfg = validate_bert_config(config)
        self.embeddings = BertEmbeddings(cfg, rngs=rngs)
        self.encoder = BertEncoder(cfg, rngs=rngs)
        self.mlm_head = MlmHead(cfg, rngs=rngs)
        self.pooler = Pooler(cfg, rngs=rngs)
        if cfg.num_labels:
            self.classifier = _linear(cfg, cfg.hidden_size, cfg.num_labels, rngs)
            self.probe = _linear(cfg, cfg.probe_features, cfg.num_labels, rngs)

    def _rng(self, dropout_rng: Array | None, deterministic: bool) -> Array | None:
        cfg = self.config
        if deterministic or (cfg.hidden_dropout_rate == 0 and cfg.attention_dropout_rate == 0):
            return None
        if dropout_rng is None:
            raise ValueError("dropout_rng is required when deterministic=False and dropout > 0")
        return dropout_rng

    def _heads(self) -> None:
        if not self.config.num_labels:
            raise ValueError("this BERT has no classifier/probe: build it with num_labels > 0")

    def encode(
        self,
        input_ids: Array,
        input_mask: Array | None = None,
        token_type_ids: Array | None = None,
        *,
        rng: Array | None = None,
    ) -> Array:
        """Final hidden states ``[b, l, hidden]`` (after ``final_layer_norm`` when pre-LN)."""
        r_embed, r_encoder = split_rng(rng, 2)
        x = self.embeddings(input_ids, token_type_ids, rng=r_embed)
        if input_mask is None:
            key_bias = jnp.zeros((1, 1, 1, input_ids.shape[-1]), jnp.float32)
        else:
            key_bias = mask_to_bias(input_mask.astype(bool), jnp.float32)[:, None, None, :]
        return self.encoder(x, key_bias, rng=r_encoder)

    def mlm_logits(
        self,
        input_ids: Array,
        input_mask: Array | None = None,
        token_type_ids: Array | None = None,
        *,
        masked_positions: Array | None = None,
        dropout_rng: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """Float32 MLM logits ``[b, l, vocab]``, or ``[b, p, vocab]`` at ``masked_positions``.

        ``masked_positions [b, p]`` (int) gathers those positions before the head, as
        academic-budget-bert's sparse prediction: the vocabulary projection then costs p/l of
        the dense one (p <= 5 of 32 positions in the PCFG data).
        """
        hidden = self.encode(
            input_ids, input_mask, token_type_ids, rng=self._rng(dropout_rng, deterministic)
        )
        if masked_positions is not None:
            hidden = jnp.take_along_axis(hidden, masked_positions[..., None], axis=1)
        return self.mlm_head(hidden, self.embeddings.word_embeddings)

    def classify(
        self,
        input_ids: Array,
        input_mask: Array | None = None,
        token_type_ids: Array | None = None,
        *,
        dropout_rng: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """Fine-tuning logits ``[b, num_labels]``: pooled [CLS] -> dropout -> classifier."""
        self._heads()
        r_encoder, r_head = split_rng(self._rng(dropout_rng, deterministic), 2)
        pooled = self.pooler(self.encode(input_ids, input_mask, token_type_ids, rng=r_encoder))
        pooled = dropout(pooled, self.config.hidden_dropout_rate, r_head)
        return self.classifier(pooled).astype(jnp.float32)

    def probe_features(
        self,
        input_ids: Array,
        input_mask: Array | None = None,
        token_type_ids: Array | None = None,
        *,
        dropout_rng: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """Frozen linear-probe features ``[b, (probe_length - 2) * hidden]`` (float32).

        Exactly the reference's ``BertPoolerC`` (§5): the encoder's final hidden states (the
        output of ``encoder/final_layer_norm`` when pre-LN, of the last layer's output norm
        when post-LN) at every position except the first ([CLS]) and the last of a
        ``probe_length``-token padded input; [SEP] and padding positions are included (padding
        is masked as attention keys, its own states are still computed). Flattened
        position-major: feature ``(t - 1) * hidden + j`` is unit j at position t.

        Wrapped in ``stop_gradient``: no gradient reaches the encoder through these features.
        With ``deterministic=False`` the encoder's dropout is active, as in the reference (it
        calls ``model.train()`` with the encoder frozen); pass ``deterministic=True`` to compute
        the features once and train the probe on them with `probe_head`.
        """
        length = input_ids.shape[-1]
        if length != self.config.probe_length:
            raise ValueError(
                f"linear-probe inputs must have length probe_length={self.config.probe_length}, "
                f"got {length}"
            )
        hidden = self.encode(
            input_ids, input_mask, token_type_ids, rng=self._rng(dropout_rng, deterministic)
        )
        features = hidden[:, 1:-1].reshape(hidden.shape[0], -1).astype(jnp.float32)
        return jax.lax.stop_gradient(features)

    def probe_head(
        self, features: Array, *, dropout_rng: Array | None = None, deterministic: bool = True
    ) -> Array:
        """Probe logits ``[b, num_labels]`` from features: dropout (hidden rate) -> linear."""
        self._heads()
        features = dropout(
            features, self.config.hidden_dropout_rate, self._rng(dropout_rng, deterministic)
        )
        return self.probe(features.astype(self.config.compute_dtype)).astype(jnp.float32)

    def probe_logits(
        self,
        input_ids: Array,
        input_mask: Array | None = None,
        token_type_ids: Array | None = None,
        *,
        dropout_rng: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """`probe_features` then `probe_head` (independent dropout keys for the two)."""
        self._heads()
        r_features, r_head = split_rng(self._rng(dropout_rng, deterministic), 2)
        features = self.probe_features(
            input_ids, input_mask, token_type_ids, dropout_rng=r_features,
            deterministic=r_features is None,
        )
        return self.probe_head(features, dropout_rng=r_head, deterministic=r_head is None)


# --------------------------------------------------------------------------------------------
# Functional API (pure functions of graphdef + state, for jax.jit / jax.grad).
# --------------------------------------------------------------------------------------------

StateLike = nnx.State | Sequence[nnx.State]


def _merge(graphdef: nnx.GraphDef, state: StateLike) -> Bert:
    states = tuple(state) if isinstance(state, (tuple, list)) else (state,)
    return nnx.merge(graphdef, *states)


def _call(
    graphdef: nnx.GraphDef, state: StateLike, method: str, *args: Any, **kwargs: Any
) -> Array:
    """``model.<method>(*args, **kwargs)`` on the model rebuilt from ``graphdef`` and ``state``.

    The body of every wrapper below. By name, so that the merged object's own method runs.
    """
    return getattr(_merge(graphdef, state), method)(*args, **kwargs)


def bert_encode(
    graphdef: nnx.GraphDef,
    state: StateLike,
    input_ids: Array,
    input_mask: Array | None = None,
    token_type_ids: Array | None = None,
    *,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
) -> Array:
    """Pure `Bert.encode`: final hidden states ``[b, l, hidden]``."""
    model = _merge(graphdef, state)  # not `_call`: `Bert.encode` takes the resolved key
    return model.encode(
        input_ids, input_mask, token_type_ids, rng=model._rng(dropout_rng, deterministic)
    )


def bert_mlm_logits(
    graphdef: nnx.GraphDef,
    state: StateLike,
    input_ids: Array,
    input_mask: Array | None = None,
    token_type_ids: Array | None = None,
    *,
    masked_positions: Array | None = None,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
) -> Array:
    """Pure `Bert.mlm_logits`: float32 ``[b, l | p, vocab]``."""
    return _call(graphdef, state, "mlm_logits", input_ids, input_mask, token_type_ids,
                 masked_positions=masked_positions, dropout_rng=dropout_rng,
                 deterministic=deterministic)


def bert_classify(
    graphdef: nnx.GraphDef,
    state: StateLike,
    input_ids: Array,
    input_mask: Array | None = None,
    token_type_ids: Array | None = None,
    *,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
) -> Array:
    """Pure `Bert.classify`: fine-tuning logits ``[b, num_labels]``."""
    return _call(graphdef, state, "classify", input_ids, input_mask, token_type_ids,
                 dropout_rng=dropout_rng, deterministic=deterministic)


def bert_features(
    graphdef: nnx.GraphDef,
    state: StateLike,
    input_ids: Array,
    input_mask: Array | None = None,
    token_type_ids: Array | None = None,
    *,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
) -> Array:
    """Pure `Bert.probe_features`: frozen ``[b, (probe_length - 2) * hidden]`` features."""
    return _call(graphdef, state, "probe_features", input_ids, input_mask, token_type_ids,
                 dropout_rng=dropout_rng, deterministic=deterministic)


def bert_probe_logits(
    graphdef: nnx.GraphDef,
    state: StateLike,
    input_ids: Array,
    input_mask: Array | None = None,
    token_type_ids: Array | None = None,
    *,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
) -> Array:
    """Pure `Bert.probe_logits`: linear-probe logits ``[b, num_labels]``."""
    return _call(graphdef, state, "probe_logits", input_ids, input_mask, token_type_ids,
                 dropout_rng=dropout_rng, deterministic=deterministic)


def bert_probe_head(
    graphdef: nnx.GraphDef,
    state: StateLike,
    features: Array,
    *,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
) -> Array:
    """Pure `Bert.probe_head`: probe logits from precomputed `bert_features`."""
    return _call(graphdef, state, "probe_head", features, dropout_rng=dropout_rng,
                 deterministic=deterministic)


def split_probe(model: Bert) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """``graphdef, probe_params, frozen``: what a linear-probe step optimises, and the rest.

    The features already stop gradients, but decoupled weight decay (AdamW) would still shrink
    any parameter it is given; optimise ``probe_params`` only, and call the functional API with
    ``state=(probe_params, frozen)``.
    """
    return nnx.split(model, nnx.PathContains("probe"), ...)


PRETRAINED_PREFIXES = ("embeddings/", "encoder/")


def load_pretrained_encoder(
    model: Bert, flat: Mapping[str, Any], prefixes: Sequence[str] = PRETRAINED_PREFIXES
) -> list[str]:
    """Copy the ``prefixes`` parameters of a pre-trained flat dict into ``model`` (in place).

    For fine-tuning and probing: the reference builds a *new* pooler and classifier on top of
    the pre-trained embeddings and encoder, so by default only those two are copied; the
    model's other parameters keep their initial values. Returns the copied names. Raises
    ``ValueError`` if a name under ``prefixes`` is missing from ``flat`` or mis-shaped.
    """
    current = flat_params(model)
    names = [k for k in current if k.startswith(tuple(prefixes))]
    missing = [k for k in names if k not in flat]
    if missing:
        raise ValueError(
            f"pre-trained parameters lack {len(missing)} names, e.g. {', '.join(missing[:5])}"
        )
    merged = dict(current)
    for name in names:
        if tuple(np.shape(flat[name])) != tuple(current[name].shape):
            raise ValueError(
                f"{name}: pre-trained shape {tuple(np.shape(flat[name]))} != "
                f"model shape {tuple(current[name].shape)}"
            )
        merged[name] = flat[name]
    load_flat_params(model, merged)
    return names


def bert_matmul_flops(
    cfg: BertConfig, batch: int, length: int, num_predictions: int | None = None
) -> int:
    """Forward matmul FLOPs (2 per multiply-add) of one MLM batch, for MFU accounting.

    Projections, attention scores and weighted values, MLP, MLM head transform and the tied
    vocabulary projection (at ``num_predictions`` positions per example if sparse, else at
    every position). Norms, softmax, biases and the gathers are ignored. A step is ~3x this.
    """
    d, ff, vocab = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    per_layer = 2 * length * d * d * 4 + 2 * 2 * length * length * d + 2 * 2 * length * d * ff
    predicted = length if num_predictions is None else num_predictions
    head = 2 * predicted * (d * d + d * vocab)
    return batch * (cfg.num_layers * per_layer + head)

__all__ = [
    "BERT_ACTIVATIONS",
    "BERT_PRESETS",
    "Bert",
    "BertAttention",
    "BertConfig",
    "BertEmbeddings",
    "BertEncoder",
    "BertLayer",
    "BertMlp",
    "MlmHead",
    "Pooler",
    "bert_classify",
    "bert_config",
    "bert_config_from_dict",
    "bert_encode",
    "bert_features",
    "bert_matmul_flops",
    "bert_mlm_logits",
    "bert_probe_head",
    "bert_probe_logits",
    "load_pretrained_encoder",
    "padded_vocab_size",
    "split_probe",
    "validate_bert_config",
]
