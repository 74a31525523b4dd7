"""Orbax checkpoints: round trip, keep-last-N, half-written steps, clear errors; param export."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pipeline_lib.train import checkpoint as ck

jax.config.update("jax_disable_most_optimizations", True)


def _state(scale: float = 1.0) -> dict:
    params = {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3) * scale, "bias": jnp.ones(3)}}
    return {
        "params": params,
        "opt_state": optax.adamw(1e-3).init(params),
        "step": jnp.int32(5),
        "rng": jax.random.key_data(jax.random.key(3)),
    }


def test_round_trip_with_meta(tmp_path):
    state = _state()
    meta = {"data": {"mixed": 12, "positions": {"copy": [1, 4]}}, "best": None, "seed": 3}
    with ck.Checkpointer(tmp_path / "ckpt") as c:
        assert c.latest_step() is None
        c.save(5, state, meta)
        c.wait()
    with ck.Checkpointer(tmp_path / "ckpt") as c:
        assert c.latest_step() == 5
        restored, got_meta = c.restore(ck.abstract_like(state))
    assert got_meta == meta
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_keeps_last_n_plus_period(tmp_path):
    with ck.Checkpointer(tmp_path, keep=2, keep_period=2, async_save=False) as c:
        for step in range(1, 6):
            c.save(step, _state(step), {"step": step})
        c.save(5, _state(99.0), {"step": 99})  # an existing step is not overwritten
        c.wait()
        assert c.all_steps() == [2, 4, 5]
        restored, meta = c.restore(ck.abstract_like(_state()), 4)
    assert meta == {"step": 4}
    assert float(restored["params"]["dense"]["kernel"][1, 2]) == 20.0


def test_half_written_step_is_never_latest(tmp_path):
    with ck.Checkpointer(tmp_path, async_save=False) as c:
        c.save(3, _state(), {})
    # what a SIGKILL during a save leaves behind: orbax's temporary directory for step 7
    tmp = tmp_path / "7.orbax-checkpoint-tmp-1234567"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "garbage").write_bytes(b"\x00" * 10)
    with ck.Checkpointer(tmp_path) as c:
        assert c.latest_step() == 3
        c.restore(ck.abstract_like(_state()))
    assert not tmp.exists()  # cleaned up on open


def test_missing_directory_and_file_in_the_way(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ck.CheckpointError) as e:
        ck.Checkpointer(missing, create=False)
    assert str(e.value) == f"{missing}: checkpoint directory not found"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ck.CheckpointError, match=f"^{a_file}: .*not a directory$"):
        ck.Checkpointer(a_file)
    with (
        ck.Checkpointer(tmp_path / "empty") as c,
        pytest.raises(ck.CheckpointError, match="no checkpoint"),
    ):
        c.restore(ck.abstract_like(_state()))


def test_gs_checkpoint_directory_is_refused_not_folded_into_a_local_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for make in (lambda: ck.Checkpointer("gs://bucket/ckpt"),
                 lambda: ck.run_directory("gs://bucket/ckpt", {"lr": 1})):
        with pytest.raises(ck.CheckpointError, match="^gs://bucket/ckpt: checkpoint "
                           "directories must be local"):
            make()
    assert not (tmp_path / "gs:").exists()  # Path() would have made a local 'gs:' directory


def test_local_params_path_is_read_as_is_and_a_missing_one_named(tmp_path):
    ck.export_params({"w": jnp.ones(2)}, tmp_path / "p.npz")
    assert list(ck.load_params(str(tmp_path / "p.npz"))) == ["w"]
    with pytest.raises(ck.CheckpointError, match="parameter file not found"):
        ck.load_params(str(tmp_path / "none.npz"))


def test_corrupt_checkpoint_gives_one_line_naming_the_path(tmp_path):
    with ck.Checkpointer(tmp_path, async_save=False) as c:
        c.save(2, _state(), {"a": 1})
    state_dir = tmp_path / "2" / "state"
    for root, _, files in os.walk(state_dir):
        for name in files:
            if name not in ("_CHECKPOINT_METADATA", "commit_success.txt"):
                path = os.path.join(root, name)
                with open(path, "r+b") as f:
                    f.truncate(max(os.path.getsize(path) // 3, 1))
    with ck.Checkpointer(tmp_path) as c, pytest.raises(ck.CheckpointError) as e:
        c.restore(ck.abstract_like(_state()))
    message = str(e.value)
    assert message.startswith(f"{tmp_path / '2'}: corrupt or incompatible checkpoint")
    assert "\n" not in message


def test_export_params_atomic_and_loadable(tmp_path):
    from flax import nnx

    class Tiny(nnx.Module):
        def __init__(self, rngs):
            self.encoder = nnx.Linear(2, 3, rngs=rngs)
            self.norm = nnx.LayerNorm(3, rngs=rngs)

    abstract = nnx.state(nnx.eval_shape(lambda: Tiny(nnx.Rngs(0))), nnx.Param)
    rng = np.random.default_rng(0)  # values without running the (eager, slow) initialisers
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), abstract)
    out = tmp_path / "out" / "params.npz"
    ck.export_params(params, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["params.npz"]  # no temp file left
    flat = ck.load_params(out)
    assert sorted(flat) == ["encoder/bias", "encoder/kernel", "norm/bias", "norm/scale"]
    back = ck.load_params(out, like=params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        assert np.array_equal(a, b)
    ck.export_params({"encoder": {"kernel": jnp.zeros((2, 3), jnp.bfloat16)}}, out)
    assert ck.load_params(out)["encoder/kernel"].dtype == np.float32
    with pytest.raises(ck.CheckpointError, match="no parameter 'encoder/bias'"):
        ck.load_params(out, like=params)
    with pytest.raises(ck.CheckpointError, match="not found"):
        ck.load_params(tmp_path / "missing.npz")
