"""Hugging Face <-> project T5 weights (pipeline_lib.models.interop), on small random models.

The transformers tests need torch, transformers and safetensors (not project dependencies); they
are skipped without them. Nothing is downloaded: every Hugging Face model is built here.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pipeline_lib.models import (
    T5,
    T5Config,
    flat_params,
    interop,
    load_flat_params,
    split_model,
    t5_forward,
)

VOCAB = 53
forward = jax.jit(t5_forward)


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def hf_model(feed_forward_proj: str, tied: bool, seed: int, untie: bool = True):
    """A random transformers T5 (eval mode); v1.1-style heads get their own lm_head."""
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=16, d_kv=6, d_ff=24, num_layers=1, num_decoder_layers=2,
        num_heads=3, feed_forward_proj=feed_forward_proj, tie_word_embeddings=tied,
        dropout_rate=0.0,
    )
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(config)
    with torch.no_grad():  # HF's init is tiny for some weights: make every weight matter
        for param in model.parameters():
            param.normal_(0.0, 0.5)
        if not tied and untie:  # transformers 5 ties lm_head on fresh models: untie it
            model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 16))
    return model.eval()


def hf_logits(model, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0),
            decoder_input_ids=torch.tensor(dec),
        )
    return out.logits.numpy()


def batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    enc = rng.integers(1, VOCAB, (2, 9))
    enc[1, 6:] = 0  # padding, masked through attention_mask on the HF side
    dec = rng.integers(1, VOCAB, (2, 7))
    dec[:, 0] = 0  # decoder start = pad id
    return enc, dec


@pytest.mark.parametrize(
    ("proj", "tied", "mlp"),
    [("relu", True, "relu"), ("gated-gelu", False, "gated-gelu")],
    ids=["v1.0", "v1.1"],
)
def test_import_matches_transformers_and_export_round_trips(tmp_path, proj, tied, mlp):
    hf = hf_model(proj, tied, seed=0)
    hf.save_pretrained(tmp_path / "hf")
    enc, dec = batch(1)
    reference = hf_logits(hf, enc, dec)

    model = interop.load_hf_checkpoint(tmp_path / "hf")
    cfg = model.config
    assert (cfg.mlp, cfg.tie_embeddings, cfg.num_encoder_layers, cfg.num_decoder_layers) == (
        mlp, tied, 1, 2)
    assert (cfg.head_dim, cfg.num_heads, cfg.vocab_size) == (6, 3, VOCAB)
    ours = np.asarray(forward(*split_model(model), jnp.asarray(enc), jnp.asarray(dec)))
    np.testing.assert_allclose(ours, reference, atol=1e-4)

    # Export: transformers loads it to the same function, and import gives the same weights.
    interop.save_hf_checkpoint(model, tmp_path / "ours")
    written = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert written["tie_word_embeddings"] is tied and written["feed_forward_proj"] == proj
    exported = interop.to_transformers(model)  # save_hf_checkpoint + from_pretrained
    assert (exported.lm_head.weight is exported.shared.weight) == tied
    np.testing.assert_allclose(hf_logits(exported, enc, dec), ours, atol=1e-4)
    before, after = flat_params(model), flat_params(interop.load_hf_checkpoint(tmp_path / "ours"))
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


def test_import_unscaled_head_saved_without_lm_head(tmp_path):
    """transformers 5 saves a fresh v1.1 model with lm_head tied to shared (so no lm_head in
    the file) but unscaled: imported as v1.1 with logits_dense = the embedding, transposed."""
    hf = hf_model("gated-gelu", tied=False, seed=1, untie=False)
    hf.save_pretrained(tmp_path)
    model = interop.load_hf_checkpoint(tmp_path)
    assert not model.config.tie_embeddings
    enc, dec = batch(2)
    ours = forward(*split_model(model), jnp.asarray(enc), jnp.asarray(dec))
    np.testing.assert_allclose(np.asarray(ours), hf_logits(hf, enc, dec), atol=1e-4)


def test_relative_position_buckets_match_transformers():
    pytest.importorskip("torch")
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    from pipeline_lib.models.layers import relative_position_bucket

    rel = np.arange(-1500, 1500)
    for bidirectional in (True, False):
        ours = relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=32,
                                        max_distance=128)
        theirs = T5Attention._relative_position_bucket(torch.tensor(rel), bidirectional)
        np.testing.assert_array_equal(ours, theirs.numpy())


# --------------------------------------------------------------------------------------------
# Without transformers: the name mapping, the files, the errors.
# --------------------------------------------------------------------------------------------

SMALL = T5Config(vocab_size=VOCAB, d_model=16, num_heads=2, head_dim=4, d_ff=24,
                 num_encoder_layers=2, num_decoder_layers=2, mlp="swiglu", tie_embeddings=False)


def test_hf_names_are_a_bijection_with_project_params():
    for cfg in (SMALL, dataclasses.replace(SMALL, mlp="relu", tie_embeddings=True)):
        model = nnx.eval_shape(lambda: T5(cfg, rngs=nnx.Rngs(params=0)))  # noqa: B023
        names = interop.t5_hf_names(cfg)
        assert {ours for ours, _, _ in names} == set(flat_params(model))
        assert len({hf for _, hf, _ in names}) == len(names)
    hf = {ours: hf for ours, hf, _ in interop.t5_hf_names(SMALL)}
    assert hf["decoder/layers_1/encoder_decoder_attention/out/kernel"] == (
        "decoder.block.1.layer.1.EncDecAttention.o.weight")
    assert hf["decoder/layers_0/mlp/wi_1/kernel"] == (
        "decoder.block.0.layer.2.DenseReluDense.wi_1.weight")
    assert hf["encoder/relpos_bias/rel_embedding"] == (
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")


def test_state_dict_layout_and_errors(tmp_path):
    model = nnx.eval_shape(lambda: T5(SMALL, rngs=nnx.Rngs(params=0)))
    rng = np.random.default_rng(0)
    load_flat_params(model, {k: rng.normal(size=v.shape) for k, v in flat_params(model).items()})
    state = interop.to_hf_state_dict(model)
    ours = flat_params(model)
    np.testing.assert_array_equal(
        state["encoder.block.1.layer.0.SelfAttention.q.weight"],
        np.asarray(ours["encoder/layers_1/attention/query/kernel"]).T,
    )
    assert state["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape == (
        32, 2)
    assert state["lm_head.weight"].shape == (VOCAB, 16)

    hf_config = interop.hf_config_dict(model)
    rebuilt = interop.from_hf_state_dict(hf_config, state)
    for name, value in flat_params(rebuilt).items():
        np.testing.assert_array_equal(value, ours[name])

    broken = {k: v for k, v in state.items() if k != "encoder.final_layer_norm.weight"}
    broken["encoder.block.0.layer.0.SelfAttention.bias"] = np.zeros(3)
    with pytest.raises(ValueError, match="missing encoder.final_layer_norm.weight; unexpected "
                                         "encoder.block.0.layer.0.SelfAttention.bias"):
        interop.from_hf_state_dict(hf_config, broken)
    with pytest.raises(ValueError, match="feed_forward_proj 'gated-relu' is not supported"):
        interop.from_hf_state_dict({**hf_config, "feed_forward_proj": "gated-relu"}, state)
    with pytest.raises(ValueError, match="model_type 'gpt2' has no mapping"):
        interop.from_hf_state_dict({**hf_config, "model_type": "gpt2"}, state)
    with pytest.raises(FileNotFoundError, match="config.json: not found"):
        interop.load_hf_checkpoint(tmp_path)


def test_import_hf_t5_cli_writes_params_that_load_into_the_model(tmp_path):
    """Table 1's off-the-shelf row: `python -m pipeline_lib import-hf-t5` -> params.npz."""
    from pipeline_lib.cli import main
    from pipeline_lib.train.checkpoint import load_params

    model = hf_model("relu", tied=True, seed=3)
    model.save_pretrained(tmp_path / "hf")
    out = tmp_path / "params.npz"
    assert main(["import-hf-t5", "--hf-dir", str(tmp_path / "hf"), "--out", str(out)]) == 0
    ours = interop.load_hf_checkpoint(tmp_path / "hf")
    graphdef, params, rest = split_model(ours)
    loaded = load_params(out, like=params)
    enc = np.array([[3, 4, 5, 1]], np.int32)
    dec = np.array([[0, 7, 8]], np.int32)
    np.testing.assert_allclose(
        np.asarray(forward(graphdef, loaded, rest, enc, dec)),
        hf_logits(model, enc, dec), atol=1e-4,
    )
