"""BERT (pipeline_lib.models.bert): names, pre/post-LN, heads, frozen probe, presets, HF interop.

The Hugging Face tests need torch and transformers (not project dependencies) and are skipped
without them; every Hugging Face model is built here from a config, nothing is downloaded.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pipeline_lib.models import interop
from pipeline_lib.models.bert import (
    BERT_PRESETS,
    Bert,
    BertConfig,
    MlmHead,
    bert_classify,
    bert_config,
    bert_config_from_dict,
    bert_encode,
    bert_features,
    bert_mlm_logits,
    bert_probe_head,
    bert_probe_logits,
    load_pretrained_encoder,
    padded_vocab_size,
    split_probe,
    validate_bert_config,
)
from pipeline_lib.models.layers import (
    dropout,
    dropout_keep_mask,
    flat_params,
    load_flat_params,
    quantized_keep_prob,
)

VOCAB, LENGTH = 53, 9
# Post-LN as Hugging Face; two token types so that token_type_ids matter. One layer keeps
# compiles short (most of these tests' time); names and the Hugging Face test use two.
TINY = BertConfig(
    vocab_size=VOCAB, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=24,
    max_position_embeddings=12, type_vocab_size=2, pre_ln=False, num_labels=0,
    probe_length=LENGTH,
)
TINY_PRE = dataclasses.replace(TINY, pre_ln=True)
TINY_HEADS = dataclasses.replace(TINY_PRE, num_labels=3)
TWO_LAYERS = dataclasses.replace(TINY, num_layers=2)

mlm = jax.jit(bert_mlm_logits, static_argnames=("deterministic",))


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def abstract(cfg: BertConfig) -> Bert:
    return nnx.eval_shape(lambda: Bert(cfg, rngs=nnx.Rngs(params=0)))


def random_model(cfg: BertConfig, seed: int) -> Bert:
    """Shapes from an abstract init, values from numpy: no per-op JAX compiles (fast tests)."""
    model, rng = abstract(cfg), np.random.default_rng(seed)
    load_flat_params(model, {k: rng.normal(0, 0.5, v.shape) for k, v in flat_params(model).items()})
    return model


def batch(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random ids, a padding mask (row 1 ends in 3 pads) and random token types."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (2, LENGTH))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    return ids, mask, rng.integers(0, 2, (2, LENGTH))


# --------------------------------------------------------------------------------------------
# Names, presets, validation.
# --------------------------------------------------------------------------------------------


def expected_names(cfg: BertConfig) -> set[str]:
    lin = lambda p: {f"{p}/kernel", f"{p}/bias"}
    norm = lambda p: {f"{p}/scale", f"{p}/bias"}
    names = {
        "embeddings/word_embeddings/embedding", "embeddings/position_embeddings/embedding",
        "embeddings/token_type_embeddings/embedding", "mlm_head/bias",
        *norm("embeddings/layer_norm"), *lin("mlm_head/dense"), *norm("mlm_head/layer_norm"),
        *lin("pooler/dense"),
    }
    norms = (("pre_attention_layer_norm", "pre_mlp_layer_norm") if cfg.pre_ln
             else ("attention_output_layer_norm", "mlp_output_layer_norm"))
    for i in range(cfg.num_layers):
        p = f"encoder/layers_{i}"
        for sub in ("attention/query", "attention/key", "attention/value", "attention/out",
                    "mlp/wi", "mlp/wo"):
            names |= lin(f"{p}/{sub}")
        for n in norms:
            names |= norm(f"{p}/{n}")
    if cfg.pre_ln:
        names |= norm("encoder/final_layer_norm")
    if cfg.num_labels:
        names |= lin("classifier") | lin("probe")
    return names


@pytest.mark.parametrize(
    "cfg", [TWO_LAYERS, dataclasses.replace(TWO_LAYERS, pre_ln=True, num_labels=3)],
    ids=["post_ln", "pre_ln_heads"],
)
def test_parameter_paths_and_shapes(cfg: BertConfig):
    flat = flat_params(abstract(cfg))
    assert set(flat) == expected_names(cfg)
    d = cfg.hidden_size
    assert flat["embeddings/word_embeddings/embedding"].shape == (VOCAB, d)
    assert flat["embeddings/position_embeddings/embedding"].shape == (12, d)
    assert flat["encoder/layers_1/mlp/wi/kernel"].shape == (d, 24)  # [in, out]
    assert flat["mlm_head/bias"].shape == (VOCAB,)
    if cfg.num_labels:
        assert flat["probe/kernel"].shape == ((LENGTH - 2) * d, 3)
        assert flat["classifier/kernel"].shape == (d, 3)


def test_initialisation_is_berts():
    """N(0, 0.02) kernels, zero biases, unit norms (on the MLM head: one cheap init)."""
    cfg = dataclasses.replace(TINY_PRE, hidden_size=64, num_heads=1, intermediate_size=256)
    flat = flat_params(MlmHead(cfg, rngs=nnx.Rngs(params=0)))
    kernel = np.asarray(flat["dense/kernel"])
    assert abs(kernel.std() - 0.02) < 0.002 and abs(kernel.mean()) < 0.002
    assert not np.any(flat["dense/bias"]) and not np.any(flat["bias"])
    assert np.all(flat["layer_norm/scale"] == 1) and not np.any(flat["layer_norm/bias"])


@pytest.mark.parametrize(
    "preset, millions",
    [("bert_2m", 2.1), ("bert_9m", 9.7), ("bert_67m_wide", 67.6)],
)
def test_paper_sizes_match_parameter_counts(preset: str, millions: float):
    """liu2023 §6.1 (vocab 30528, 512 positions; MLM head and pooler included)."""
    cfg = BERT_PRESETS[preset]
    assert cfg.num_heads * 64 == cfg.hidden_size and cfg.intermediate_size == 4 * cfg.hidden_size
    count = sum(int(np.prod(v.shape)) for v in flat_params(abstract(cfg)).values())
    assert abs(count / 1e6 - millions) < 0.05


def test_presets_and_validation():
    assert bert_config("bert_235m") == BERT_PRESETS["bert_235m"]
    assert (bert_config("bert_235m").hidden_size, bert_config("bert_235m").num_layers) == (1024, 16)
    laptop = bert_config("bert_laptop", vocab_size=padded_vocab_size(205))
    assert laptop.vocab_size == 208 and laptop.pre_ln and laptop.num_layers == 2
    assert bert_config_from_dict({"preset": "bert_9m", "num_labels": 4}).num_labels == 4
    assert padded_vocab_size(30522) == 30528
    with pytest.raises(ValueError, match=r"model\.vocab_size"):
        bert_config("bert_laptop")
    with pytest.raises(ValueError, match=r"model\.num_heads: 3 does not divide model\.hidden_size"):
        bert_config("bert_2m", num_heads=3)
    with pytest.raises(ValueError, match=r"model\.preset"):
        bert_config("bert_3m")
    with pytest.raises(ValueError, match=r"model\.heads: unknown key"):
        bert_config("bert_2m", heads=2)
    with pytest.raises(ValueError, match=r"model\.probe_length"):
        bert_config("bert_2m", probe_length=600)
    with pytest.raises(ValueError, match=r"model\.hidden_dropout_rate"):
        bert_config("bert_2m", hidden_dropout_rate=1.0)
    with pytest.raises(ValueError, match=r"model\.hidden_act"):
        bert_config("bert_2m", hidden_act="swish")
    with pytest.raises(ValueError, match=r"model\.type_vocab_size"):
        bert_config("bert_2m", type_vocab_size=-1)
    with pytest.raises(ValueError, match=r"model\.pre_ln"):
        validate_bert_config(dataclasses.replace(TINY, pre_ln="yes"))
    with pytest.raises(ValueError, match=r"model\.hidden_size"):
        validate_bert_config(dataclasses.replace(TINY, hidden_size=0))


def test_pre_and_post_ln_checkpoints_do_not_mix():
    with pytest.raises(ValueError, match="pre_attention_layer_norm"):
        load_flat_params(abstract(TINY_PRE), flat_params(random_model(TINY, 0)))


# --------------------------------------------------------------------------------------------
# Forward passes.
# --------------------------------------------------------------------------------------------


def post_to_pre(flat: dict) -> dict:
    """Post-LN weights in a pre-LN model: the same norms in the pre positions, identity final."""
    out = {}
    for key, value in flat.items():
        key = key.replace("attention_output_layer_norm", "pre_attention_layer_norm")
        out[key.replace("mlp_output_layer_norm", "pre_mlp_layer_norm")] = value
    d = TINY.hidden_size
    out["encoder/final_layer_norm/scale"] = np.ones(d)
    out["encoder/final_layer_norm/bias"] = np.zeros(d)
    return out


def test_pre_ln_forward_differs_from_post_ln_with_the_same_weights():
    post = random_model(TINY, 1)
    pre = abstract(TINY_PRE)
    load_flat_params(pre, post_to_pre(flat_params(post)))
    ids, mask, types = batch(1)
    out_post = np.asarray(mlm(*nnx.split(post), ids, mask, types))
    out_pre = np.asarray(mlm(*nnx.split(pre), ids, mask, types))
    assert out_pre.shape == out_post.shape == (2, LENGTH, VOCAB)
    assert np.all(np.isfinite(out_pre))
    assert np.abs(out_pre - out_post).max() > 1e-2


def test_zeroed_pre_ln_layer_is_the_identity():
    """What `enlarge` relies on (§4.3): extra pre-LN layers with zero weights change nothing."""
    small = random_model(TINY_PRE, 2)
    big = abstract(dataclasses.replace(TINY_PRE, num_layers=2))
    flat = dict(flat_params(small))
    for name, value in flat_params(big).items():
        if name.startswith("encoder/layers_1/"):
            flat[name] = np.zeros(value.shape) if "layer_norm" not in name else np.ones(value.shape)
    load_flat_params(big, flat)
    ids, mask, types = batch(2)
    np.testing.assert_allclose(
        mlm(*nnx.split(big), ids, mask, types), mlm(*nnx.split(small), ids, mask, types),
        atol=1e-5,
    )


def test_masked_positions_gather_before_the_head():
    graphdef, state = nnx.split(random_model(TINY, 3))
    ids, mask, types = batch(3)
    positions = np.array([[1, 4], [0, 5]])
    dense = np.asarray(mlm(graphdef, state, ids, mask, types))
    sparse = np.asarray(mlm(graphdef, state, ids, mask, types, masked_positions=positions))
    np.testing.assert_allclose(sparse, np.take_along_axis(dense, positions[..., None], 1), atol=1e-5)


def test_dropout_needs_a_key_and_is_off_in_eval():
    graphdef, state = nnx.split(random_model(TINY, 4))
    ids, mask, types = batch(4)
    key = jax.random.key(0)
    evaluated = mlm(graphdef, state, ids, mask, types)
    train = lambda k: mlm(graphdef, state, ids, mask, types, dropout_rng=k, deterministic=False)
    np.testing.assert_array_equal(train(key), train(key))  # a pure function of the key
    assert np.abs(np.asarray(train(key)) - np.asarray(evaluated)).max() > 1e-3
    assert np.abs(np.asarray(train(key)) - np.asarray(train(jax.random.key(1)))).max() > 1e-3
    with pytest.raises(ValueError, match="dropout_rng"):
        bert_mlm_logits(graphdef, state, ids, mask, types, deterministic=False)


# The dropout of layers.py (BERT's and T5's): 16-bit draws compared with a threshold.


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.3333, 1e-6, 0.999999])
def test_quantized_keep_probability_is_within_2e_5(rate: float):
    keep = quantized_keep_prob(1.0 - rate)
    assert abs(keep - (1.0 - rate)) < 2e-5
    assert 0.0 < keep < 1.0  # a rate in (0, 1) never becomes "keep all" or "drop all"
    assert (keep * 2**16).is_integer()


def test_dropout_mask_statistics():
    n = 1_000_000
    mask = np.asarray(dropout_keep_mask(jax.random.key(3), 0.9, (1000, 1000)))
    sigma = np.sqrt(0.9 * 0.1 / n)
    assert abs(mask.mean() - quantized_keep_prob(0.9)) < 5 * sigma
    # Neighbours (the two halves of one 32-bit word, and of one 64-bit hash) are independent:
    # P(both kept) = keep^2 for element pairs at distance 1, 2 and 3.
    flat = mask.reshape(-1)
    for lag in (1, 2, 3):
        both = np.mean(flat[:-lag] & flat[lag:])
        assert abs(both - 0.81) < 5 * np.sqrt(0.81 * 0.19 / n), lag
    # Odd sizes, and the same key gives the same mask whatever the key's form.
    odd = dropout_keep_mask(jax.random.key(5), 0.5, (3, 7, 5))
    assert odd.shape == (3, 7, 5) and odd.dtype == jnp.bool_
    np.testing.assert_array_equal(odd, dropout_keep_mask(jax.random.PRNGKey(5), 0.5, (3, 7, 5)))
    assert not np.array_equal(odd, dropout_keep_mask(jax.random.key(6), 0.5, (3, 7, 5)))
    other_impl = dropout_keep_mask(jax.random.key(5, impl="rbg"), 0.9, (1000, 1000))
    assert abs(float(np.asarray(other_impl).mean()) - 0.9) < 5 * sigma


def test_dropout_is_inverted_and_shares_masks_along_broadcast_dims():
    x = jnp.asarray(np.random.default_rng(2).uniform(1, 2, (4, 64, 32)), jnp.float32)
    key = jax.random.key(7)
    y = np.asarray(dropout(x, 0.25, key, broadcast_dims=(-2,)))
    kept = y != 0
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / quantized_keep_prob(0.75),
                               rtol=1e-6)
    assert np.all(kept == kept[:, :1, :])  # one mask for every position
    assert 0.6 < kept.mean() < 0.9
    np.testing.assert_array_equal(y, dropout(x, 0.25, key, broadcast_dims=(-2,)))
    np.testing.assert_array_equal(jax.jit(lambda k: dropout(x, 0.25, k, (-2,)))(key), y)
    assert dropout(x, 0.25, None) is x and dropout(x, 0.0, key) is x


def test_classifier_and_probe_heads():
    model = random_model(TINY_HEADS, 5)
    graphdef, state = nnx.split(model)
    ids, mask, types = batch(5)

    @jax.jit
    def heads(state):  # one compile for all heads
        args = (graphdef, state, ids, mask, types)
        features = bert_features(*args)
        return (bert_encode(*args), bert_classify(*args), features, bert_probe_logits(*args),
                bert_probe_head(graphdef, state, features))

    hidden, classified, features, probed, from_features = heads(state)
    assert hidden.shape == (2, LENGTH, 16)
    assert classified.shape == probed.shape == (2, 3)
    assert features.shape == (2, (LENGTH - 2) * 16)
    # Exactly the final hidden states at positions 1..L-2, flattened position-major.
    np.testing.assert_allclose(features[:, :16], hidden[:, 1])
    np.testing.assert_allclose(features[:, -16:], hidden[:, LENGTH - 2])
    np.testing.assert_allclose(probed, from_features, atol=1e-5)
    with pytest.raises(ValueError, match="probe_length"):
        bert_features(graphdef, state, ids[:, :-1], mask[:, :-1])
    with pytest.raises(ValueError, match="num_labels"):
        random_model(TINY, 0).classify(ids, mask)


def test_probe_gradients_do_not_reach_the_encoder():
    """Frozen features: the probe loss has no gradient outside probe/*."""
    model = random_model(TINY_HEADS, 6)
    graphdef, state = nnx.split(model)
    ids, mask, types = batch(6)
    labels = jnp.array([0, 2])

    def loss(state, head):
        logits = head(graphdef, state, ids, mask, types)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    probe_grads = flat_params(jax.jit(jax.grad(loss), static_argnums=1)(state, bert_probe_logits))
    for name, g in probe_grads.items():
        if name.startswith("probe/"):
            assert np.abs(g).max() > 0, name
        else:  # embeddings and encoder feed the features: only stop_gradient zeroes theirs
            assert not np.any(g), name
    # What a probe step optimises: probe/* only; the rest is passed through frozen.
    probe_graphdef, probe_params, frozen = split_probe(model)
    assert set(flat_params(probe_params)) == {"probe/kernel", "probe/bias"}
    merged = nnx.merge(probe_graphdef, probe_params, frozen)
    assert set(flat_params(merged)) == set(probe_grads)


def test_load_pretrained_encoder_keeps_fresh_heads():
    pre = random_model(TINY_PRE, 7)
    task = random_model(TINY_HEADS, 8)
    pooler_before = np.asarray(flat_params(task)["pooler/dense/kernel"])
    names = load_pretrained_encoder(task, flat_params(pre))
    after, source = flat_params(task), flat_params(pre)
    assert names and all(n.startswith(("embeddings/", "encoder/")) for n in names)
    np.testing.assert_array_equal(after["encoder/layers_0/mlp/wo/kernel"],
                                  source["encoder/layers_0/mlp/wo/kernel"])
    np.testing.assert_array_equal(after["pooler/dense/kernel"], pooler_before)


# --------------------------------------------------------------------------------------------
# Hugging Face BertForMaskedLM (post-LN).
# --------------------------------------------------------------------------------------------


def hf_model(seed: int):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=24, max_position_embeddings=12, type_vocab_size=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    model = transformers.BertForMaskedLM(config)
    with torch.no_grad():  # make every weight (norms and biases too) matter
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    return model.eval()


def hf_logits(model, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    token_type_ids=torch.tensor(types))
    return out.logits.numpy()


def test_hf_import_and_export_match_logits():
    pytest.importorskip("safetensors")
    hf = hf_model(0)
    ids, mask, types = batch(10)
    reference = hf_logits(hf, ids, mask, types)

    model = interop.from_hf_state_dict(hf.config.to_dict(), hf.state_dict())
    assert model.config.pre_ln is False and model.config.type_vocab_size == 2
    ours = np.asarray(mlm(*nnx.split(model), ids, mask, types))
    np.testing.assert_allclose(ours, reference, atol=1e-4)  # padded positions included

    exported = interop.to_hf_state_dict(model)
    hf_state = {k: v.numpy() for k, v in hf.state_dict().items()}
    for name, value in exported.items():
        if name in hf_state:
            np.testing.assert_array_equal(value, hf_state[name])
    back = interop.to_transformers(model)
    np.testing.assert_allclose(hf_logits(back, ids, mask, types), reference, atol=1e-5)


def test_hf_export_refuses_what_hf_cannot_hold():
    with pytest.raises(ValueError, match="post-LN"):
        interop.to_hf_state_dict(random_model(TINY_PRE, 0))
    with pytest.raises(ValueError, match="num_labels"):
        interop.to_hf_state_dict(random_model(dataclasses.replace(TINY, num_labels=2), 0))
