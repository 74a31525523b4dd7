"""Hessian-trace estimators (pipeline_lib.evaluate.hessian) against brute force on tiny models.

References are computed independently of the estimators: the full Hessian (jax.hessian on the
raveled parameters), and the exact Fisher trace by enumerating every label at every position
(Jacobian of log-softmax, weighted by the model's probabilities). Models: a 2-layer MLP softmax
classifier (41 parameters) and a 1-layer BERT with d_model 8 and vocabulary 10 (~850).
"""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from pipeline_lib.evaluate import hessian as H
from pipeline_lib.models.bert import Bert, BertConfig


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


# --- tiny models -----------------------------------------------------------------------------


def mlp_params(seed=0, n_in=3, hidden=4, classes=5):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    return {
        "w1": jax.random.normal(k1, (n_in, hidden)),
        "b1": 0.3 * jax.random.normal(k2, (hidden,)),
        "w2": jax.random.normal(k3, (hidden, classes)),
        "b2": 0.3 * jax.random.normal(k4, (classes,)),
    }


def mlp_logits(params, batch):
    hidden = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + params["b2"]


def mlp_loss(params, batch):
    log_p = jax.nn.log_softmax(mlp_logits(params, batch))
    nll = -jnp.take_along_axis(log_p, batch["y"][:, None], axis=-1)[:, 0]
    return jnp.sum(batch["w"] * nll) / jnp.sum(batch["w"])


def mlp_batch(seed=1, n=6, classes=5):
    rng = np.random.default_rng(seed)
    weights = np.ones(n, np.float32)
    weights[-1] = 0.0  # a padded example: must not count
    return {
        "x": rng.normal(size=(n, 3)).astype(np.float32),
        "y": rng.integers(0, classes, n).astype(np.int32),
        "w": weights,
    }


TINY_BERT = BertConfig(
    vocab_size=10, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16,
    max_position_embeddings=6, probe_length=6,
)


def bert_setup(seed=0, num_labels=0):
    import dataclasses

    model = Bert(dataclasses.replace(TINY_BERT, num_labels=num_labels), rngs=nnx.Rngs(params=seed))
    # N(0, 0.02) init gives near-uniform predictions and a tiny Hessian; scale up so the
    # curvature is O(1) and the test exercises a non-trivial model.
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda x: x * 25.0 if x.ndim == 2 else x, params))
    return model


def bert_batch(seed=2):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 10, (3, 6)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3
    mask = np.ones((3, 6), np.int32)
    mask[2, 4:] = 0
    ids[2, 4:] = 0
    positions = np.array([[1, 3], [2, 4], [2, 0]], np.int32)
    labels = rng.integers(5, 10, (3, 2)).astype(np.int32)
    weights = np.array([[1, 1], [1, 1], [1, 0]], np.float32)  # the last slot is padding
    ids[[0, 1, 2], positions[:, 0]] = 4  # [MASK]
    return {
        "input_ids": ids, "input_mask": mask, "masked_lm_positions": positions,
        "masked_lm_ids": labels, "masked_lm_weights": weights,
    }


# --- independent references ------------------------------------------------------------------

FAST = {"xla_cpu_use_fusion_emitters": False}  # ~2.5x faster compiles of these toy models


def exact_fisher_fn(logits_fn, weights_key):
    """Jitted (params, batch) -> (1/W) sum_j w_j sum_y p(y|x_j) ||grad log p(y|x_j)||^2, every
    label at every position enumerated (Jacobian of log-softmax w.r.t. the raveled params)."""

    def fisher(params, batch):
        flat, unravel = ravel_pytree(params)
        log_p = lambda f: jax.nn.log_softmax(logits_fn(unravel(f), batch), axis=-1)
        jac = jax.jacrev(log_p)(flat)  # [..., vocab, P]
        probs = jnp.exp(log_p(flat))
        per_position = jnp.sum(probs * jnp.sum(jac**2, axis=-1), axis=-1)
        weights = batch[weights_key].astype(jnp.float32)
        return jnp.sum(weights * per_position) / jnp.sum(weights)

    return jax.jit(fisher, compiler_options=FAST)


def soft_label_loss(logits_fn, params0, batch, weights_key):
    """Expected loss under labels ~ the model at params0: minimised (over distributions) there."""
    target = jax.nn.softmax(logits_fn(params0, batch), axis=-1)
    weights = jnp.asarray(batch[weights_key], jnp.float32)

    def loss(params, batch):
        ce = -jnp.sum(target * jax.nn.log_softmax(logits_fn(params, batch), axis=-1), axis=-1)
        return jnp.sum(weights * ce) / jnp.sum(weights)

    return loss


def within(estimate, reference, n_stderr=4.0):
    return abs(estimate.mean - reference) <= n_stderr * estimate.stderr


def fixed(estimator, *args, n, **kwargs):
    """`n` samples exactly (rel_tol 0), all on the same batch."""
    return estimator(*args, min_samples=n, max_samples=n, rel_tol=0.0, **kwargs)


@pytest.fixture(scope="module")
def bert():
    model = bert_setup()
    graphdef, params, rest = H.split_hessian_params(model)
    loss_fn, logits_fn = H.bert_mlm_loss_and_logits(graphdef, rest)
    batch = bert_batch()
    fisher = float(exact_fisher_fn(logits_fn, "masked_lm_weights")(params, batch))
    return SimpleNamespace(model=model, graphdef=graphdef, params=params, rest=rest,
                           loss_fn=loss_fn, logits_fn=logits_fn, batch=batch, fisher=fisher)


# --- Hutchinson ------------------------------------------------------------------------------


def test_rademacher_average_over_all_probes_is_exact():
    """E_v[v^T H v] = tr(H) exactly: the 2^4 sign vectors of a 4-parameter model average to it."""
    params = {"w": jnp.array([[0.7, -0.4], [0.2, 1.1]])}
    batch = {"x": jnp.array([[1.0, -2.0], [0.5, 0.3], [-1.5, 0.8]]), "y": jnp.array([0, 1, 1])}

    def loss(p, b):
        log_p = jax.nn.log_softmax(b["x"] @ p["w"])
        return -jnp.mean(jnp.take_along_axis(log_p, b["y"][:, None], axis=-1))

    quadratic = jax.jit(lambda v: H.probe_quadratic_form(loss, params, batch, v))
    values = [
        float(quadratic({"w": jnp.array(signs).reshape(2, 2)}))
        for signs in itertools.product([-1.0, 1.0], repeat=4)
    ]
    exact = H.exact_trace(loss, params, batch, compiler_options=FAST)
    assert exact > 0.1
    assert np.mean(values) == pytest.approx(exact, rel=1e-5)
    assert np.ptp(values) > 0.01  # single probes do vary: only the average is exact


def test_hvp_matches_materialised_hessian():
    params, batch = mlp_params(), mlp_batch()
    flat, unravel = ravel_pytree(params)
    hess = jax.jit(jax.hessian(lambda f: mlp_loss(unravel(f), batch)), compiler_options=FAST)(flat)
    v = jax.random.normal(jax.random.key(3), flat.shape)
    hvp = jax.jit(lambda v: H.hessian_vector_product(mlp_loss, params, batch, unravel(v)),
                  compiler_options=FAST)
    np.testing.assert_allclose(ravel_pytree(hvp(v))[0], hess @ v, rtol=1e-4, atol=1e-5)
    assert float(jnp.trace(hess)) == pytest.approx(
        H.exact_trace(mlp_loss, params, batch, compiler_options=FAST))


def test_probes_have_the_right_distribution():
    params = {"a": jnp.zeros((100, 50)), "b": jnp.zeros((3,), jnp.float32)}
    rad = H.draw_probe(jax.random.key(0), params, "rademacher")
    assert jax.tree.map(jnp.shape, rad) == jax.tree.map(jnp.shape, params)
    assert set(np.unique(rad["a"]).tolist()) == {-1.0, 1.0}
    assert abs(float(jnp.mean(rad["a"]))) < 0.05
    gauss = H.draw_probe(jax.random.key(0), params, "gaussian")
    assert abs(float(jnp.mean(gauss["a"]))) < 0.05
    assert float(jnp.var(gauss["a"])) == pytest.approx(1.0, abs=0.06)
    other = H.draw_probe(jax.random.key(1), params, "rademacher")
    assert not np.array_equal(rad["a"], other["a"])
    with pytest.raises(ValueError, match="probe: 'normal' is not one of rademacher, gaussian"):
        H.draw_probe(jax.random.key(0), params, "normal")


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_matches_exact_trace_mlp(probe):
    params, batch = mlp_params(), mlp_batch()
    exact = H.exact_trace(mlp_loss, params, batch, compiler_options=FAST)
    estimate = fixed(H.hutchinson_trace, mlp_loss, params, itertools.repeat(batch),
                     jax.random.key(4), probe=probe, n=400, compiler_options=FAST)
    assert estimate.num_samples == 400 and estimate.samples.shape == (400,)
    assert estimate.stderr < 0.15 * exact
    assert within(estimate, exact), (estimate.mean, estimate.stderr, exact)


def test_hutchinson_matches_exact_trace_tiny_bert(bert):
    exact = H.exact_trace(bert.loss_fn, bert.params, bert.batch, compiler_options=FAST)
    sample = H.make_hutchinson_sample(bert.loss_fn, compiler_options=FAST)
    estimate = fixed(H.run_trace_estimator, sample, bert.params, itertools.repeat(bert.batch),
                     jax.random.key(5), n=200)
    assert abs(exact) > 1.0
    assert estimate.stderr < 0.2 * abs(exact)
    assert within(estimate, exact), (estimate.mean, estimate.stderr, exact)


# --- Fisher ----------------------------------------------------------------------------------


def test_fisher_matches_brute_force_fisher_mlp():
    params, batch = mlp_params(), mlp_batch()
    exact = float(exact_fisher_fn(mlp_logits, "w")(params, batch))
    estimate = fixed(H.fisher_trace, mlp_logits, params, itertools.repeat(batch),
                     jax.random.key(6), weights_key="w", n=300, compiler_options=FAST)
    assert estimate.stderr < 0.1 * exact
    assert within(estimate, exact), (estimate.mean, estimate.stderr, exact)


def test_fisher_matches_brute_force_fisher_tiny_bert(bert):
    sample = H.make_fisher_sample(bert.logits_fn, compiler_options=FAST)
    estimate = fixed(H.run_trace_estimator, sample, bert.params, itertools.repeat(bert.batch),
                     jax.random.key(7), n=200)
    assert bert.fisher > 1.0
    assert estimate.stderr < 0.1 * bert.fisher
    assert within(estimate, bert.fisher), (estimate.mean, estimate.stderr, bert.fisher)


def test_per_example_gradients_with_several_positions_are_exact_in_expectation(bert):
    """Enumerating every joint label of an example's 2 positions, weighted by the model, the
    squared per-example gradient norms average to the per-position Fisher trace: the cross
    terms vanish on average (not per label pair), and a padded slot (weight 0) contributes
    nothing whatever its label."""
    batch, weights = bert.batch, bert.batch["masked_lm_weights"]
    probs = np.asarray(jax.nn.softmax(bert.logits_fn(bert.params, batch), axis=-1))  # [3, 2, 10]
    combos = np.array(list(itertools.product(range(10), repeat=2)), np.int32)  # [100, 2]
    labels = np.broadcast_to(combos[:, None, :], (100, 3, 2))
    norms_for = jax.jit(jax.vmap(
        lambda batch, y: H.per_example_sq_grad_norms(bert.logits_fn, bert.params, batch, y),
        in_axes=(None, 0),
    ), compiler_options=FAST)
    norms = np.asarray(norms_for(batch, labels))  # [100 label pairs, 3 examples]
    joint = (probs[:, 0, combos[:, 0]] * probs[:, 1, combos[:, 1]]).T  # [100, 3]
    assert np.sum(joint * norms) / weights.sum() == pytest.approx(bert.fisher, rel=2e-4)
    # the padded slot of example 2: its label does not matter
    same_first = combos[:, 0] == 7
    assert np.ptp(norms[same_first, 2]) < 1e-6 * norms[same_first, 2].max()
    # one position at a time: different per label pair (cross terms), same expectation
    first = np.asarray(norms_for({**batch, "masked_lm_weights": weights * [1, 0]}, labels))
    second = np.asarray(norms_for({**batch, "masked_lm_weights": weights * [0, 1]}, labels))
    assert not np.allclose(first + second, norms, rtol=1e-3)
    assert np.sum(joint * (first + second)) == pytest.approx(np.sum(joint * norms), rel=2e-4)


@pytest.mark.parametrize("model", ["mlp", "bert"])
def test_fisher_equals_hessian_when_labels_follow_the_model(model, request):
    """At the minimiser of the expected loss under the model's own label distribution, the
    Hessian of that loss is the Fisher: exact Hessian trace = brute-force Fisher (= estimate)."""
    if model == "mlp":
        params, batch, logits_fn, key = mlp_params(), mlp_batch(), mlp_logits, "w"
        fisher = float(exact_fisher_fn(mlp_logits, "w")(params, batch))
    else:
        b = request.getfixturevalue("bert")
        params, batch, logits_fn, fisher = b.params, b.batch, b.logits_fn, b.fisher
        key = "masked_lm_weights"
    expected_loss = soft_label_loss(logits_fn, params, batch, key)
    # it is the minimiser: the gradient vanishes
    grad = jax.jit(jax.grad(expected_loss), compiler_options=FAST)
    flat_grad, _ = ravel_pytree(grad(params, batch))
    assert float(jnp.max(jnp.abs(flat_grad))) < 1e-5
    hessian_trace = H.exact_trace(expected_loss, params, batch, compiler_options=FAST)
    assert hessian_trace == pytest.approx(fisher, rel=1e-3)
    if model == "mlp":
        estimate = fixed(H.fisher_trace, logits_fn, params, itertools.repeat(batch),
                         jax.random.key(7), weights_key=key, n=300, compiler_options=FAST)
        assert within(estimate, hessian_trace), (estimate.mean, estimate.stderr, hessian_trace)


def test_fisher_chunked_equals_vectorised():
    params, batch = mlp_params(), mlp_batch()
    whole = H.make_fisher_sample(mlp_logits, weights_key="w")(params, batch, jax.random.key(8))
    chunked = H.make_fisher_sample(mlp_logits, weights_key="w", chunk_size=4)(
        params, batch, jax.random.key(8))
    assert float(chunked) == pytest.approx(float(whole), rel=1e-5)
    with pytest.raises(ValueError, match="chunk_size: 0 must be a positive integer or None"):
        H.make_fisher_sample(mlp_logits, chunk_size=0)


def test_fisher_is_not_the_squared_batch_gradient():
    """The squared gradient of the batch-mean log-likelihood would be ~tr(F)/B: check that
    a sample is the per-example sum, computed here by a Python loop over examples."""
    params, batch = mlp_params(), mlp_batch()
    key = jax.random.key(11)
    sample = float(H.make_fisher_sample(mlp_logits, weights_key="w")(params, batch, key))
    labels = H.sample_model_labels(mlp_logits(params, batch), key)

    @jax.jit
    def squared_grad(one, label):
        g = jax.grad(lambda p: jnp.sum(one["w"] * jax.nn.log_softmax(mlp_logits(p, one))[
            0, label]))(params)
        return sum(jnp.sum(x**2) for x in jax.tree.leaves(g))

    total = sum(float(squared_grad({k: v[e:e + 1] for k, v in batch.items()}, labels[e]))
                for e in range(len(batch["y"])))
    assert sample == pytest.approx(total / batch["w"].sum(), rel=1e-5)
    summed_gradient = jax.grad(lambda p: jnp.sum(batch["w"] * jnp.take_along_axis(
        jax.nn.log_softmax(mlp_logits(p, batch)), labels[:, None], axis=-1)[:, 0]))(params)
    squared_sum = float(sum(jnp.sum(x**2) for x in jax.tree.leaves(summed_gradient)))
    assert abs(squared_sum - total) > 0.1 * total  # the cross terms do not cancel per draw


def test_fisher_rejects_mis_shaped_logits_and_missing_weights():
    params, batch = mlp_params(), mlp_batch()
    bad = H.make_fisher_sample(lambda p, b: mlp_logits(p, b)[..., None, :], weights_key="w")
    with pytest.raises(ValueError, match=r"expected \(1, vocab\) to match batch\['w'\]"):
        bad(params, batch, jax.random.key(0))
    with pytest.raises(ValueError, match="batch 0 has no 'masked_lm_weights'"):
        H.fisher_trace(mlp_logits, params, itertools.repeat(batch), jax.random.key(0))


# --- BERT plumbing ---------------------------------------------------------------------------


def test_bert_params_filter_and_loss(bert):
    names = lambda state: {"/".join(map(str, p)) for p, _ in state.flat_state()}
    assert names(bert.rest) == {"mlm_head/bias", "pooler/dense/bias", "pooler/dense/kernel"}
    assert "embeddings/word_embeddings/embedding" in names(bert.params)
    assert "mlm_head/dense/kernel" in names(bert.params)
    _, _, rest_heads = H.split_hessian_params(bert_setup(num_labels=3))
    assert {"classifier/kernel", "probe/kernel"} <= names(rest_heads)

    batch = bert.batch
    full = np.asarray(bert.model.mlm_logits(batch["input_ids"], batch["input_mask"]))  # [3, 6, 10]
    log_p = full - np.log(np.exp(full).sum(-1, keepdims=True))
    nll = [-log_p[e, batch["masked_lm_positions"][e, j], batch["masked_lm_ids"][e, j]]
           for e in range(3) for j in range(2) if batch["masked_lm_weights"][e, j]]
    assert float(bert.loss_fn(bert.params, batch)) == pytest.approx(np.mean(nll), rel=1e-5)
    assert bert.logits_fn(bert.params, batch).shape == (3, 2, 10)


# --- stopping rule, determinism, data flow ---------------------------------------------------


def value_sample(params, batch, key):
    return batch  # the "batch" is the sample value


def first_stop(values, min_samples, rel_tol):
    for n in range(min_samples, len(values) + 1):
        x = np.asarray(values[:n])
        if x.std(ddof=1) / math.sqrt(n) <= rel_tol * abs(x.mean()):
            return n
    return len(values)


def test_stopping_rule_stops_at_first_n_meeting_the_tolerance():
    values = list(10.0 + np.random.default_rng(0).normal(size=500))
    for min_samples, rel_tol in [(2, 0.05), (5, 0.02), (10, 0.01), (50, 0.01)]:
        est = H.run_trace_estimator(
            value_sample, None, iter(values), jax.random.key(0),
            min_samples=min_samples, max_samples=500, rel_tol=rel_tol,
        )
        expected = first_stop(values, min_samples, rel_tol)
        assert est.num_samples == expected < 500
        assert est.num_samples >= min_samples
        np.testing.assert_array_equal(est.samples, values[:expected])
        assert est.mean == pytest.approx(np.mean(values[:expected]))
        assert est.stderr <= rel_tol * abs(est.mean) * (1 + 1e-9)


def test_stopping_rule_min_and_max_samples():
    constant = H.run_trace_estimator(  # zero variance: converged at once, but min_samples rules
        value_sample, None, itertools.repeat(3.0), jax.random.key(0),
        min_samples=7, max_samples=100, rel_tol=0.0,
    )
    assert constant.num_samples == 7 and constant.stderr == 0.0 and constant.mean == 3.0
    noisy = H.run_trace_estimator(
        value_sample, None, iter(np.random.default_rng(1).normal(size=100) + 1.0),
        jax.random.key(0), min_samples=2, max_samples=30, rel_tol=1e-6,
    )
    assert noisy.num_samples == 30


def test_sample_i_uses_batch_i_and_key_fold_in_i():
    seen = []

    def recording(params, batch, key):
        seen.append((batch, np.asarray(jax.random.key_data(key))))
        return 1.0 + batch

    key = jax.random.key(42)
    H.run_trace_estimator(recording, None, iter(range(100)), key, min_samples=5,
                          max_samples=5, rel_tol=0.0)
    assert [b for b, _ in seen] == [0, 1, 2, 3, 4]
    for i, (_, k) in enumerate(seen):
        np.testing.assert_array_equal(k, jax.random.key_data(jax.random.fold_in(key, i)))


def test_stopping_rule_errors():
    run = lambda batches, **kw: H.run_trace_estimator(
        value_sample, None, batches, jax.random.key(0), **kw)
    with pytest.raises(ValueError, match="min_samples: 1 must be an integer >= 2"):
        run([1.0, 2.0], min_samples=1)
    with pytest.raises(ValueError, match=r"max_samples: 3 must be an integer >= min_samples \(5\)"):
        run([1.0], min_samples=5, max_samples=3)
    with pytest.raises(ValueError, match="rel_tol: -0.1 must be a finite number >= 0"):
        run([1.0], rel_tol=-0.1)
    with pytest.raises(ValueError, match="ran out after 3 samples"):
        run([1.0, 2.0, 3.0], min_samples=5, max_samples=10)
    with pytest.raises(FloatingPointError, match="sample 1 is nan"):
        run([1.0, float("nan"), 2.0], min_samples=2, max_samples=3)


def test_same_key_same_estimate_and_fresh_batches():
    params = mlp_params()
    batches = [mlp_batch(seed=s) for s in range(12)]
    kwargs = dict(min_samples=12, max_samples=12, rel_tol=0.0, compiler_options=FAST)
    a = H.hutchinson_trace(mlp_loss, params, iter(batches), jax.random.key(9), **kwargs)
    b = H.hutchinson_trace(mlp_loss, params, iter(batches), jax.random.key(9), **kwargs)
    c = H.hutchinson_trace(mlp_loss, params, iter(batches), jax.random.key(10), **kwargs)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.allclose(a.samples, c.samples)
    single = H.make_hutchinson_sample(mlp_loss, compiler_options=FAST)
    for i in (0, 7):  # sample i = one probe fold_in(key, i) on batch i
        assert a.samples[i] == pytest.approx(
            float(single(params, batches[i], jax.random.fold_in(jax.random.key(9), i))), rel=1e-6)

    f1 = H.fisher_trace(mlp_logits, params, iter(batches), jax.random.key(9), weights_key="w",
                        **kwargs)
    f2 = H.fisher_trace(mlp_logits, params, iter(batches), jax.random.key(9), weights_key="w",
                        **kwargs)
    f3 = H.fisher_trace(mlp_logits, params, iter(batches), jax.random.key(10), weights_key="w",
                        **kwargs)
    np.testing.assert_array_equal(f1.samples, f2.samples)
    assert not np.allclose(f1.samples, f3.samples)


def test_exact_trace_refuses_large_models():
    with pytest.raises(ValueError, match="exact_trace: 41 parameters.*max_params 40"):
        H.exact_trace(mlp_loss, mlp_params(), mlp_batch(), max_params=40)


def test_trace_estimate_summary():
    est = H.TraceEstimate.from_samples([1.0, 2.0, 3.0, 4.0])
    assert est.mean == 2.5 and est.num_samples == 4
    assert est.stderr == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert est.as_dict() == {"trace": 2.5, "stderr": est.stderr, "num_samples": 4}
    assert est.relative_stderr == pytest.approx(est.stderr / 2.5)
