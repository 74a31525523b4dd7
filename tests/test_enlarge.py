"""Function-preserving BERT enlargement (pipeline_lib.evaluate.enlarge) on tiny random models."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pipeline_lib.evaluate.enlarge import (
    EnlargeError,
    check_enlargeable,
    enlarge_params,
    parameter_shapes,
)
from pipeline_lib.models.bert import Bert, BertConfig
from pipeline_lib.models.layers import load_flat_params

LENGTH = 12  # = max positions = probe length, so the probe head runs on the test inputs

SMALL = BertConfig(
    vocab_size=40,
    hidden_size=16,
    num_layers=2,
    num_heads=2,
    intermediate_size=32,
    max_position_embeddings=LENGTH,
    type_vocab_size=2,
    probe_length=LENGTH,
)


def wider(cfg: BertConfig, k: int, layers: int) -> BertConfig:
    return dataclasses.replace(
        cfg,
        hidden_size=k * cfg.hidden_size,
        num_heads=k * cfg.num_heads,
        intermediate_size=k * cfg.intermediate_size,
        num_layers=layers,
    )


def random_params(cfg: BertConfig, seed: int) -> dict[str, np.ndarray]:
    """Every parameter random and O(1)-scaled (norm scales near 1, non-zero biases), so a
    wrong mapping of any key shows in the outputs; N(0, 0.02) init would hide most."""
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in parameter_shapes(cfg).items():
        if name.endswith("norm/scale"):
            value = 1.0 + 0.3 * rng.standard_normal(shape)
        elif name.endswith("bias"):
            value = 0.3 * rng.standard_normal(shape)
        elif name.endswith("kernel"):
            value = rng.standard_normal(shape) / np.sqrt(shape[0])
        else:  # embeddings
            value = 0.5 * rng.standard_normal(shape)
        flat[name] = value.astype(np.float32)
    return flat


def model_with(cfg: BertConfig, flat: dict[str, np.ndarray]) -> Bert:
    model = Bert(cfg, rngs=nnx.Rngs(params=0))
    load_flat_params(model, flat)
    return model


def random_inputs(cfg: BertConfig, seed: int = 7):
    """Three rows with 12, 7 and 3 real tokens (padding in two), random token types."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg.vocab_size, size=(3, LENGTH))
    lengths = np.array([LENGTH, 7, 3])
    mask = np.arange(LENGTH)[None, :] < lengths[:, None]
    ids = np.where(mask, ids, 0)
    types = rng.integers(0, cfg.type_vocab_size, size=(3, LENGTH))
    return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)


@pytest.mark.parametrize(
    ("k", "layers", "num_labels"), [(2, 3, 3), (3, 2, 0), (3, 4, 0), (1, 3, 0)]
)
def test_enlarged_model_computes_the_same_function(k: int, layers: int, num_labels: int) -> None:
    small_cfg = dataclasses.replace(SMALL, num_labels=num_labels)
    large_cfg = wider(small_cfg, k, layers)
    assert check_enlargeable(small_cfg, large_cfg) == k
    small_flat = random_params(small_cfg, seed=k + layers)
    large_flat = enlarge_params(small_flat, small_cfg, large_cfg)
    assert {n: v.shape for n, v in large_flat.items()} == parameter_shapes(large_cfg)
    small, large = model_with(small_cfg, small_flat), model_with(large_cfg, large_flat)
    ids, mask, types = random_inputs(small_cfg)

    small_logits = np.asarray(small.mlm_logits(ids, mask, types))
    large_logits = np.asarray(large.mlm_logits(ids, mask, types))
    assert np.abs(small_logits).max() > 1.0  # a non-trivial function is being preserved
    assert np.abs(large_logits - small_logits).max() <= 1e-5

    # The residual stream of the large model is k copies of the small one's.
    small_hidden = np.asarray(small.encode(ids, mask, types))
    large_hidden = np.asarray(large.encode(ids, mask, types))
    np.testing.assert_allclose(large_hidden, np.tile(small_hidden, (1, 1, k)), atol=1e-5, rtol=0)

    if num_labels:  # pooler + classifier and the linear probe are preserved too
        np.testing.assert_allclose(
            large.classify(ids, mask, types), small.classify(ids, mask, types), atol=1e-5, rtol=0
        )
        np.testing.assert_allclose(
            large.probe_logits(ids, mask, types),
            small.probe_logits(ids, mask, types),
            atol=1e-5,
            rtol=0,
        )


def test_mapping_of_individual_parameters() -> None:
    large_cfg = wider(SMALL, 2, 3)
    small = random_params(SMALL, seed=1)
    large = enlarge_params(small, SMALL, large_cfg)
    w = small["encoder/layers_0/attention/query/kernel"]
    np.testing.assert_array_equal(
        large["encoder/layers_0/attention/query/kernel"], np.block([[w, w], [w, w]]) / 2
    )
    e = small["embeddings/word_embeddings/embedding"]
    np.testing.assert_array_equal(
        large["embeddings/word_embeddings/embedding"], np.hstack([e, e]) / 2
    )
    s = small["encoder/final_layer_norm/scale"]
    np.testing.assert_array_equal(large["encoder/final_layer_norm/scale"], np.concatenate([s, s]))
    np.testing.assert_array_equal(large["mlm_head/bias"], small["mlm_head/bias"])
    # Large head h' is small head h' mod 2: query columns of head 2 are those of head 0.
    q = large["encoder/layers_1/attention/query/kernel"].reshape(32, 4, 8)
    np.testing.assert_array_equal(q[:, 2], q[:, 0])
    extra = [n for n in large if n.startswith("encoder/layers_2/")]
    assert len(extra) == 16 and all(not large[n].any() for n in extra)


def test_heads_not_scaled_is_refused_and_would_change_the_function() -> None:
    good = wider(SMALL, 2, 2)
    bad = dataclasses.replace(good, num_heads=SMALL.num_heads)  # head dim 8 -> 16
    with pytest.raises(EnlargeError, match=r"num_heads: large 2 != 2 x small 2"):
        check_enlargeable(SMALL, bad)
    with pytest.raises(EnlargeError, match="num_heads"):
        enlarge_params(random_params(SMALL, 0), SMALL, bad)
    # The parameter shapes do not depend on the head count, so the mapping can be forced onto
    # the 2-head model: its outputs differ, which is why the condition exists.
    small_flat = random_params(SMALL, seed=3)
    large_flat = enlarge_params(small_flat, SMALL, good)
    ids, mask, types = random_inputs(SMALL)
    reference = np.asarray(model_with(SMALL, small_flat).mlm_logits(ids, mask, types))
    exact = np.asarray(model_with(good, large_flat).mlm_logits(ids, mask, types))
    forced = np.asarray(model_with(bad, large_flat).mlm_logits(ids, mask, types))
    assert np.abs(exact - reference).max() <= 1e-5
    assert np.abs(forced - reference).max() > 1e-2


@pytest.mark.parametrize(
    ("small_change", "large_change", "message"),
    [
        ({"pre_ln": False}, {"pre_ln": True}, "pre_ln: the small model is post-LN"),
        ({}, {"pre_ln": False}, "pre_ln: the large model is post-LN"),
        ({"pre_ln": False}, {}, "pre_ln: the small and large models are post-LN"),
        (
            {},
            {"hidden_size": 24, "num_heads": 3, "intermediate_size": 48},
            "hidden_size: large 24 is not an integer multiple of small 16",
        ),
        ({}, {"num_layers": 1}, "num_layers: large 1 < small 2"),
        ({}, {"intermediate_size": 32}, r"intermediate_size: large 32 != 2 x small 32"),
        ({}, {"vocab_size": 48}, "vocab_size: small 40 != large 48"),
        ({}, {"max_position_embeddings": 16}, "max_position_embeddings"),
        ({}, {"type_vocab_size": 1}, "type_vocab_size"),
        ({}, {"hidden_act": "relu"}, "hidden_act: small 'gelu' != large 'relu'"),
        ({"num_labels": 2}, {"num_labels": 2, "probe_length": 10}, "probe_length"),
        ({}, {"dtype": "bfloat16"}, "dtype: small 'float32' != large 'bfloat16'"),
        ({"layer_norm_eps": 1e-5}, {"layer_norm_eps": 1e-5}, r"layer_norm_eps: 1e-05 x \(k\^2 - 1\)"),
        ({"layer_norm_eps": 1e-3}, {"layer_norm_eps": 1e-3}, "eps x k\\^2, not exactly"),
    ],
)
def test_refusals_name_the_condition(small_change, large_change, message) -> None:
    small = dataclasses.replace(SMALL, **small_change)
    large = dataclasses.replace(wider(small, 2, 3), **large_change)
    with pytest.raises(EnlargeError, match=message):
        check_enlargeable(small, large)


def test_small_parameters_must_match_the_small_config() -> None:
    large_cfg = wider(SMALL, 2, 3)
    flat = random_params(SMALL, 0)
    missing = {n: v for n, v in flat.items() if n != "pooler/dense/bias"}
    with pytest.raises(EnlargeError, match="missing pooler/dense/bias"):
        enlarge_params(missing, SMALL, large_cfg)
    misshaped = dict(flat, **{"mlm_head/bias": np.zeros(41, np.float32)})
    with pytest.raises(EnlargeError, match=r"mlm_head/bias: small parameter has shape \(41,\)"):
        enlarge_params(misshaped, SMALL, large_cfg)


def test_the_eps_bound_is_what_keeps_the_function_exact() -> None:
    """Just inside the bound the enlarged logits match; BERT's 1e-12 at k = 2 is accepted."""
    small = dataclasses.replace(SMALL, layer_norm_eps=1e-12)
    assert check_enlargeable(small, dataclasses.replace(wider(small, 2, 3), layer_norm_eps=1e-12)) == 2
    inside = dataclasses.replace(SMALL, layer_norm_eps=3e-10)  # x (k^2 - 1) = 9e-10 <= 1e-9
    assert check_enlargeable(inside, dataclasses.replace(wider(inside, 2, 3),
                                                         layer_norm_eps=3e-10)) == 2
