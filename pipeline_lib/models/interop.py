"""Hugging Face ``transformers`` checkpoints <-> project weights, without downloads.

A checkpoint directory is what ``save_pretrained`` writes: ``config.json`` plus weights
(``model.safetensors``, a sharded ``model.safetensors.index.json``, or ``pytorch_model.bin``).
Reading and writing safetensors needs only the ``safetensors`` package (numpy/flax backends), so
export and import work without torch; ``pytorch_model.bin`` and `to_transformers` need torch.

Public API (model-family agnostic):

* `load_hf_checkpoint(directory)` -> project model; `save_hf_checkpoint(model, directory)`.
* `from_hf_state_dict(hf_config, state_dict)` / `to_hf_state_dict(model)` (numpy arrays keyed by
  Hugging Face names), and `read_hf_checkpoint(directory)`.
* `to_transformers(model)`: the equivalent ``transformers`` torch model (via a temp directory).

Extension point: each model family describes its mapping once in an `HFArchitecture` and adds
one line to `HF_ARCHITECTURES` (``model_type`` as in Hugging Face's config.json, e.g. ``bert``
-> the module and name of its mapping), which `load_hf_checkpoint` imports on demand. T5's
mapping is defined below.

T5 details that matter (checked against transformers 5.x ``modeling_t5.py``):

* torch ``Linear`` weights are ``[out, in]``: every project kernel is transposed.
* HF keeps the relative attention bias only in block 0 of each stack, as ``[buckets, heads]``;
  the project keeps one ``[heads, buckets]`` table per stack (the same sharing, transposed).
* Neither scales attention logits. Tied v1.0 logits are scaled by d_model**-0.5 in both.
* transformers 5 always ties ``lm_head`` to ``shared`` on a fresh model and records v1.0's logit
  scaling as ``scale_decoder_outputs`` (= the ``tie_word_embeddings`` it was given); a v1.1
  checkpoint with its own ``lm_head.weight`` is loaded untied (with a warning). Import maps
  "scaled" to the tied v1.0 head and "unscaled" to a v1.1 ``logits_dense`` (copied from the
  embedding when the checkpoint stores no ``lm_head``). Export writes ``tie_word_embeddings``
  and, for v1.1, ``lm_head.weight``, which transformers 4.x and 5.x both read correctly.
* HF's ``gated-gelu`` is the tanh GELU (``gelu_new``), as in T5X.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from pipeline_lib.models.configs import T5Config, validate_t5_config
from pipeline_lib.models.layers import flat_params, load_flat_params
from pipeline_lib.models.t5 import T5

StateDict = dict[str, np.ndarray]

# --------------------------------------------------------------------------------------------
# Architecture table (the extension point).
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HFArchitecture:
    """How one project model family maps to one Hugging Face ``model_type``.

    ``params_from_hf`` gets the HF state dict (numpy, float32) and the project config and
    returns the project's flat '/'-joined params; ``params_to_hf`` is its inverse. Both should
    raise ``ValueError`` naming missing or unexpected keys.
    """

    model_type: str  # config.json "model_type", e.g. "t5", "bert"
    architecture: str  # config.json "architectures"[0], e.g. "T5ForConditionalGeneration"
    config_type: type  # project config class; export dispatches on type(model.config)
    config_from_hf: Callable[[Mapping[str, Any]], Any]
    config_to_hf: Callable[[Any], dict[str, Any]]
    params_from_hf: Callable[[Mapping[str, np.ndarray], Any], dict[str, np.ndarray]]
    params_to_hf: Callable[[Mapping[str, np.ndarray], Any], StateDict]
    build: Callable[[Any, nnx.Rngs], nnx.Module]  # (config, rngs) -> model with random init


# model_type -> "module:attribute" of its HFArchitecture, resolved on first use. A table, not
# registration on import: importing a model never imports its converter (no import circle,
# no side effect), and a new family adds one line here.
HF_ARCHITECTURES: dict[str, str] = {
    "t5": "pipeline_lib.models.interop:T5_HF",
    "bert": "pipeline_lib.models.bert_interop:BERT_HF",
}


def _resolve(model_type: str) -> HFArchitecture:
    module, _, attribute = HF_ARCHITECTURES[model_type].partition(":")
    return getattr(importlib.import_module(module), attribute)


def _architecture_for_type(model_type: str) -> HFArchitecture:
    if model_type not in HF_ARCHITECTURES:
        raise ValueError(
            f"config.json model_type {model_type!r} has no mapping; "
            f"known: {', '.join(sorted(HF_ARCHITECTURES))}"
        )
    return _resolve(model_type)


def _architecture_for_model(model: nnx.Module) -> HFArchitecture:
    config = getattr(model, "config", None)
    for model_type in HF_ARCHITECTURES:
        arch = _resolve(model_type)
        if isinstance(config, arch.config_type):
            return arch
    raise ValueError(f"no Hugging Face mapping for {type(model).__name__} (config {config!r})")


# --------------------------------------------------------------------------------------------
# Generic conversion and checkpoint I/O.
# --------------------------------------------------------------------------------------------


def _safetensors(backend: str):
    try:
        return importlib.import_module(f"safetensors.{backend}")
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Hugging Face checkpoints need the 'safetensors' package (pip install safetensors)"
        ) from e


def _load_safetensors(path: Path) -> StateDict:
    # The flax backend reads bfloat16 too (numpy has no bfloat16); weights come back float32.
    tensors = _safetensors("flax").load_file(str(path))
    return {name: np.asarray(value, dtype=np.float32) for name, value in tensors.items()}


def read_hf_checkpoint(directory: str | Path) -> tuple[dict[str, Any], StateDict]:
    """``config.json`` and the weights (float32 numpy) of a local checkpoint directory."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not found (expected a save_pretrained directory)")
    config = json.loads(config_path.read_text())
    if (directory / "model.safetensors").is_file():
        return config, _load_safetensors(directory / "model.safetensors")
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        weights: StateDict = {}
        for shard in shards:
            weights.update(_load_safetensors(directory / shard))
        return config, weights
    if (directory / "pytorch_model.bin").is_file():
        import torch  # only this legacy format needs torch

        loaded = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return config, {k: v.float().numpy() for k, v in loaded.items()}
    raise FileNotFoundError(
        f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def from_hf_state_dict(hf_config: Mapping[str, Any], state_dict: Mapping[str, Any]) -> nnx.Module:
    """Project model with the weights of a Hugging Face state dict (numpy or torch tensors)."""
    arch = _architecture_for_type(hf_config.get("model_type", ""))
    config = arch.config_from_hf(hf_config)
    weights = {k: _to_numpy(v) for k, v in state_dict.items()}
    flat = arch.params_from_hf(weights, config)
    # Abstract init (shapes only), then the real weights: no random init is computed.
    model = nnx.eval_shape(lambda: arch.build(config, nnx.Rngs(params=0)))
    load_flat_params(model, flat)
    return model


def load_hf_checkpoint(directory: str | Path) -> nnx.Module:
    """Project model from a local ``save_pretrained`` directory (never downloads)."""
    hf_config, state_dict = read_hf_checkpoint(directory)
    return from_hf_state_dict(hf_config, state_dict)


def hf_config_dict(model: nnx.Module) -> dict[str, Any]:
    """The ``config.json`` contents describing ``model`` to transformers."""
    return _architecture_for_model(model).config_to_hf(model.config)


def to_hf_state_dict(model: nnx.Module) -> StateDict:
    """Float32 numpy weights under Hugging Face names (tied copies are left out, as HF does)."""
    arch = _architecture_for_model(model)
    flat = {k: np.asarray(v, dtype=np.float32) for k, v in flat_params(model).items()}
    return arch.params_to_hf(flat, model.config)


def save_hf_checkpoint(model: nnx.Module, directory: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` that ``from_pretrained`` loads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: np.ascontiguousarray(v) for k, v in to_hf_state_dict(model).items()}
    _safetensors("numpy").save_file(
        weights, str(directory / "model.safetensors"), metadata={"format": "pt"}
    )
    (directory / "config.json").write_text(json.dumps(hf_config_dict(model), indent=2) + "\n")
    return directory


def to_transformers(model: nnx.Module):
    """The equivalent ``transformers`` torch model (eval mode); needs torch + transformers."""
    import transformers

    arch = _architecture_for_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        save_hf_checkpoint(model, tmp)
        hf_class = getattr(transformers, arch.architecture)
        return hf_class.from_pretrained(tmp).eval()


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# T5.
# --------------------------------------------------------------------------------------------

_T5_MLP_TO_HF = {
    "relu": "relu",
    "gated-gelu": "gated-gelu",
    "swiglu": "gated-silu",
    "squared-relu": "relu2",
}
_T5_MLP_FROM_HF = {hf: ours for ours, hf in _T5_MLP_TO_HF.items()}
_ATTENTION_HF = {"query": "q", "key": "k", "value": "v", "out": "o"}

# HF keys that are copies of another weight or that transformers ignores on load.
_T5_TIED_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_T5_IGNORED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)


def t5_config_from_hf(hf: Mapping[str, Any]) -> T5Config:
    """T5Config from a transformers ``T5Config`` dict (config.json)."""
    proj = hf.get("feed_forward_proj", "relu")
    if proj not in _T5_MLP_FROM_HF:
        raise ValueError(
            f"config.json feed_forward_proj {proj!r} is not supported; "
            f"supported: {', '.join(_T5_MLP_FROM_HF)}"
        )
    # transformers 5 writes scale_decoder_outputs (v1.0 tied+scaled head); 4.x only the tie flag.
    scaled = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True))
    num_layers = hf.get("num_layers", 6)
    return validate_t5_config(
        T5Config(
            vocab_size=hf.get("vocab_size", 32128),
            d_model=hf.get("d_model", 512),
            num_heads=hf.get("num_heads", 8),
            head_dim=hf.get("d_kv", 64),
            d_ff=hf.get("d_ff", 2048),
            num_encoder_layers=num_layers,
            num_decoder_layers=hf.get("num_decoder_layers") or num_layers,
            mlp=_T5_MLP_FROM_HF[proj],
            tie_embeddings=bool(scaled),
            dropout_rate=float(hf.get("dropout_rate", 0.1)),
            relpos_buckets=hf.get("relative_attention_num_buckets", 32),
            relpos_max_distance=hf.get("relative_attention_max_distance", 128),
            layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-6)),
        ),
        prefix="config.json",
    )


def t5_config_to_hf(cfg: T5Config) -> dict[str, Any]:
    """config.json for ``T5ForConditionalGeneration`` (readable by transformers 4.x and 5.x)."""
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_kv": cfg.resolved_head_dim,
        "d_ff": cfg.d_ff,
        "num_layers": cfg.num_encoder_layers,
        "num_decoder_layers": cfg.num_decoder_layers,
        "num_heads": cfg.num_heads,
        "relative_attention_num_buckets": cfg.relpos_buckets,
        "relative_attention_max_distance": cfg.relpos_max_distance,
        "dropout_rate": cfg.dropout_rate,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "initializer_factor": 1.0,
        "feed_forward_proj": _T5_MLP_TO_HF[cfg.mlp],
        "tie_word_embeddings": cfg.tie_embeddings,
        "is_encoder_decoder": True,
        "use_cache": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "dtype": "float32",
    }


def t5_hf_names(cfg: T5Config) -> list[tuple[str, str, bool]]:
    """``(project name, Hugging Face name, transposed)`` for every project parameter."""
    mlp = ["wi_0", "wi_1", "wo"] if cfg.mlp in ("gated-gelu", "swiglu") else ["wi", "wo"]
    names = [("token_embedder/embedding", "shared.weight", False)]

    def attention(ours: str, hf: str) -> None:
        for name, short in _ATTENTION_HF.items():
            names.append((f"{ours}/{name}/kernel", f"{hf}.{short}.weight", True))

    def block(ours: str, hf: str, sublayers: list[tuple[str, str, str]]) -> None:
        # sublayers: (project attention name or "mlp", project norm name, HF module name)
        for j, (module, norm, hf_module) in enumerate(sublayers):
            names.append((f"{ours}/{norm}/scale", f"{hf}.layer.{j}.layer_norm.weight", False))
            if module == "mlp":
                for w in mlp:
                    hf_name = f"{hf}.layer.{j}.DenseReluDense.{w}.weight"
                    names.append((f"{ours}/mlp/{w}/kernel", hf_name, True))
            else:
                attention(f"{ours}/{module}", f"{hf}.layer.{j}.{hf_module}")

    for i in range(cfg.num_encoder_layers):
        block(f"encoder/layers_{i}", f"encoder.block.{i}", [
            ("attention", "pre_attention_layer_norm", "SelfAttention"),
            ("mlp", "pre_mlp_layer_norm", "DenseReluDense"),
        ])
    for i in range(cfg.num_decoder_layers):
        block(f"decoder/layers_{i}", f"decoder.block.{i}", [
            ("self_attention", "pre_self_attention_layer_norm", "SelfAttention"),
            ("encoder_decoder_attention", "pre_cross_attention_layer_norm", "EncDecAttention"),
            ("mlp", "pre_mlp_layer_norm", "DenseReluDense"),
        ])
    for stack, norm in (("encoder", "encoder_norm"), ("decoder", "decoder_norm")):
        names.append((f"{stack}/{norm}/scale", f"{stack}.final_layer_norm.weight", False))
        names.append((
            f"{stack}/relpos_bias/rel_embedding",
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            True,
        ))
    if not cfg.tie_embeddings:
        names.append(("decoder/logits_dense/kernel", "lm_head.weight", True))
    return names


def _t5_params_from_hf(weights: Mapping[str, np.ndarray], cfg: T5Config) -> dict[str, np.ndarray]:
    weights = dict(weights)
    if "shared.weight" not in weights:  # some exports keep only an alias of the embedding
        for alias in _T5_TIED_ALIASES:
            if alias in weights:
                weights["shared.weight"] = weights[alias]
                break
    has_both = "lm_head.weight" in weights and "shared.weight" in weights
    if cfg.tie_embeddings and has_both:
        if not np.array_equal(weights["lm_head.weight"], weights["shared.weight"]):
            raise ValueError(
                "checkpoint has tied (scaled) logits in config.json but an lm_head.weight that "
                "differs from shared.weight; this combination is not a T5 the project builds"
            )
    elif not cfg.tie_embeddings and "lm_head.weight" not in weights and "shared.weight" in weights:
        # transformers 5 ties lm_head to shared on fresh v1.1 models and then does not save it.
        weights["lm_head.weight"] = weights["shared.weight"]
    names = t5_hf_names(cfg)
    missing = [hf for _, hf, _ in names if hf not in weights]
    known = {hf for _, hf, _ in names} | set(_T5_TIED_ALIASES) | set(_T5_IGNORED)
    known |= {"lm_head.weight"}
    extra = sorted(set(weights) - known)
    if missing or extra:
        raise ValueError(
            "Hugging Face T5 weights do not match config.json: "
            + "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unexpected {', '.join(extra)}" if extra else "",
                )
                if part
            )
        )
    return {ours: (weights[hf].T if transposed else weights[hf]) for ours, hf, transposed in names}


def _t5_params_to_hf(flat: Mapping[str, np.ndarray], cfg: T5Config) -> StateDict:
    return {
        hf: np.ascontiguousarray(flat[ours].T if transposed else flat[ours])
        for ours, hf, transposed in t5_hf_names(cfg)
    }


T5_HF = HFArchitecture(
    model_type="t5",
    architecture="T5ForConditionalGeneration",
    config_type=T5Config,
    config_from_hf=t5_config_from_hf,
    config_to_hf=t5_config_to_hf,
    params_from_hf=_t5_params_from_hf,
    params_to_hf=_t5_params_to_hf,
    build=lambda config, rngs: T5(config, rngs=rngs),
)
