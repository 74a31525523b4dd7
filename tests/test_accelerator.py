"""Accelerator smoke test: a few real training steps of a (tiny) T5 in bfloat16, sharded over
every device on a ('data', 'model') mesh, through the training engine as the pretrain verbs
use it.

`pytest -m accelerator` runs it on a GPU/TPU machine (envs/cuda.yaml, envs/tpu.yaml: the
same JAX as the CPU install) with the engine's default compute dtype, which is bfloat16 there;
without an accelerator it is skipped with the reason. The CPU variant runs the same steps
on 8 host-CPU devices (a subprocess: XLA_FLAGS must be set before JAX starts) with bfloat16
requested explicitly, so the sharded bf16 path is exercised on every machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
STEPS = 8


def sharded_bf16_steps(workdir: str, compute_dtype: str | None = None) -> dict:
    """Train STEPS steps; what the checks need, as JSON-able values (printed by the CPU run)."""
    import flax.nnx as nnx
    import jax
    import numpy as np
    import test_train_support as support

    from pipeline_lib.models import t5
    from pipeline_lib.models.configs import t5_config
    from pipeline_lib.train import data, loop, mesh, optim

    model_axis = 2 if jax.device_count() % 2 == 0 else 1
    m = mesh.make_mesh(model_axis)
    cfg = t5_config("t5_laptop", prefix="test", vocab_size=32, d_model=32, num_heads=2,
                    head_dim=16, d_ff=64, num_encoder_layers=1, num_decoder_layers=1)
    graphdef, params, rest = t5.split_model(t5.T5(cfg, rngs=nnx.Rngs(params=0)))
    base = loop.make_token_loss_fn(t5.t5_batch_forward(graphdef, rest))
    seen = set()

    def loss_fn(p, batch, rng):  # runs at trace time: the dtype the step computes in
        seen.update(str(x.dtype) for x in jax.tree.leaves(p))
        return base(p, batch, rng)

    tx, schedule = optim.make_optimizer(optim.OptimizerConfig(
        name="adamw", schedule="constant", learning_rate=3e-3, warmup_steps=0))
    batch = 4 * m.shape["data"]
    metrics = Path(workdir) / "metrics.jsonl"
    result = loop.train(
        loop.TrainConfig(num_steps=STEPS, log_every=1, save_every=STEPS,
                         compute_dtype=compute_dtype, model_parallelism=model_axis),
        loss_fn=loss_fn, params=params, optimizer=tx, schedule=schedule,
        train_data=data.Seq2SeqPipeline(support.toy_corpus(), batch, support.LENGTHS, seed=0),
        ckpt_dir=Path(workdir) / "ckpt", metrics_path=metrics, mesh=m,
    )
    leaves = support.flatten(result.params)
    placed = mesh.shard_batch(next(data.Seq2SeqPipeline(
        support.toy_corpus(), batch, support.LENGTHS, seed=0)), m)
    return {
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "mesh": dict(m.shape),
        "compute_dtypes": sorted(seen),
        "param_dtypes": sorted({str(x.dtype) for x in leaves.values()}),
        "finite": all(bool(np.isfinite(np.asarray(x)).all()) for x in leaves.values()),
        "split_kernels": sum("model" in tuple(x.sharding.spec) for x in leaves.values()),
        "batch_devices": len(placed["encoder_input_tokens"].sharding.device_set),
        "losses": [r["loss"] for r in map(json.loads, metrics.open()) if r["split"] == "train"],
    }


def check(out: dict) -> None:
    assert out["compute_dtypes"] == ["bfloat16"], out  # the step computes in bf16 ...
    assert out["param_dtypes"] == ["float32"], out  # ... on float32 master parameters
    assert out["finite"]
    assert out["batch_devices"] == out["devices"]  # the batch is split over every device
    if out["mesh"]["model"] > 1:
        assert out["split_kernels"] > 0, out  # and kernels over the 'model' axis
    losses = out["losses"]
    assert len(losses) == STEPS and losses[-1] < losses[0], losses  # it learns


@pytest.mark.accelerator
def test_bf16_sharded_steps_on_the_accelerator(tmp_path):
    import jax

    backend = jax.default_backend()
    if backend not in ("gpu", "tpu"):
        pytest.skip(f"no GPU/TPU: JAX {jax.__version__} runs on {backend} "
                    f"({jax.device_count()} device(s)); run on an accelerator machine with "
                    "envs/cuda.yaml or envs/tpu.yaml")
    sys.path.insert(0, str(TESTS))
    out = sharded_bf16_steps(str(tmp_path))  # the engine's default dtype: bf16 here
    assert out["backend"] == backend
    check(out)


@pytest.mark.slow
def test_bf16_sharded_steps_on_eight_cpu_devices(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8 "
               "--xla_cpu_use_fusion_emitters=false",  # ~3x faster CPU compiles
               JAX_DISABLE_MOST_OPTIMIZATIONS="true")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    code = ("import json, test_accelerator as t; "
            f"print(json.dumps(t.sharded_bf16_steps({str(tmp_path)!r}, 'bfloat16')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=TESTS, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8 and out["mesh"] == {"data": 4, "model": 2}, out
    check(out)


def test_accelerator_envs_pin_the_jax_of_the_cpu_install():
    """envs/cuda.yaml and envs/tpu.yaml must train with the JAX the tests ran (pyproject)."""
    import re
    import tomllib

    import yaml

    repo = TESTS.parent
    deps = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    (cpu,) = [re.fullmatch(r"jax\[cpu\]==(\S+)", d).group(1) for d in deps
              if d.startswith("jax[cpu]==")]
    for name, extra in (("cuda", "cuda12"), ("tpu", "tpu")):
        env = yaml.safe_load((repo / "envs" / f"{name}.yaml").read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        assert f"jax[{extra}]=={cpu}" in pip, (name, pip)
        assert "-e ../" in pip  # the same pipeline_lib (and its pinned dependency ranges)
