"""Function-preserving embedding of a small pre-LN BERT into a wider and deeper one (liu2023 §4.3).

Purpose: the paper compares Hessian traces across model sizes *in one parameterisation*, so every
smaller model is embedded into the largest architecture without changing its function. This is
the released ``enlarge.py`` recipe, rewritten for the project's parameter layout
(`pipeline_lib.models.bert`; flat ``'/'``-joined names as `train.checkpoint.flatten_params`):

==========================================  ====================================================
small parameter                             large parameter (``k = d_large / d_small``)
==========================================  ====================================================
``embeddings/*/embedding [rows, d]``        tiled k times along d, divided by k
any LayerNorm ``scale`` / ``bias`` [d]      tiled k times
``mlm_head/bias [vocab]``                   copied
other 2-D ``kernel [in, out]``              k x k block matrix of ``W / k``
other ``bias [out]``                        tiled k times
``classifier/kernel [d, labels]``           rows tiled k times, divided by k; bias copied
``probe/kernel [(L-2) d, labels]``          rows tiled k times *within each position*, / k;
                                            bias copied
layers ``layers_{L_small} ..``              all zeros (scale and bias of their norms included)
==========================================  ====================================================

Why it is exact. Write ``tile(x)`` for x repeated k times. The embedding sum is ``tile(e) / k``
and LayerNorm is scale invariant, so after the embedding norm the residual stream is
``tile(h)``. A ``[in, out]`` kernel laid out as k x k blocks of ``W / k`` maps ``tile(y)`` to
``tile(y W)`` (each output copy sums k equal halves), plus the tiled bias: ``tile(y W + b)``.
LayerNorm of a tiled vector is the tiled LayerNorm (same mean and variance), element-wise
activations commute with tiling, and the tied decoder gives ``tile(t) . tile(E)^T / k = t . E^T``,
so the logits are preserved, with the copied output bias. Attention: q/k/v are ``[d, d]`` kernels
whose output axis is reshaped head-major to ``(heads, head_dim)``, so output column
``b * d + h * head_dim + j`` of the block kernel lands in head ``b * heads_small + h``: **large
head h' is a copy of small head ``h' mod heads_small``**, with the same head dim, hence the same
1/sqrt(head_dim) scale and the same attention weights. This is why the heads must scale by k:
keeping the head count doubles the head dim, each large head then sums the logits of two small
heads and rescales them, and the function changes (the reference measured 8e-2 on the logits).
Extra layers are zero, and a zero pre-LN block is the identity: its norm outputs zeros, so
attention adds ``0 @ W_out + 0`` and the MLP adds ``act(0) @ 0 + 0``.

The pooler is handled like any other dense layer (block kernel, tiled bias), so the pooled
vector is ``tile(pooled_small)``; a classifier enlarged as above then gives the same logits.

Conditions, checked by `check_enlargeable` before any array is touched (`EnlargeError` names
the violated one): pre-LN in both models (a zeroed post-LN layer is *not* the identity: its
output norm has scale 0; post-LN widening at equal depth would be exact, but the paper's recipe
and every use here is pre-LN, so it is refused rather than special-cased); ``d_large = k d_small``
for an integer k >= 1; heads scaled by k (equal head dim); intermediate size scaled by k; equal
vocabulary, max positions, token types, activation, LayerNorm eps and downstream heads.

One inexactness remains, as in the reference: the embedding LayerNorm sees a vector scaled by
1/k, so its eps acts as ``k^2 eps``. With BERT's 1e-12 this is far below float32 resolution.

The extra layers are all zeros, as in the reference (every key absent from the small model is
zeroed), so the enlarged model's Hessian matches the reference's, norms included.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
from flax import nnx

from pipeline_lib.models.bert import Bert, BertConfig
from pipeline_lib.models.layers import flat_params


class EnlargeError(ValueError):
    """The small model cannot be embedded exactly into the large one, or its parameters are bad."""


# Fields that must be equal in both configs, with the reason shown to the user.
_EQUAL_FIELDS = {
    "vocab_size": "the vocabulary (word embeddings and MLM output)",
    "max_position_embeddings": "the position table",
    "type_vocab_size": "the token-type table",
    "hidden_act": "the activation (the MLPs must compute the same function)",
    "layer_norm_eps": "the LayerNorm eps",
    "num_labels": "the downstream heads",
    "dtype": "the compute dtype (a bfloat16 copy does not compute the float32 function)",
}

# Tiling features k times divides their variance by k^2, so a LayerNorm of the enlarged model
# computes the small one with eps multiplied by k^2: exact only while eps * (k^2 - 1) is
# negligible against the features' variance. 1e-12 (BERT's default) gives < 1e-10 at k = 4;
# 1e-5 already moved logits by ~1e-2 in the tests.
MAX_EPS_SHIFT = 1e-9

_LAYER = re.compile(r"^encoder/layers_(\d+)/")


def check_enlargeable(small: BertConfig, large: BertConfig) -> int:
    """The width ratio ``k = d_large / d_small`` if ``small`` embeds exactly into ``large``.

    Raises `EnlargeError` naming the first violated condition (module docstring).
    """
    if not (small.pre_ln and large.pre_ln):
        which = [name for name, cfg in (("small", small), ("large", large)) if not cfg.pre_ln]
        raise EnlargeError(
            f"pre_ln: the {' and '.join(which)} model{'s are' if len(which) > 1 else ' is'} "
            "post-LN; enlargement needs pre-LN in "
            "both (a zeroed post-LN layer is not the identity)"
        )
    for name, what in _EQUAL_FIELDS.items():
        a, b = getattr(small, name), getattr(large, name)
        if a != b:
            raise EnlargeError(f"{name}: small {a!r} != large {b!r}; {what} must be the same")
    if small.num_labels and small.probe_length != large.probe_length:
        raise EnlargeError(
            f"probe_length: small {small.probe_length} != large {large.probe_length}; the probe "
            "heads must read the same positions"
        )
    d_small, d_large = small.hidden_size, large.hidden_size
    if d_large % d_small:
        raise EnlargeError(
            f"hidden_size: large {d_large} is not an integer multiple of small {d_small}"
        )
    k = d_large // d_small
    if small.layer_norm_eps * (k * k - 1) > MAX_EPS_SHIFT:
        raise EnlargeError(
            f"layer_norm_eps: {small.layer_norm_eps:g} x (k^2 - 1) = "
            f"{small.layer_norm_eps * (k * k - 1):.2g} for width ratio k = {k}; the enlarged "
            f"LayerNorms would compute the small model with eps x k^2, not exactly (allowed: "
            f"eps x (k^2 - 1) <= {MAX_EPS_SHIFT:g}, e.g. BERT's 1e-12)"
        )
    if large.num_heads != k * small.num_heads:
        raise EnlargeError(
            f"num_heads: large {large.num_heads} != {k} x small {small.num_heads}; heads must "
            f"scale with the width (equal head dim; here {small.head_dim} vs {large.head_dim}), "
            "otherwise each large head mixes several small heads and the function changes"
        )
    if large.intermediate_size != k * small.intermediate_size:
        raise EnlargeError(
            f"intermediate_size: large {large.intermediate_size} != {k} x small "
            f"{small.intermediate_size}"
        )
    if large.num_layers < small.num_layers:
        raise EnlargeError(
            f"num_layers: large {large.num_layers} < small {small.num_layers}; layers can only "
            "be added"
        )
    return k


def parameter_shapes(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of every parameter of ``Bert(cfg)``, without allocating them."""
    abstract = nnx.eval_shape(lambda: Bert(cfg, rngs=nnx.Rngs(params=0)))
    return {name: tuple(value.shape) for name, value in flat_params(abstract).items()}


def _tile_rows(w: np.ndarray, k: int) -> np.ndarray:
    """``[d, ...] -> [k d, ...]`` (copy b of row i at row ``b d + i``)."""
    return np.tile(w, (k,) + (1,) * (w.ndim - 1))


def _enlarge_one(name: str, w: np.ndarray, k: int, small: BertConfig) -> np.ndarray:
    """The large-model value of one small parameter (table in the module docstring)."""
    leaf = name.rsplit("/", 1)[-1]
    if name.startswith("embeddings/") and leaf == "embedding":
        return np.tile(w, (1, k)) / k
    if "norm" in name:  # every LayerNorm path has "layer_norm" in its module name
        return np.tile(w, k)
    if name in ("mlm_head/bias", "classifier/bias", "probe/bias"):
        return w.copy()
    if name == "classifier/kernel":
        return _tile_rows(w, k) / k
    if name == "probe/kernel":
        positions, labels = small.probe_length - 2, w.shape[-1]
        per_position = w.reshape(positions, small.hidden_size, labels)
        return (np.tile(per_position, (1, k, 1)) / k).reshape(
            positions * k * small.hidden_size, labels
        )
    if leaf == "kernel":
        return np.tile(w, (k, k)) / k
    if leaf == "bias":
        return np.tile(w, k)
    raise EnlargeError(f"{name}: no enlargement rule for this parameter")


def enlarge_params(
    small_flat: Mapping[str, np.ndarray], small_cfg: BertConfig, large_cfg: BertConfig
) -> dict[str, np.ndarray]:
    """Flat parameters of a ``large_cfg`` BERT computing the same function as ``small_flat``.

    ``small_flat`` must hold exactly the parameters of ``Bert(small_cfg)`` (names and shapes);
    the result holds exactly those of ``Bert(large_cfg)``, in the dtype of the small arrays.
    Raises `EnlargeError` if the configs do not allow an exact embedding or ``small_flat``
    does not match ``small_cfg``.
    """
    k = check_enlargeable(small_cfg, large_cfg)
    small_shapes = parameter_shapes(small_cfg)
    missing = sorted(set(small_shapes) - set(small_flat))
    extra = sorted(set(small_flat) - set(small_shapes))
    if missing or extra:
        raise EnlargeError(
            "small parameters do not match the small config: "
            + "; ".join(
                f"{label} {', '.join(names[:5])}" + (" ..." if len(names) > 5 else "")
                for label, names in (("missing", missing), ("unexpected", extra))
                if names
            )
        )
    for name, shape in small_shapes.items():
        if tuple(np.shape(small_flat[name])) != shape:
            raise EnlargeError(
                f"{name}: small parameter has shape {tuple(np.shape(small_flat[name]))}, the "
                f"small config needs {shape}"
            )
    dtype = np.result_type(*(np.asarray(v).dtype for v in small_flat.values()))
    large: dict[str, np.ndarray] = {}
    for name, shape in parameter_shapes(large_cfg).items():
        if name in small_flat:
            value = _enlarge_one(name, np.asarray(small_flat[name]), k, small_cfg)
        else:
            layer = _LAYER.match(name)
            if layer is None or int(layer.group(1)) < small_cfg.num_layers:
                raise EnlargeError(f"{name}: large parameter with no small counterpart")
            value = np.zeros(shape, dtype)  # a zero pre-LN layer is the identity
        if value.shape != shape:  # a rule that disagrees with the model: fail loudly
            raise EnlargeError(f"{name}: enlarged shape {value.shape} != large model's {shape}")
        large[name] = value.astype(dtype, copy=False)
    return large


__all__ = ["EnlargeError", "check_enlargeable", "enlarge_params", "parameter_shapes"]
