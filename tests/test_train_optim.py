"""Schedules, optimizers and the token loss against hand-computed numbers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pipeline_lib.train import optim

jax.config.update("jax_disable_most_optimizations", True)


def _values(schedule, steps):
    return [float(schedule(s)) for s in steps]


def test_rsqrt_schedule_is_t5x_rsqrt_decay():
    s = optim.rsqrt_schedule(1.0, 10_000)
    got = _values(s, [0, 1, 10_000, 40_000, 160_000])
    np.testing.assert_allclose(got, [0.01, 0.01, 0.01, 0.005, 0.0025], rtol=1e-6)
    assert float(optim.rsqrt_schedule(2.0, 100)(400)) == pytest.approx(0.1)
    assert math.isfinite(float(optim.rsqrt_schedule(1.0, 0)(0)))


def test_linear_warmup_then_linear_decay_to_zero():
    s = optim.linear_warmup_decay_schedule(1e-3, 100, 1000)
    got = _values(s, [0, 50, 100, 550, 1000, 2000])
    np.testing.assert_allclose(got, [0, 5e-4, 1e-3, 5e-4, 0, 0], atol=1e-9)


def test_constant_with_and_without_warmup():
    np.testing.assert_allclose(_values(optim.constant_schedule(1e-3), [0, 10**6]), [1e-3, 1e-3])
    s = optim.constant_schedule(1e-3, warmup_steps=10)
    np.testing.assert_allclose(_values(s, [0, 5, 10, 10**6]), [0, 5e-4, 1e-3, 1e-3], rtol=1e-6)


def test_polynomial():
    s = optim.polynomial_schedule(1.0, 0, 10, power=2.0, end_value=0.1)
    np.testing.assert_allclose(_values(s, [0, 5, 10, 20]), [1.0, 0.325, 0.1, 0.1], rtol=1e-6)
    s = optim.polynomial_schedule(1.0, 4, 14, power=1.0)
    np.testing.assert_allclose(_values(s, [2, 4, 9, 14]), [0.5, 1.0, 0.5, 0.0], atol=1e-7)


def test_make_schedule_checks_its_arguments():
    with pytest.raises(ValueError, match="total_steps"):
        optim.make_schedule(optim.OptimizerConfig(schedule="linear"))
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.make_optimizer(optim.OptimizerConfig(name="lamb"))


def test_decay_mask_by_parameter_path():
    params = {
        "token_embedder": {"embedding": 0},
        "encoder": {
            "layers_0": {
                "attention": {"query": {"kernel": 0}},
                "pre_attention_layer_norm": {"scale": 0},
                "mlp": {"wi": {"kernel": 0, "bias": 0}},
            },
            "encoder_norm": {"scale": 0},
        },
        "bert": {"LayerNorm": {"weight": 0, "bias": 0}, "dense": {"weight": 0, "bias": 0}},
        "ln_f": {"scale": 0},
    }
    mask = optim.decay_mask(params)
    assert mask["token_embedder"]["embedding"] is True
    assert mask["encoder"]["layers_0"]["attention"]["query"]["kernel"] is True
    assert mask["encoder"]["layers_0"]["pre_attention_layer_norm"]["scale"] is False
    assert mask["encoder"]["layers_0"]["mlp"]["wi"] == {"kernel": True, "bias": False}
    assert mask["encoder"]["encoder_norm"]["scale"] is False
    assert mask["bert"] == {
        "LayerNorm": {"weight": False, "bias": False},
        "dense": {"weight": True, "bias": False},
    }
    assert mask["ln_f"]["scale"] is False


def test_decay_mask_on_nnx_state():
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(2, 3, rngs=rngs)
            self.layer_norm = nnx.LayerNorm(3, rngs=rngs)

    params = nnx.state(nnx.eval_shape(lambda: Block(nnx.Rngs(0))), nnx.Param)  # no init compute
    flat = {
        optim.path_str(p): m
        for p, m in jax.tree_util.tree_flatten_with_path(optim.decay_mask(params))[0]
    }
    assert flat == {
        "dense/bias": False,
        "dense/kernel": True,
        "layer_norm/bias": False,
        "layer_norm/scale": False,
    }


def test_adamw_one_step_by_hand():
    params = {"dense": {"kernel": jnp.array([1.0, -2.0]), "bias": jnp.array([0.5])}}
    grads = {"dense": {"kernel": jnp.array([0.1, 0.2]), "bias": jnp.array([0.3])}}
    lr, wd, eps = 0.1, 0.01, 1e-6
    tx = optim.adamw_bert(lr)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    # step 1 with bias correction: m_hat = g, v_hat = g^2 -> g / (|g| + eps)
    g = np.array([0.1, 0.2])
    want_kernel = np.array([1.0, -2.0]) - lr * (g / (np.abs(g) + eps) + wd * np.array([1.0, -2.0]))
    want_bias = 0.5 - lr * (0.3 / (0.3 + eps))  # no weight decay on biases
    np.testing.assert_allclose(new["dense"]["kernel"], want_kernel, rtol=1e-6)
    np.testing.assert_allclose(new["dense"]["bias"], [want_bias], rtol=1e-6)


def test_adamw_second_moment_uses_b2_098():
    params = {"w": jnp.array([0.0])}
    tx = optim.adamw_bert(1.0, weight_decay=0.0)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for g in (1.0, 3.0):
        updates, state = update({"w": jnp.array([g])}, state, params)
    m = 0.1 * 0.9 * 1.0 + 0.1 * 3.0
    v = 0.02 * 0.98 * 1.0 + 0.02 * 9.0
    m_hat, v_hat = m / (1 - 0.9**2), v / (1 - 0.98**2)
    np.testing.assert_allclose(updates["w"], [-m_hat / (math.sqrt(v_hat) + 1e-6)], rtol=1e-5)


def test_adafactor_factored_and_unfactored_second_moments():
    tx = optim.adafactor_t5x(optim.rsqrt_schedule())
    params = {
        "big": jnp.ones((256, 128)),  # both dims >= 128: factored (row + column statistics)
        "thin": jnp.ones((200, 64)),  # second-largest dim < 128: full second moment
        "vector": jnp.ones((300,)),
    }
    state = tx.init(params)
    factored = state[0]
    assert {factored.v_row["big"].shape, factored.v_col["big"].shape} == {(256,), (128,)}
    assert factored.v["thin"].shape == (200, 64)
    assert factored.v["vector"].shape == (300,)
    assert factored.v["big"].shape == (1,)  # placeholder when factored


def test_adafactor_first_step_by_hand():
    # First step: decay 1 - 1^-0.8 = 0, so v = g^2 + 1e-30 and the scaled update is sign(g)
    # (RMS 1, not clipped at 1.0); the step is lr * max(RMS(param), 1e-3) = 0.01 * RMS(param).
    p = np.array([[0.5, -0.25], [1.0, 2.0]], np.float32)
    g = np.array([[0.3, -2.0], [1e-3, -5.0]], np.float32)
    tx = optim.adafactor_t5x(optim.rsqrt_schedule(1.0, 10_000))
    params = {"w": jnp.asarray(p), "tiny": jnp.full((3,), 1e-5)}
    grads = {"w": jnp.asarray(g), "tiny": jnp.array([1.0, -1.0, 1.0])}
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    rms = np.sqrt(np.mean(p**2))
    np.testing.assert_allclose(updates["w"], -0.01 * rms * np.sign(g), rtol=1e-5)
    np.testing.assert_allclose(updates["tiny"], -0.01 * 1e-3 * np.array([1, -1, 1]), rtol=1e-5)


def test_sgd_momentum_and_global_norm_clipping():
    tx, _ = optim.make_optimizer(
        optim.OptimizerConfig(
            name="sgd", schedule="constant", learning_rate=0.1, warmup_steps=0, momentum=0.9
        )
    )
    params = {"w": jnp.array(1.0)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(2):
        updates, state = update({"w": jnp.array(1.0)}, state, params)
        params = optax.apply_updates(params, updates)
    assert float(params["w"]) == pytest.approx(1.0 - 0.1 - 0.19)
    tx, _ = optim.make_optimizer(
        optim.OptimizerConfig(
            name="sgd", schedule="constant", learning_rate=1.0, warmup_steps=0, grad_clip_norm=1.0
        )
    )
    updates, _ = jax.jit(tx.update)({"w": jnp.array([3.0, 4.0])}, tx.init({"w": jnp.zeros(2)}))
    np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)


def test_token_cross_entropy_with_z_loss_is_a_weighted_sum():
    logits = np.array([[[2.0, 0.0, -1.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]], np.float32)
    targets = np.array([[0, 1, 2]])
    weights = np.array([[1.0, 1.0, 0.0]])
    loss_fn = jax.jit(optim.token_cross_entropy, static_argnames="z_loss")
    loss, aux = loss_fn(jnp.asarray(logits), targets, weights, z_loss=1e-4)
    log_z = np.log(np.exp(logits).sum(-1))[0]
    nll = log_z - logits[0, [0, 1, 2], [0, 1, 2]]
    want = (nll[:2] + 1e-4 * log_z[:2] ** 2).sum()
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(aux["nll_sum"]) == pytest.approx(nll[:2].sum(), rel=1e-6)
    assert float(aux["num_tokens"]) == 2.0
    assert float(aux["num_correct"]) == 1.0  # token 0 right, token 1 wrong, token 2 masked
    # bf16 logits are scored in float32
    loss16, _ = loss_fn(jnp.asarray(logits, jnp.bfloat16), targets, weights)
    assert loss16.dtype == jnp.float32
