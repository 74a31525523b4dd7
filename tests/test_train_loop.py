"""The jitted step (NNX model through split/merge), accumulation, NaN stop, the full loop."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_train_support as support

from pipeline_lib.train import checkpoint as ck
from pipeline_lib.train import data, loop, optim

support.configure_jax()


def _batch(rows: int = 8, seed: int = 0) -> dict:
    pipe = data.Seq2SeqPipeline(support.toy_corpus(seed), rows, support.LENGTHS, seed=seed)
    return next(pipe)


@functools.lru_cache(maxsize=None)
def _sgd_step(accum: int, normalizing: str):
    """One compiled step per (accumulation, normalisation), shared by the tests below."""
    _, forward = support.model_params()
    tx = optax.sgd(0.005)
    step = loop.make_train_step(
        loop.make_token_loss_fn(forward), tx, loss_normalizing=normalizing, grad_accum_steps=accum
    )
    return loop.jit_train_step(step, None, compiler_options=support.FAST_CPU_COMPILE), tx


def _fresh_state(tx):
    params, _ = support.model_params()
    return loop.init_train_state(params, tx)


def test_step_is_pure_jitted_donated_and_learns():
    step, tx = _sgd_step(1, "sum")
    state = _fresh_state(tx)
    batch = _batch()
    key = jax.random.key(0)
    losses = []
    for i in range(4):
        old_leaf = jax.tree.leaves(state.params)[0]
        state, metrics = step(state, batch, key)
        assert old_leaf.is_deleted()  # donated: updated in place, no second copy of the params
        losses.append(float(metrics["loss_sum"]))
        assert bool(metrics["finite"]) and int(state.step) == i + 1
    assert losses[-1] < losses[0]
    assert {"loss_sum", "nll_sum", "num_tokens", "num_correct", "grad_norm"} <= set(metrics)


def test_gradient_accumulation_equals_one_big_batch():
    batch = _batch()
    key = jax.random.key(0)
    big_step, tx = _sgd_step(1, "sum")
    big, big_metrics = big_step(_fresh_state(tx), batch, key)
    micro, micro_metrics = _sgd_step(4, "sum")[0](_fresh_state(tx), batch, key)
    for a, b in zip(jax.tree.leaves(big.params), jax.tree.leaves(micro.params)):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)
    for name in ("loss_sum", "num_tokens", "num_correct", "grad_norm"):
        np.testing.assert_allclose(big_metrics[name], micro_metrics[name], rtol=1e-5)
    # 'mean' divides the summed gradient by the batch's token count (over all micro-batches):
    # with SGD its update is the 'sum' update / num_tokens
    mean, mean_metrics = _sgd_step(2, "mean")[0](_fresh_state(tx), batch, key)
    tokens = float(mean_metrics["num_tokens"])
    assert tokens == float(batch["decoder_loss_weights"].sum())
    start = jax.tree.leaves(_fresh_state(tx).params)
    for p0, s, m in zip(start, jax.tree.leaves(big.params), jax.tree.leaves(mean.params)):
        np.testing.assert_allclose((m - p0) * tokens, s - p0, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(
        mean_metrics["grad_norm"] * tokens, big_metrics["grad_norm"], rtol=1e-5
    )


def test_compute_dtype_cast_keeps_float32_masters():
    params = {"w": jnp.array([1.5, -2.0]), "count": jnp.array(3)}
    cast = loop.cast_floating(params, jnp.bfloat16)
    assert cast["w"].dtype == jnp.bfloat16 and cast["count"].dtype == params["count"].dtype
    grads = jax.grad(lambda p: jnp.sum(loop.cast_floating(p, jnp.bfloat16)["w"] ** 2))(
        {"w": params["w"]}
    )
    assert grads["w"].dtype == jnp.float32
    np.testing.assert_allclose(grads["w"], [3.0, -4.0])
    assert loop.default_compute_dtype() == jnp.float32  # CPU


def _lm_arrays(n: int = 24, length: int = 6, poison_rows: tuple[int, ...] = ()) -> dict:
    """Decoder-only LM rows for the ArrayPipeline path (no encoder: all-pad encoder input)."""
    rng = np.random.default_rng(0)
    targets = rng.integers(2, support.VOCAB, (n, length)).astype(np.int32)
    targets[:, -1] = data.EOS_ID
    poison = np.zeros((n, 1), np.int32)
    poison[list(poison_rows)] = 1
    return {
        "encoder_input_tokens": np.zeros((n, 2), np.int32),
        "decoder_target_tokens": targets,
        "decoder_input_tokens": data.shift_right(targets),
        "decoder_loss_weights": np.ones((n, length), np.float32),
        "poison": poison,
    }


def test_train_loop_metrics_eval_best_checkpoints_and_resume(tmp_path):
    arrays = _lm_arrays()
    params, forward = support.model_params(dropout=0.1)
    tx, schedule = optim.make_optimizer(optim.OptimizerConfig())  # T5X Adafactor + rsqrt
    cfg = loop.TrainConfig(
        num_steps=6,
        log_every=2,
        eval_every=3,
        save_every=2,
        keep_checkpoints=2,
        flops_per_token=1e3,
        peak_flops_per_device=1e12,
        compiler_options=support.FAST_CPU_COMPILE,
    )
    paths = {
        "ckpt_dir": tmp_path / "ckpt",
        "metrics_path": tmp_path / "metrics.jsonl",
        "params_out": tmp_path / "final" / "params.npz",
        "best_params_out": tmp_path / "final" / "best.npz",
        "summary_path": tmp_path / "final" / "summary.json",
    }

    def run():
        return loop.train(
            cfg,
            loss_fn=loop.make_token_loss_fn(forward),
            params=params,
            optimizer=tx,
            schedule=schedule,
            train_data=data.ArrayPipeline(arrays, 4, seed=1),
            eval_batches=lambda: [{k: v[:8] for k, v in arrays.items()}],
            **paths,
        )

    result = run()
    assert result.step == 6 and result.resumed_from is None
    rows = [json.loads(line) for line in paths["metrics_path"].read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    eval_rows = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert [r["step"] for r in eval_rows] == [3, 6]
    for r in train_rows:
        assert {"loss", "accuracy", "learning_rate", "grad_norm", "tokens_per_s", "mfu"} <= set(r)
        assert r["learning_rate"] == pytest.approx(0.01)  # rsqrt: 1/sqrt(10000)
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * 1e3 / 1e12)
    for r in eval_rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["num_tokens"] == 8 * 6
    best = max(eval_rows, key=lambda r: r["accuracy"])
    summary = json.loads(paths["summary_path"].read_text())
    assert summary["best"]["step"] == best["step"] == result.best["step"]
    assert summary["best"]["metrics"]["accuracy"] == best["accuracy"]
    assert ck.Checkpointer(paths["ckpt_dir"]).all_steps() == [4, 6]

    final = ck.load_params(paths["params_out"])
    for name, leaf in ck.flatten_params(result.params).items():
        assert np.array_equal(final[name], leaf)
    assert set(ck.load_params(paths["best_params_out"])) == set(final)

    # rerunning a finished job resumes at the end: nothing retrained, nothing logged twice
    again = run()
    assert again.resumed_from == 6 and again.step == 6 and again.best == result.best
    assert [json.loads(x) for x in paths["metrics_path"].read_text().splitlines()] == rows
    for name, leaf in ck.flatten_params(again.params).items():
        assert np.array_equal(final[name], leaf)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    arrays = _lm_arrays(poison_rows=(8, 9))  # rows 8-9 = the 5th batch of 2 (no shuffling)
    params, forward = support.model_params()
    token_loss = loop.make_token_loss_fn(forward)

    def loss_fn(p, batch, rng):
        loss, aux = token_loss(p, batch, rng)
        return loss + jnp.where(batch["poison"].any(), jnp.nan, 0.0), aux

    tx, schedule = optim.make_optimizer(
        optim.OptimizerConfig(name="adamw", schedule="constant", learning_rate=1e-3, warmup_steps=0)
    )
    cfg = loop.TrainConfig(
        num_steps=10, log_every=100, save_every=2, compiler_options=support.FAST_CPU_COMPILE
    )
    with pytest.raises(loop.NonFiniteError) as e:
        loop.train(
            cfg,
            loss_fn=loss_fn,
            params=params,
            optimizer=tx,
            schedule=schedule,
            train_data=data.ArrayPipeline(arrays, 2, seed=0, shuffle=False),
            ckpt_dir=tmp_path / "ckpt",
            metrics_path=tmp_path / "m.jsonl",
            params_out=tmp_path / "params.npz",
        )
    message = str(e.value)
    assert "non-finite loss or gradient at step 5" in message
    assert str(tmp_path / "ckpt" / "4") in message
    assert not (tmp_path / "params.npz").exists()
    with ck.Checkpointer(tmp_path / "ckpt") as c:
        assert c.all_steps() == [2, 4]  # the state after the bad step was never saved
        like = {
            "params": params,
            "opt_state": tx.init(params),
            "step": jnp.int32(0),
            "rng": jax.random.key_data(jax.random.key(0)),
        }
        restored, meta = c.restore(ck.abstract_like(like))
    assert int(restored["step"]) == 4 and meta["data"] == {"epoch": 0, "index": 8}
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored["params"]))
    last = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[-1])
    assert last == {"event": "nonfinite", "split": "train", "step": 5}


def test_an_update_that_overflows_the_parameters_is_never_applied_or_saved(tmp_path):
    """Finite loss and gradient, but SGD with lr 3e38 overflows the parameters to Inf: the
    step counts as non-finite, so the last checkpoint called good holds finite arrays only."""
    arrays = _lm_arrays()
    params, forward = support.model_params()
    tx, schedule = optim.make_optimizer(
        optim.OptimizerConfig(name="sgd", schedule="constant", learning_rate=3e38, warmup_steps=0)
    )
    cfg = loop.TrainConfig(num_steps=4, log_every=100, save_every=1,
                           compiler_options=support.FAST_CPU_COMPILE)
    with pytest.raises(loop.NonFiniteError, match="at step 1"):
        loop.train(cfg, loss_fn=loop.make_token_loss_fn(forward), params=params, optimizer=tx,
                   schedule=schedule, train_data=data.ArrayPipeline(arrays, 2, seed=0),
                   ckpt_dir=tmp_path / "ckpt")
    with ck.Checkpointer(tmp_path / "ckpt") as c:
        assert c.all_steps() == []  # nothing was ever called good


def test_a_nan_evaluation_is_never_selected_as_best():
    from pipeline_lib.train import metrics

    assert not metrics.improves({"accuracy": float("nan")}, None, "accuracy")
    assert not metrics.improves({"accuracy": float("inf")}, None, "accuracy")
    best = {"step": 2, "metrics": {"accuracy": 0.5}}
    assert not metrics.improves({"accuracy": float("nan")}, best, "accuracy")
    assert metrics.improves({"accuracy": 0.6}, best, "accuracy")


def test_json_outputs_never_hold_nan_or_infinity(tmp_path):
    from pipeline_lib.files import write_json_atomic

    write_json_atomic(tmp_path / "s.json", {"best": {"loss": float("nan")}, "x": [float("inf")]})
    text = (tmp_path / "s.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"best": {"loss": None}, "x": [None]}
