"""Several runs in one vmapped step (train.many): each run equals training it alone (up to
float reassociation), resume continues exactly, a diverged run stops the group naming it, and
checkpoint directories are keyed by the run spec."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_train_support import FAST_CPU_COMPILE, LENGTHS, configure_jax, model_params, toy_corpus


def _setup(num_steps=8, lr=3e-3):
    configure_jax()
    from pipeline_lib.train import data, loop, optim

    corpus = toy_corpus()
    tx, schedule = optim.make_optimizer(
        optim.OptimizerConfig(name="adamw", schedule="constant", learning_rate=lr)
    )
    cfg = loop.TrainConfig(num_steps=num_steps, log_every=2, eval_every=4, save_every=4,
                           compiler_options=FAST_CPU_COMPILE, async_checkpointing=False)

    def pipes(seeds):
        return [data.Seq2SeqPipeline(corpus, 8, LENGTHS, seed=10 + s) for s in seeds]

    def evals():
        return data.seq2seq_eval_batches(corpus, 8, LENGTHS, num_batches=2)

    return cfg, tx, schedule, pipes, evals


def _many(tmp_path, seeds, name, num_steps=8, lr=3e-3):
    from pipeline_lib.train import loop, many

    cfg, tx, schedule, pipes, evals = _setup(num_steps, lr)
    params = [model_params(seed=s, dropout=0.1)[0] for s in seeds]
    forward = model_params(seed=0, dropout=0.1)[1]
    return many.train_many(
        cfg, loss_fn=loop.make_token_loss_fn(forward), params=params, seeds=[100 + s for s in seeds],
        optimizer=tx, schedule=schedule, train_data=pipes(seeds), ckpt_dir=tmp_path / name,
        metrics_paths=[tmp_path / f"{name}.{s}.jsonl" for s in seeds], eval_batches=evals,
    )


def _single(tmp_path, seed):
    from pipeline_lib.train import loop

    cfg, tx, schedule, pipes, evals = _setup()
    params, forward = model_params(seed=seed, dropout=0.1)
    import dataclasses

    return loop.train(
        dataclasses.replace(cfg, seed=100 + seed), loss_fn=loop.make_token_loss_fn(forward),
        params=params, optimizer=tx, schedule=schedule, train_data=pipes([seed])[0],
        ckpt_dir=tmp_path / f"single{seed}", eval_batches=evals,
    )


def test_each_run_of_a_group_matches_training_it_alone(tmp_path):
    import jax

    group = _many(tmp_path, [0, 1, 2], "group")
    for i, seed in enumerate([0, 1, 2]):
        alone = _single(tmp_path, seed)
        for a, b in zip(jax.tree.leaves(group[i].params), jax.tree.leaves(alone.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
        assert group[i].best["step"] == alone.best["step"]
        assert group[i].best["metrics"]["accuracy"] == pytest.approx(
            alone.best["metrics"]["accuracy"], abs=1e-6)
    lines = [json.loads(x) for x in (tmp_path / "group.1.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["split"] == "eval"] == [4, 8]
    assert len({json.dumps(g.best) for g in group}) == 3  # three different runs


def test_a_group_resumes_from_its_checkpoint(tmp_path):
    import jax

    from pipeline_lib.train import events, metrics

    full = _many(tmp_path, [0, 1], "full", num_steps=8)
    _many(tmp_path, [0, 1], "resumed", num_steps=4)
    for s in [0, 1]:  # a line of step 6 logged by an attempt killed before saving it
        killed = metrics.MetricsWriter(tmp_path / f"resumed.{s}.jsonl")
        killed.begin(4)
        killed.write({"step": 6, "split": "train", "loss": 123.0})
    again = _many(tmp_path, [0, 1], "resumed", num_steps=8)
    assert again[0].resumed_from == 4
    for run_a, run_b in zip(full, again):
        for a, b in zip(jax.tree.leaves(run_a.params), jax.tree.leaves(run_b.params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_equal(run_a.best, run_b.best)
    # each run has its own TensorBoard run (events dir): the scalars of its metrics file, each
    # (tag, step) once, the same series as the uninterrupted group's
    for s in [0, 1]:
        lines = [json.loads(x) for x in (tmp_path / f"resumed.{s}.jsonl").read_text().splitlines()]
        found = events.read_events(tmp_path / f"resumed.{s}.tb")
        assert len(found) == len({(t, st) for t, st, _ in found})
        assert {(t, st): v for t, st, v in found} == {
            (t, r["step"]): float(np.float32(v))
            for r in lines for t, v in events.scalars(r).items()
        }
        assert 123.0 not in [v for _, _, v in found]
        full_tags = {(t, st) for t, st, _ in events.read_events(tmp_path / f"full.{s}.tb")}
        assert {(t, st) for t, st, _ in found} == full_tags


def test_a_diverging_run_stops_the_group_naming_it(tmp_path):
    from pipeline_lib.train.step import NonFiniteError

    with pytest.raises(NonFiniteError, match=r"run \d \(seed 10\d\)"):
        _many(tmp_path, [0, 1], "nan", lr=1e30)


def test_run_directory_is_keyed_by_the_spec(tmp_path):
    from pipeline_lib.train.checkpoint import CheckpointError, run_directory

    a = run_directory(tmp_path, {"lr": 0.1, "seeds": [0, 1]})
    assert run_directory(tmp_path, {"seeds": [0, 1], "lr": 0.1}) == a  # key order is irrelevant
    b = run_directory(tmp_path, {"lr": 0.2, "seeds": [0, 1]})
    assert a != b and a.parent == b.parent == tmp_path
    assert json.loads((a / "run_spec.json").read_text()) == {"lr": 0.1, "seeds": [0, 1]}
    (b / "run_spec.json").write_text(json.dumps({"lr": 0.3}))  # a collision, simulated
    with pytest.raises(CheckpointError, match="another run spec"):
        run_directory(tmp_path, {"lr": 0.2, "seeds": [0, 1]})
