"""Linear probe: batching, dropout, separable data, determinism, least squares, input errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pipeline_lib.evaluate import probe
from pipeline_lib.evaluate.probe import LR_END, ProbeError, train_linear_probe

jax.config.update("jax_disable_most_optimizations", True)


def _blobs(rng, n, num_classes, num_features, separation, noise=1.0):
    """Gaussian classes with means `separation * e_k` (shared isotropic covariance)."""
    y = rng.integers(0, num_classes, n)
    means = separation * np.eye(num_classes, num_features)
    x = means[y] + noise * rng.normal(size=(n, num_features))
    return x.astype(np.float32), y.astype(np.int64)


def test_epoch_batches_cover_every_example_once():
    indices, weights = probe.epoch_batches(jax.random.key(0), 10, 4)
    indices, weights = np.asarray(indices), np.asarray(weights)
    assert indices.shape == weights.shape == (3, 4)  # ceil(10 / 4) steps, last one padded
    assert sorted(indices[weights == 1].tolist()) == list(range(10))
    assert weights.sum() == 10 and weights[-1].tolist() == [1, 1, 0, 0]
    other, _ = probe.epoch_batches(jax.random.key(1), 10, 4)
    assert not np.array_equal(indices, np.asarray(other))  # a different shuffle per key


def test_feature_dropout_is_inverted_dropout():
    x = jnp.ones((200, 50))
    assert probe.feature_dropout(jax.random.key(0), x, 0.0) is x
    dropped = np.asarray(probe.feature_dropout(jax.random.key(0), x, 0.2))
    assert set(np.unique(dropped).tolist()) == {0.0, 1.25}  # survivors scaled by 1 / (1 - p)
    assert abs((dropped == 0).mean() - 0.2) < 0.02


def test_separable_data_reaches_full_accuracy():
    rng = np.random.default_rng(0)
    x, y = _blobs(rng, 210, num_classes=3, num_features=6, separation=6.0, noise=0.5)
    epochs, batch, warmup = 20, 16, 5
    result = train_linear_probe(
        x[:150],
        y[:150],
        x[150:],
        y[150:],
        num_classes=3,
        epochs=epochs,
        batch_size=batch,
        warmup_steps=warmup,
        seed=0,
        learning_rate=1e-2,
    )
    assert result.train_accuracy == 1.0 and result.valid_accuracy == 1.0
    assert result.history[-1]["valid_accuracy"] == result.valid_accuracy
    assert [h["epoch"] for h in result.history] == list(range(1, epochs + 1))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    # linear decay to LR_END: the last update (step total-1) runs at 1/(total-warmup) of the way
    total = epochs * -(-150 // batch)
    expected_last = (1e-2 - LR_END) / (total - warmup) + LR_END
    assert result.history[-1]["learning_rate"] == pytest.approx(expected_last, rel=1e-4)
    assert result.params["kernel"].shape == (6, 3) and result.params["bias"].shape == (3,)


def test_same_seed_same_probe_other_seed_other_probe():
    rng = np.random.default_rng(1)
    x, y = _blobs(rng, 90, num_classes=2, num_features=5, separation=1.5)
    kwargs = dict(num_classes=2, epochs=3, batch_size=16, warmup_steps=2)
    a = train_linear_probe(x[:60], y[:60], x[60:], y[60:], seed=7, **kwargs)
    b = train_linear_probe(x[:60], y[:60], x[60:], y[60:], seed=7, **kwargs)
    c = train_linear_probe(x[:60], y[:60], x[60:], y[60:], seed=8, **kwargs)
    assert a.history == b.history
    np.testing.assert_array_equal(a.params["kernel"], b.params["kernel"])
    assert not np.allclose(a.params["kernel"], c.params["kernel"])


def test_accuracy_agrees_with_least_squares_classifier():
    """On overlapping Gaussian classes (~93 % Bayes accuracy) both linear rules are near-optimal."""
    rng = np.random.default_rng(2)
    x, y = _blobs(rng, 1200, num_classes=3, num_features=4, separation=2.5)
    train_x, train_y, valid_x, valid_y = x[:600], y[:600], x[600:], y[600:]
    design = np.hstack([train_x, np.ones((600, 1), np.float32)]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, np.eye(3)[train_y], rcond=None)
    valid_design = np.hstack([valid_x, np.ones((600, 1))])
    least_squares = float(np.mean(np.argmax(valid_design @ coef, axis=1) == valid_y))
    result = train_linear_probe(
        train_x,
        train_y,
        valid_x,
        valid_y,
        num_classes=3,
        epochs=15,
        batch_size=32,
        warmup_steps=10,
        seed=0,
        learning_rate=1e-2,
    )
    assert 0.75 < least_squares < 0.95
    assert abs(result.valid_accuracy - least_squares) <= 0.03, (
        result.valid_accuracy,
        least_squares,
    )


GOOD = dict(
    train_x=np.zeros((8, 3), np.float32),
    train_y=np.zeros(8, np.int32),
    valid_x=np.zeros((4, 3), np.float32),
    valid_y=np.zeros(4, np.int32),
)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            dict(train_x=np.zeros(8, np.float32)),
            r"train_x must be a 2-D \[examples, features\] array",
        ),
        (dict(train_y=np.zeros(7, np.int32)), r"train_y must have shape \(8,\) to match train_x"),
        (dict(valid_x=np.zeros((4, 5), np.float32)), "valid_x has 5 features but train_x has 3"),
        (dict(valid_y=np.array([0, 1, 3, 0])), r"valid_y\[2\] = 3 is outside \[0, num_classes=3\)"),
        (dict(train_y=np.zeros(8, np.float32)), "train_y must hold integer class ids"),
        (
            dict(train_x=np.full((8, 3), np.nan, np.float32)),
            r"train_x\[0\] has a non-finite feature",
        ),
        (dict(num_classes=1), "num_classes must be >= 2"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(epochs=2.5), "epochs must be an integer"),
        (
            dict(warmup_steps=50),
            r"warmup_steps \(50\) must be fewer than the total number of updates.* = 2",
        ),
    ],
)
def test_bad_inputs_are_named(override, message):
    args = {
        **GOOD,
        "num_classes": 3,
        "epochs": 2,
        "batch_size": 8,
        "warmup_steps": 0,
        "seed": 0,
        **override,
    }
    with pytest.raises(ProbeError, match=message):
        train_linear_probe(
            args.pop("train_x"),
            args.pop("train_y"),
            args.pop("valid_x"),
            args.pop("valid_y"),
            **args,
        )
