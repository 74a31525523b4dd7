"""Hugging Face ``BertForMaskedLM`` <-> project `Bert` weights (local files only).

Listed in `interop.HF_ARCHITECTURES` under ``model_type="bert"`` (resolved on first use, never
imported by `bert`), so the generic entry points work:
``interop.load_hf_checkpoint(dir)``, ``interop.save_hf_checkpoint(model, dir)``,
``interop.from_hf_state_dict(config_dict, state_dict)``, ``interop.to_hf_state_dict(model)``
and ``interop.to_transformers(model)`` (a ``BertForMaskedLM``). Nothing is ever downloaded.

Mapping (checked against transformers 5.x ``modeling_bert.py``):

* torch ``Linear.weight`` is ``[out, in]``: every project kernel is its transpose.
* Hugging Face BERT is **post-LN**: ``attention.output.LayerNorm`` is the project's
  ``attention_output_layer_norm`` and ``output.LayerNorm`` its ``mlp_output_layer_norm``;
  ``LayerNorm.{weight,bias}`` are ``{scale,bias}``. A pre-LN model has no Hugging Face
  equivalent: exporting one raises ``ValueError``.
* ``cls.predictions.decoder.weight`` is tied to the word embeddings and
  ``cls.predictions.decoder.bias`` to ``cls.predictions.bias`` (= ``mlm_head/bias``); on import
  they must equal what they alias, on export they are left out, as ``save_pretrained`` does.
* ``BertForMaskedLM`` has no pooler. Import takes ``bert.pooler.dense`` when the checkpoint has
  it (e.g. one saved from ``BertForPreTraining``) and otherwise fills the project's pooler with
  BERT's initialisation from a fixed seed (the reference fine-tunes with a fresh pooler
  anyway); export writes it (``BertForMaskedLM`` ignores ``pooler`` keys on load).
* The downstream heads (``classifier``, ``probe``) are not part of ``BertForMaskedLM``:
  export raises ``ValueError`` for a model with ``num_labels > 0``.
* Hidden activation names are Hugging Face's (``gelu`` = erf GELU, ``gelu_new``, ``relu``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline_lib.models import interop
from pipeline_lib.models.bert import BERT_ACTIVATIONS, Bert, BertConfig, validate_bert_config

StateDict = dict[str, np.ndarray]

# (project sub-path, Hugging Face sub-path) of the parts of one encoder layer.
_LAYER_LINEARS = (
    ("attention/query", "attention.self.query"),
    ("attention/key", "attention.self.key"),
    ("attention/value", "attention.self.value"),
    ("attention/out", "attention.output.dense"),
    ("mlp/wi", "intermediate.dense"),
    ("mlp/wo", "output.dense"),
)
_LAYER_NORMS = (
    ("attention_output_layer_norm", "attention.output.LayerNorm"),
    ("mlp_output_layer_norm", "output.LayerNorm"),
)
_POOLER = (("pooler/dense/kernel", "bert.pooler.dense.weight", True),
           ("pooler/dense/bias", "bert.pooler.dense.bias", False))
# Hugging Face keys that are copies of another weight: (alias, the weight it copies).
_TIED = (
    ("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
    ("cls.predictions.decoder.bias", "cls.predictions.bias"),
)
_IGNORED = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")  # buffers


def bert_hf_names(cfg: BertConfig) -> list[tuple[str, str, bool]]:
    """``(project name, Hugging Face name, transposed)`` for every mapped parameter.

    Covers the post-LN encoder, the MLM head and the pooler; not the downstream heads.
    """
    if cfg.pre_ln:
        raise ValueError(
            "Hugging Face BERT is post-LN; this model is pre-LN (pre_ln=True) and has no "
            "BertForMaskedLM equivalent"
        )
    names: list[tuple[str, str, bool]] = []

    def norm(ours: str, hf: str) -> None:
        names.append((f"{ours}/scale", f"{hf}.weight", False))
        names.append((f"{ours}/bias", f"{hf}.bias", False))

    def linear(ours: str, hf: str) -> None:
        names.append((f"{ours}/kernel", f"{hf}.weight", True))
        names.append((f"{ours}/bias", f"{hf}.bias", False))

    embeddings = ["word_embeddings", "position_embeddings"]
    if cfg.type_vocab_size:
        embeddings.append("token_type_embeddings")
    for table in embeddings:
        names.append((f"embeddings/{table}/embedding", f"bert.embeddings.{table}.weight", False))
    norm("embeddings/layer_norm", "bert.embeddings.LayerNorm")
    for i in range(cfg.num_layers):
        for ours, hf in _LAYER_LINEARS:
            linear(f"encoder/layers_{i}/{ours}", f"bert.encoder.layer.{i}.{hf}")
        for ours, hf in _LAYER_NORMS:
            norm(f"encoder/layers_{i}/{ours}", f"bert.encoder.layer.{i}.{hf}")
    linear("mlm_head/dense", "cls.predictions.transform.dense")
    norm("mlm_head/layer_norm", "cls.predictions.transform.LayerNorm")
    names.append(("mlm_head/bias", "cls.predictions.bias", False))
    names.extend(_POOLER)
    return names


def bert_config_from_hf(hf: Mapping[str, Any]) -> BertConfig:
    """`BertConfig` (post-LN) from a transformers ``BertConfig`` dict (config.json)."""
    position_type = hf.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"config.json position_embedding_type {position_type!r} is not supported (absolute)"
        )
    act = hf.get("hidden_act", "gelu")
    if act not in BERT_ACTIVATIONS:
        raise ValueError(
            f"config.json hidden_act {act!r} is not supported; supported: "
            f"{', '.join(BERT_ACTIVATIONS)}"
        )
    return validate_bert_config(
        BertConfig(
            vocab_size=hf.get("vocab_size", 30522),
            hidden_size=hf.get("hidden_size", 768),
            num_layers=hf.get("num_hidden_layers", 12),
            num_heads=hf.get("num_attention_heads", 12),
            intermediate_size=hf.get("intermediate_size", 3072),
            max_position_embeddings=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2),
            pre_ln=False,
            hidden_act=act,
            hidden_dropout_rate=float(hf.get("hidden_dropout_prob", 0.1)),
            attention_dropout_rate=float(hf.get("attention_probs_dropout_prob", 0.1)),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            initializer_range=float(hf.get("initializer_range", 0.02)),
            probe_length=min(20, hf.get("max_position_embeddings", 512)),
        ),
        prefix="config.json",
    )


def bert_config_to_hf(cfg: BertConfig) -> dict[str, Any]:
    """config.json for ``BertForMaskedLM`` (post-LN models only)."""
    if cfg.pre_ln:
        bert_hf_names(cfg)  # raises the pre-LN error
    if cfg.type_vocab_size == 0:
        raise ValueError("Hugging Face BERT always has token type embeddings (type_vocab_size 0)")
    return {
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": cfg.hidden_act,
        "hidden_dropout_prob": cfg.hidden_dropout_rate,
        "attention_probs_dropout_prob": cfg.attention_dropout_rate,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "position_embedding_type": "absolute",
        "pad_token_id": 0,
        "tie_word_embeddings": True,
        "dtype": "float32",
    }


def _bert_params_from_hf(weights: Mapping[str, np.ndarray], cfg: BertConfig) -> StateDict:
    weights = dict(weights)
    for alias, original in _TIED:
        absent = alias not in weights or original not in weights
        if not absent and not np.array_equal(weights[alias], weights[original]):
            raise ValueError(
                f"{alias} differs from {original}: the project ties them (untied MLM "
                "decoders are not supported)"
            )
    names = bert_hf_names(cfg)
    pooler_keys = {hf for _, hf, _ in _POOLER}
    if not pooler_keys & set(weights):  # BertForMaskedLM: no pooler; BERT init, fixed seed
        rng = np.random.default_rng(0)
        d = cfg.hidden_size
        weights["bert.pooler.dense.weight"] = rng.normal(0.0, cfg.initializer_range, (d, d))
        weights["bert.pooler.dense.bias"] = np.zeros((d,), np.float32)
    missing = [hf for _, hf, _ in names if hf not in weights]
    known = {hf for _, hf, _ in names} | {alias for alias, _ in _TIED} | set(_IGNORED)
    extra = sorted(set(weights) - known)
    if missing or extra:
        problems = [f"missing {', '.join(missing)}" if missing else "",
                    f"unexpected {', '.join(extra)}" if extra else ""]
        raise ValueError(
            "Hugging Face BERT weights do not match config.json: "
            + "; ".join(p for p in problems if p)
        )
    return {
        ours: np.asarray(weights[hf].T if transposed else weights[hf], np.float32)
        for ours, hf, transposed in names
    }


def _bert_params_to_hf(flat: Mapping[str, np.ndarray], cfg: BertConfig) -> StateDict:
    if cfg.num_labels:
        raise ValueError(
            "the classifier/probe heads (num_labels > 0) have no BertForMaskedLM equivalent; "
            "export the pre-trained model (num_labels=0)"
        )
    return {
        hf: np.ascontiguousarray(flat[ours].T if transposed else flat[ours])
        for ours, hf, transposed in bert_hf_names(cfg)
    }


BERT_HF = interop.HFArchitecture(
    model_type="bert",
    architecture="BertForMaskedLM",
    config_type=BertConfig,
    config_from_hf=bert_config_from_hf,
    config_to_hf=bert_config_to_hf,
    params_from_hf=_bert_params_from_hf,
    params_to_hf=_bert_params_to_hf,
    build=lambda config, rngs: Bert(config, rngs=rngs),
)

__all__ = ["BERT_HF", "bert_config_from_hf", "bert_config_to_hf", "bert_hf_names"]
