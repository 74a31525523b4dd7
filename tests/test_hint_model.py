"""HINT model (pipeline_lib.models.hint, train.hint_optim): identity with the base T5, prefixes,
FiD, the shared hyperencoder, generated shapes, the per-task cache, optimiser, restore, errors."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from pipeline_lib.errors import ConfigError
from pipeline_lib.models import T5, flat_params, load_flat_params, split_model, t5_forward
from pipeline_lib.models.configs import T5Config
from pipeline_lib.models.hint import (
    GeneratedModules,
    HyperT5,
    check_hyper_inputs,
    generated_shapes,
    hint_batch_forward,
    hint_cached_encode,
    hint_cached_logits,
    hint_config,
    hint_decode_logits,
    hint_encode,
    hint_forward,
    hint_generate,
    hint_rank_fns,
    hint_step_logits,
    hint_task_cache,
    require_no_packing,
    restore_t5_params,
    split_hint,
)
from pipeline_lib.models.layers import (
    Attention,
    KVCache,
    dot_product_attention,
    prepend_prefix,
)
from pipeline_lib.train.hint_optim import (
    HYPER_REGEX,
    T5_INVERSE_REGEX,
    hint_loss_fn,
    hint_optimizer,
    hint_param_labels,
)

VOCAB = 61
CFG = hint_config("hyper_tiny", vocab_size=VOCAB)  # d 8, 4 x 3 heads, 2/2 layers, a 8, P 2
H_SHAPE, X_SHAPE, Y_SHAPE = (2, 7), (2, 5), (2, 4)

forward = jax.jit(hint_forward, static_argnums=0)


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def tokens(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, VOCAB, shape, dtype=np.int32)


def random_model(cfg, seed: int = 0, *, zero_adapters: bool = False) -> HyperT5:
    """Abstract init + numpy values (no per-op compiles). ``zero_adapters``: the adapter
    generators' output kernels are 0, so every generated adapter is exactly 0."""
    model = nnx.eval_shape(lambda: HyperT5(cfg, rngs=nnx.Rngs(params=0)))
    rng = np.random.default_rng(seed)
    flat = {k: rng.normal(0, 0.3, v.shape) for k, v in flat_params(model).items()}
    if zero_adapters:
        for name in ("adapter_down", "adapter_up", "adapter_bias_down", "adapter_bias_up"):
            flat[f"hyper/{name}/wo/kernel"] = np.zeros_like(flat[f"hyper/{name}/wo/kernel"])
    load_flat_params(model, flat)
    return model


def base_t5(model: HyperT5) -> tuple:
    """The underlying T5 with the HINT model's T5 weights."""
    cfg = T5Config(**{f.name: getattr(model.config, f.name) for f in dataclasses.fields(T5Config)})
    t5 = nnx.eval_shape(lambda: T5(cfg, rngs=nnx.Rngs(params=0)))
    flat = {k: v for k, v in flat_params(model).items() if not k.startswith("hyper/")}
    load_flat_params(t5, flat)
    return split_model(t5)


def sequence_scores(logits, targets):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    picked = jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
    return jnp.sum(picked * (targets > 0), -1)


@pytest.fixture(scope="module")
def tiny():
    return split_hint(random_model(CFG, 0))


# --------------------------------------------------------------------------------------------
# Identity and prefixes.
# --------------------------------------------------------------------------------------------


def test_zero_modules_are_bit_identical_to_the_base_t5():
    cfg = dataclasses.replace(CFG, use_prefix=False, use_fusion_in_decoder=False)
    model = random_model(cfg, 1, zero_adapters=True)
    graphdef, params = split_hint(model)
    h, x, y = tokens(1, H_SHAPE), tokens(2, X_SHAPE), tokens(3, Y_SHAPE)
    x[1, 3:] = 0
    modules = jax.jit(hint_generate, static_argnums=0)(graphdef, params, h)
    assert modules.prefix_key is None
    for name in ("adapter_wd", "adapter_wu", "adapter_bd", "adapter_bu"):
        assert not np.any(np.asarray(getattr(modules, name)))
    hint = forward(graphdef, params, h, x, y, y)
    t5 = jax.jit(t5_forward, static_argnums=0)(*base_t5(model), x, y, y)
    np.testing.assert_array_equal(np.asarray(hint), np.asarray(t5))


def _attention_case(seed: int = 0):
    att = nnx.eval_shape(lambda: Attention(8, 2, 4, rngs=nnx.Rngs(params=0)))
    rng = np.random.default_rng(seed)
    load_flat_params(att, {k: rng.normal(0, 0.5, v.shape) for k, v in flat_params(att).items()})
    xq, xk = rng.normal(size=(2, 3, 8)), rng.normal(size=(2, 5, 8))
    mask = rng.random((2, 1, 3, 5)) > 0.3
    bias = rng.normal(size=(1, 2, 3, 5))
    prefix = KVCache(rng.normal(size=(2, 2, 2, 4)), rng.normal(size=(2, 2, 2, 4)))
    return att, jnp.asarray(xq, jnp.float32), jnp.asarray(xk, jnp.float32), mask, bias, prefix


def test_prefix_equals_numpy_softmax_with_bias_zero_on_the_prefix_columns():
    att, xq, xk, mask, bias, prefix = _attention_case()
    out = att(xq, xk, jnp.asarray(mask), jnp.asarray(bias), prefix_kv=prefix)
    w = {k: np.asarray(v, np.float64) for k, v in flat_params(att).items()}
    q = (np.asarray(xq) @ w["query/kernel"]).reshape(2, 3, 2, 4)
    k = (np.asarray(xk) @ w["key/kernel"]).reshape(2, 5, 2, 4)
    v = (np.asarray(xk) @ w["value/kernel"]).reshape(2, 5, 2, 4)
    keys = np.concatenate([prefix.key, k], 1)
    values = np.concatenate([prefix.value, v], 1)
    logits = np.einsum("bqhd,bkhd->bhqk", q, keys)
    full_bias = np.concatenate([np.zeros((1, 2, 3, 2)), bias], -1)
    full_mask = np.concatenate([np.ones((2, 1, 3, 2), bool), mask], -1)
    logits = logits + full_bias + np.where(full_mask, 0.0, -1e10)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    expected = np.einsum("bhqk,bkhd->bqhd", weights, values).reshape(2, 3, 8) @ w["out/kernel"]
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


def test_prefix_of_real_token_projections_equals_attention_over_those_tokens():
    att, xq, xk, _, _, _ = _attention_case(1)
    z = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4, 8)), jnp.float32)
    joined = att(xq, jnp.concatenate([z, xk], 1))  # no mask, relative bias zeroed (None)
    with_prefix = att(xq, xk, prefix_kv=att.key_value(z))
    np.testing.assert_allclose(np.asarray(with_prefix), np.asarray(joined), rtol=1e-6, atol=1e-6)


def test_fully_masked_prefix_equals_no_prefix():
    att, xq, xk, mask, bias, prefix = _attention_case(3)
    q = att._heads(att.query(xq))
    kv = att.key_value(xk)
    kv2, mask2, bias2 = prepend_prefix(kv, prefix, jnp.asarray(mask), jnp.asarray(bias))
    assert not np.any(np.asarray(bias2)[..., :2]) and np.all(np.asarray(mask2)[..., :2])
    mask2 = mask2.at[..., :2].set(False)
    masked = dot_product_attention(q, kv2.key, kv2.value, mask2, bias2)
    plain = dot_product_attention(q, kv.key, kv.value, jnp.asarray(mask), jnp.asarray(bias))
    np.testing.assert_allclose(np.asarray(masked), np.asarray(plain), rtol=1e-6, atol=1e-6)


def test_layer_slots_follow_upstream():
    model = random_model(CFG)
    b, n = 1, CFG.num_slots
    slot = lambda shape: jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32).reshape(
        1, n, *([1] * (len(shape) - 2))), shape)
    mods = GeneratedModules(**{k: slot(s) for k, s in generated_shapes(CFG, b).items()})
    enc, dec = model.layer_modules(mods)
    assert [float(m.adapter.down.max()) for m in enc] == [0, 1]
    assert [float(m.self_prefix.key.max()) for m in enc] == [0, 1]
    assert [float(m.adapter.up.max()) for m in dec] == [2, 4]
    assert [float(m.self_prefix.value.max()) for m in dec] == [2, 4]
    assert [float(m.cross_prefix.key.max()) for m in dec] == [3, 5]


# --------------------------------------------------------------------------------------------
# Fusion in decoder.
# --------------------------------------------------------------------------------------------


def test_fid_with_an_all_padding_instruction_equals_the_base_cross_attention():
    cfg = dataclasses.replace(CFG, use_prefix=False)
    model = random_model(cfg, 4, zero_adapters=True)
    graphdef, params = split_hint(model)
    x, y = tokens(5, X_SHAPE), tokens(6, Y_SHAPE)
    hint = forward(graphdef, params, np.zeros(H_SHAPE, np.int32), x, y)
    t5 = jax.jit(t5_forward, static_argnums=0)(*base_t5(model), x, y)
    np.testing.assert_allclose(np.asarray(hint), np.asarray(t5), rtol=1e-6, atol=1e-6)


def test_fid_equals_a_manual_concatenation():
    cfg = dataclasses.replace(CFG, use_prefix=False)
    model = random_model(cfg, 5, zero_adapters=True)
    graphdef, params = split_hint(model)
    h, x, y = tokens(7, H_SHAPE), tokens(8, X_SHAPE), tokens(9, Y_SHAPE)
    h[0, 4:] = 0
    hint = forward(graphdef, params, h, x, y)
    t5_def, t5_params, rest = base_t5(model)
    t5 = nnx.merge(t5_def, t5_params, rest)
    instr = t5.encode(jnp.asarray(h)) * (h > 0)[..., None]
    encoded = jnp.concatenate([instr, t5.encode(jnp.asarray(x))], 1)
    manual = t5.decode(encoded, jnp.concatenate([h, x], 1), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(hint), np.asarray(manual), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Hyperencoder.
# --------------------------------------------------------------------------------------------


def test_shared_encoder_gets_gradient_from_both_uses(tiny):
    graphdef, params = tiny
    h, x, y = tokens(10, H_SHAPE), tokens(11, X_SHAPE), tokens(12, Y_SHAPE)

    def loss(p_hyperenc, p_rest):
        hyperenc, rest = nnx.merge(graphdef, p_hyperenc), nnx.merge(graphdef, p_rest)
        instr, valid = hyperenc.hyperencode(jnp.asarray(h))
        modules = rest.hyper(instr, valid)
        encoded, mask = rest.encode_instances(jnp.asarray(x), instr, valid, modules)
        return jnp.sum(rest.decode_with(encoded, mask, modules, jnp.asarray(y)) ** 2)

    g_hyper, g_inst = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, params)
    g_both = jax.jit(jax.grad(lambda p: loss(p, p)))(params)
    name = "encoder/layers_0/mlp/wi_0/kernel"
    fh, fi, fb = (flat_params(g)[name] for g in (g_hyper, g_inst, g_both))
    assert np.abs(fh).sum() > 0 and np.abs(fi).sum() > 0
    np.testing.assert_allclose(np.asarray(fb), np.asarray(fh + fi), rtol=1e-4, atol=1e-5)


def test_padding_in_hyper_inputs_changes_nothing(tiny):
    graphdef, params = tiny
    h, x, y = tokens(13, H_SHAPE), tokens(14, X_SHAPE), tokens(15, Y_SHAPE)
    padded = np.pad(h, ((0, 0), (0, 3)))
    short = forward(graphdef, params, h, x, y)
    long = forward(graphdef, params, padded, x, y)
    np.testing.assert_allclose(np.asarray(long), np.asarray(short), rtol=1e-5, atol=1e-5)


def test_upstream_unmasked_hyperencoder_does_see_padding():
    """Documents the deviation: upstream's hyperencoder has no self-attention mask."""
    graphdef, params = split_hint(random_model(
        dataclasses.replace(CFG, hyperencoder_self_mask=False), 0))
    h, x, y = tokens(13, H_SHAPE), tokens(14, X_SHAPE), tokens(15, Y_SHAPE)
    short = forward(graphdef, params, h, x, y)
    long = forward(graphdef, params, np.pad(h, ((0, 0), (0, 3))), x, y)
    assert float(jnp.abs(long - short).max()) > 1e-4


def test_row_i_depends_only_on_instruction_i(tiny):
    graphdef, params = tiny
    h, x, y = tokens(16, H_SHAPE), tokens(17, X_SHAPE), tokens(18, Y_SHAPE)
    other = h.copy()
    other[1] = tokens(19, (H_SHAPE[1],))
    a, b = forward(graphdef, params, h, x, y), forward(graphdef, params, other, x, y)
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert float(jnp.abs(a[1] - b[1]).max()) > 1e-4


# --------------------------------------------------------------------------------------------
# Shapes.
# --------------------------------------------------------------------------------------------


def _abstract_generate(cfg, batch: int, length: int = 16):
    model = nnx.eval_shape(lambda: HyperT5(cfg, rngs=nnx.Rngs(params=0)))
    graphdef, params = split_hint(model)
    hyper = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    out = jax.eval_shape(lambda p, h: hint_generate(graphdef, p, h), params, hyper)
    return flat_params(model), out


@pytest.mark.parametrize("preset,expected", [
    ("hyper_tiny", {"adapter_wd": (3, 6, 8, 8), "adapter_wu": (3, 6, 8, 8), "adapter_bd": (3, 6, 8),
                    "adapter_bu": (3, 6, 8), "prefix_key": (3, 6, 2, 4, 3)}),
    ("hyper_laptop", {"adapter_wd": (3, 6, 128, 8), "adapter_wu": (3, 6, 8, 128),
                      "adapter_bd": (3, 6, 8), "adapter_bu": (3, 6, 128),
                      "prefix_key": (3, 6, 4, 4, 32)}),
])
def test_generated_shapes(preset, expected):
    cfg = hint_config(preset, vocab_size=VOCAB)
    params, out = _abstract_generate(cfg, 3)
    comps = {"hyper_tiny": 22, "hyper_laptop": 26}[preset]
    assert cfg.num_slots == 6 and cfg.num_components == comps
    assert params["hyper/component_embedding"].shape == (6 * comps, cfg.d_model)
    expected["prefix_value"] = expected["prefix_key"]
    assert {k: getattr(out, k).shape for k in expected} == expected


def test_xl_shapes_through_eval_shape_allocate_nothing():
    cfg = hint_config("hyper_xl")
    params, out = _abstract_generate(cfg, 2, length=8)
    assert all(isinstance(v, jax.ShapeDtypeStruct) for v in params.values())
    assert all(isinstance(v, jax.ShapeDtypeStruct) for v in out if v is not None)
    assert (cfg.num_slots, cfg.num_components) == (72, 1086)
    assert params["hyper/component_embedding"].shape == (78_192, 2048)
    assert out.adapter_wd.shape == (2, 72, 2048, 512) and out.adapter_wd.dtype == jnp.bfloat16
    assert out.prefix_value.shape == (2, 72, 30, 32, 64)
    size = lambda name: int(np.prod(getattr(out, name).shape[1:]))
    adapters = sum(size(n) for n in ("adapter_wd", "adapter_wu", "adapter_bd", "adapter_bu"))
    assert adapters == 72 * (2 * 2048 * 512 + 512 + 2048)  # the issue's ~151M per example
    assert size("prefix_key") + size("prefix_value") == 72 * 2 * 30 * 2048  # + 8.8M prefixes


# --------------------------------------------------------------------------------------------
# Per-task cache and decoding.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fid", [True, False])
def test_per_task_cache_and_no_cache_give_the_same_scores(fid):
    cfg = dataclasses.replace(CFG, use_fusion_in_decoder=fid)
    graphdef, params = split_hint(random_model(cfg, 6))
    tasks = tokens(20, (2, 6))
    tasks[1, 4:] = 0
    task_ids = np.array([0, 1, 1, 0], np.int32)
    x, y = tokens(21, (4, 5)), tokens(22, (4, 3))
    x[2, 3:] = 0
    encode, decode = hint_rank_fns(graphdef)
    uncached = jax.jit(decode)(params, *jax.jit(encode)(params, tasks[task_ids], x), y, y)
    cache = jax.jit(hint_task_cache, static_argnums=0)(graphdef, params, tasks)
    cached = jax.jit(hint_cached_logits, static_argnums=0)(graphdef, params, cache, x, y, y,
                                                          task_ids)
    np.testing.assert_allclose(np.asarray(sequence_scores(cached, y)),
                               np.asarray(sequence_scores(uncached, y)), rtol=1e-6, atol=1e-6)
    # one task shared by the whole batch: a one-row cache broadcasts
    one = jax.jit(hint_task_cache, static_argnums=0)(graphdef, params, tasks[:1])
    enc, mask, mods = jax.jit(hint_cached_encode, static_argnums=0)(graphdef, params, one, x)
    shared = jax.jit(hint_decode_logits, static_argnums=0)(graphdef, params, enc, mask, mods, y, y)
    ref = forward(graphdef, params, np.repeat(tasks[:1], 4, 0), x, y, y)
    np.testing.assert_allclose(np.asarray(sequence_scores(shared, y)),
                               np.asarray(sequence_scores(ref, y)), rtol=1e-6, atol=1e-6)


def test_step_decoding_with_prefixes_matches_teacher_forcing(tiny):
    graphdef, params = tiny
    h, x, y = tokens(23, H_SHAPE), tokens(24, X_SHAPE), tokens(25, Y_SHAPE)
    full = forward(graphdef, params, h, x, y)
    steps = jax.jit(hint_step_logits, static_argnums=0)(graphdef, params, h, x, y)
    assert float(jnp.abs(steps - full).max()) < 1e-5


# --------------------------------------------------------------------------------------------
# Loss, optimiser and restore.
# --------------------------------------------------------------------------------------------


def test_loss_has_the_z_loss_and_refuses_packed_batches(tiny):
    graphdef, params = tiny
    y = tokens(27, Y_SHAPE)
    batch = {"hyper_encoder_input_tokens": tokens(26, H_SHAPE),
             "encoder_input_tokens": tokens(28, X_SHAPE), "decoder_input_tokens": y,
             "decoder_target_tokens": y, "decoder_loss_weights": np.ones(Y_SHAPE, np.float32)}
    loss_fn = jax.jit(hint_loss_fn(graphdef), static_argnums=2)
    loss, aux = loss_fn(params, batch, None)
    assert float(aux["z_loss_sum"]) > 0
    np.testing.assert_allclose(float(loss), float(aux["nll_sum"] + aux["z_loss_sum"]), rtol=1e-6)
    logits = jax.jit(hint_batch_forward(graphdef), static_argnums=2)(params, batch, None)
    log_z = jax.nn.logsumexp(logits, -1)
    np.testing.assert_allclose(float(aux["z_loss_sum"]), float(1e-4 * jnp.sum(log_z ** 2)),
                               rtol=1e-5)
    with pytest.raises(ConfigError, match="packing"):
        loss_fn(params, {**batch, "encoder_segment_ids": y}, None)


def test_every_parameter_is_in_exactly_one_group(tiny):
    _, params = tiny
    names = list(flat_params(params))
    labels = flat_params(jax.tree.map(lambda x: x, hint_param_labels(params)))
    assert set(labels.values()) == {"hyper", "t5"}
    for name in names:
        in_hyper = bool(HYPER_REGEX.fullmatch("/" + name))
        in_t5 = not T5_INVERSE_REGEX.fullmatch("/" + name)
        assert in_hyper != in_t5, name  # upstream's two filters never overlap, never miss
        assert labels[name] == ("hyper" if name.startswith("hyper/") else "t5")
    assert sum(v == "hyper" for v in labels.values()) == 17


def test_one_optimiser_step_by_hand():
    params = {"hyper": {"w": jnp.array([[0.5, -2.0], [1.0, 3.0]])},
              "encoder": {"k": jnp.array([0.1, -0.2, 0.3])}}
    grads = {"hyper": {"w": jnp.array([[1.0, -2.0], [0.5, 4.0]])},
             "encoder": {"k": jnp.array([-3.0, 1.0, 2.0])}}
    tx = hint_optimizer(1e-3, hyper_multiply_by_parameter_scale=False)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    # Adafactor's first step: v = g^2 (+1e-30), update = g / sqrt(v) = sign(g), RMS 1 (no
    # clipping), times -lr, and in the t5 group times max(RMS(param), 1e-3).
    rms = float(np.sqrt(np.mean(np.square([0.1, -0.2, 0.3]))))
    np.testing.assert_allclose(updates["hyper"]["w"], -1e-3 * np.sign(grads["hyper"]["w"]),
                               rtol=1e-6)
    np.testing.assert_allclose(updates["encoder"]["k"],
                               -1e-3 * rms * np.sign(grads["encoder"]["k"]), rtol=1e-6)
    for label in ("hyper", "t5"):  # one count per group
        counts = optax.tree_utils.tree_get_all_with_path(state.inner_states[label], "count")
        assert counts and all(int(c) == 1 for _, c in counts)
    new = optax.apply_updates(params, updates)
    assert float(new["encoder"]["k"][0]) == pytest.approx(0.1 + 1e-3 * rms)


def test_restore_keeps_t5_weights_and_leaves_the_hypernetwork_fresh(tmp_path):
    model = random_model(CFG, 7)
    t5_def, t5_params, _ = base_t5(random_model(CFG, 8))
    t5_flat = flat_params(t5_params)
    fresh = flat_params(model)
    for source in (t5_flat, tmp_path / "t5.npz"):
        np.savez(tmp_path / "t5.npz", **{k: np.asarray(v) for k, v in t5_flat.items()})
        restored = flat_params(restore_t5_params(split_hint(model)[1], source))
        for name, value in restored.items():
            want = fresh[name] if name.startswith("hyper/") else t5_flat[name]
            np.testing.assert_array_equal(np.asarray(value), np.asarray(want))
    # a checkpoint that has hyper weights: they are skipped (^.*hyper.*$), not restored
    with_hyper = {**t5_flat, "hyper/component_embedding": np.zeros((1, 1))}
    restored = flat_params(restore_t5_params(split_hint(model)[1], with_hyper))
    np.testing.assert_array_equal(restored["hyper/component_embedding"],
                                  fresh["hyper/component_embedding"])
    broken = {k: v for k, v in t5_flat.items() if k != "decoder/logits_dense/kernel"}
    with pytest.raises(ConfigError, match="missing: decoder/logits_dense/kernel"):
        restore_t5_params(split_hint(model)[1], broken)


# --------------------------------------------------------------------------------------------
# Bad inputs.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,message", [
    ({"adapter_size": 0}, "model.adapter_size: 0 must be a positive integer"),
    ({"adapter_size": -3}, "model.adapter_size"),
    ({"num_prefix_tokens": -1}, "model.num_prefix_tokens: -1 must be a non-negative"),
    ({"hyperencoder_d_model": 16}, "model.use_fusion_in_decoder: FiD concatenates"),
    ({"hyperencoder_d_model": 16, "use_fusion_in_decoder": False}, "model.hyperencoder_d_model"),
    ({"share_hnet_encoder": False}, "model.share_hnet_encoder"),
    ({"layer_embedding_method": "concat"}, "model.layer_embedding_method"),
    ({"use_adapter": False, "use_prefix": False}, "nothing to generate"),
    ({"bogus": 1}, "model.bogus: unknown key"),
])
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        hint_config("hyper_tiny", **overrides)


def test_empty_hyper_inputs_and_packing_are_refused(tiny):
    with pytest.raises(ConfigError, match="hyper_inputs: empty"):
        check_hyper_inputs(np.zeros((2, 0), np.int32))
    with pytest.raises(ConfigError, match="1 all-padding instruction.*rows 1"):
        check_hyper_inputs(np.array([[3, 0], [0, 0]]))
    check_hyper_inputs(np.array([[3, 0], [0, 4]]))
    graphdef, params = tiny
    with pytest.raises(ConfigError, match="hyper_inputs: empty"):
        hint_encode(graphdef, params, jnp.zeros((2, 0), jnp.int32), jnp.ones(X_SHAPE, jnp.int32))
    with pytest.raises(ConfigError, match="hint.pack: packing is not supported"):
        require_no_packing(True)
    require_no_packing(False)


def test_component_embedding_rows_must_be_l_times_c():
    model = random_model(CFG)
    model.hyper.component_embedding = nnx.Param(jnp.zeros((CFG.num_slots * CFG.num_components - 1,
                                                           CFG.d_model)))
    graphdef, params = split_hint(model)
    with pytest.raises(ConfigError, match=r"component_embedding: 131 rows, expected L\*C = 6\*22"):
        hint_generate(graphdef, params, jnp.ones(H_SHAPE, jnp.int32))
