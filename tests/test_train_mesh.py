"""Sharding: the same training code on 1 and 8 (host CPU) devices; jax.distributed only on request.

The 8-device run needs XLA_FLAGS set before JAX starts, so it runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
FLAGS = "--xla_force_host_platform_device_count=8 --xla_cpu_use_fusion_emitters=false"


def compare_meshes(workdir: str) -> None:
    """Train 3 steps on a 1-device mesh, an 8x1 data mesh and a 4x2 data x model mesh."""
    import test_train_support as support

    jax = support.configure_jax()
    from pipeline_lib.train import data, loop, mesh, optim

    assert jax.device_count() == 8, jax.devices()
    corpus = support.toy_corpus()
    params, forward = support.model_params(seed=2, dropout=0.1)
    results, specs = {}, {}
    for name, m in {
        "one": mesh.make_mesh(1, jax.devices()[:1]),
        "data8": mesh.make_mesh(1),
        "data4_model2": mesh.make_mesh(2),
    }.items():
        tx, schedule = optim.make_optimizer(
            optim.OptimizerConfig(
                name="adamw", schedule="constant", learning_rate=1e-3, warmup_steps=0
            )
        )
        result = loop.train(
            loop.TrainConfig(
                num_steps=3,
                log_every=3,
                save_every=3,
                grad_accum_steps=2,
                compiler_options=support.FAST_CPU_COMPILE,
            ),
            loss_fn=loop.make_token_loss_fn(forward, z_loss=1e-4),
            params=params,
            optimizer=tx,
            schedule=schedule,
            train_data=data.Seq2SeqPipeline(corpus, 16, support.LENGTHS, seed=0, pack=True),
            ckpt_dir=Path(workdir) / name,
            mesh=m,
        )
        results[name] = {k: np.asarray(v) for k, v in support.flatten(result.params).items()}
        specs[name] = {k: list(v.sharding.spec) for k, v in support.flatten(result.params).items()}
        batch = mesh.shard_batch(next(data.Seq2SeqPipeline(corpus, 16, support.LENGTHS, 0)), m)
        specs[name]["batch"] = list(batch["encoder_input_tokens"].sharding.spec)
        specs[name]["batch_devices"] = len(batch["encoder_input_tokens"].sharding.device_set)
    diffs = {
        name: max(
            float(np.max(np.abs(results[name][k] - results["one"][k]))) for k in results["one"]
        )
        for name in ("data8", "data4_model2")
    }
    print(json.dumps({"diffs": diffs, "specs": specs}), flush=True)


def test_eight_devices_match_one_device(tmp_path):
    env = dict(os.environ, XLA_FLAGS=FLAGS)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    code = f"import test_train_mesh as t; t.compare_meshes({str(tmp_path)!r})"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["diffs"]["data8"] <= 1e-5 and out["diffs"]["data4_model2"] <= 1e-5, out["diffs"]
    one, data8, both = out["specs"]["one"], out["specs"]["data8"], out["specs"]["data4_model2"]
    assert data8["batch"] == ["data"] and data8["batch_devices"] == 8
    assert one["batch_devices"] == 1
    assert data8["hidden/kernel"] == []  # replicated without a model axis
    # with a model axis, 2-D kernels are split along it (last dim if divisible), vectors not
    assert both["hidden/kernel"] == [None, "model"]
    assert both["hidden/bias"] == []


def test_distributed_initialize_only_when_configured(monkeypatch):
    """The argument mapping only (the real 2-process run is tests/test_distributed.py)."""
    import jax

    from pipeline_lib.train import mesh

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert mesh.initialize_distributed() is False
    assert calls == []
    with pytest.raises(ValueError, match="coordinator"):
        mesh.initialize_distributed(num_processes=4)
    with pytest.raises(ValueError, match="process's id"):
        mesh.initialize_distributed("10.0.0.1:1234", 4)
    with pytest.raises(ValueError, match="not in 0..3"):
        mesh.initialize_distributed("10.0.0.1:1234", 4, 4)
    assert mesh.initialize_distributed("10.0.0.1:1234", 4, 2, heartbeat_timeout_s=7) is True
    assert mesh.initialize_distributed("auto") is True  # SLURM / TPU pod: JAX detects it all
    assert calls == [
        {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2,
         "initialization_timeout": 300, "heartbeat_timeout_seconds": 7},
        {"coordinator_address": None, "num_processes": None, "process_id": None,
         "initialization_timeout": 300, "heartbeat_timeout_seconds": 100},
    ]


def test_a_failed_join_is_one_distributed_error(monkeypatch):
    import jax

    from pipeline_lib.errors import PipelineError
    from pipeline_lib.train import mesh

    def refuse(**kw):
        raise RuntimeError("UNAVAILABLE: connection refused\n  long C++ detail")

    monkeypatch.setattr(jax.distributed, "initialize", refuse)
    with pytest.raises(PipelineError, match=r"process 1 could not join the coordinator "
                       r"h:1 of 2 processes \(RuntimeError: UNAVAILABLE: connection refused\)$"):
        mesh.initialize_distributed("h:1", 2, 1)


def test_cli_distributed_flags_are_checked_before_jax_starts(tmp_path, capsys):
    """Either side of the verb; a bad value is one config error naming the flag or key."""
    from pipeline_lib.cli import main

    tiny = str(TESTS / "data" / "tiny_config.yaml")
    verb = ["transfer-pretrain", "--config", tiny, "--corpus", "c", "--out", "o",
            "--ckpt-dir", "k"]
    cases = [
        (["--coordinator", "nohost", *verb], "--coordinator: 'nohost' is not host:port"),
        ([*verb, "--coordinator", "h:70000"], "port must be 1..65535"),
        ([*verb, "--num-processes", "2"], "--num-processes: a multi-process run needs"),
        ([*verb, "--coordinator", "h:1", "--num-processes", "2"], "--process-id: needed"),
        ([*verb, "--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
         "--process-id: 2 is not in 0..1"),
        ([*verb, "--num-processes", "0"], "--num-processes: 0 must be at least 1"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("config error: ") and message in err, (argv, err)
        assert "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(tiny).read_text() + "execution: {coordinator: 'a b:1'}\n")
    assert main([*verb[:2], str(bad), *verb[3:]]) == 2
    assert "execution.coordinator: 'a b:1' is not host:port" in capsys.readouterr().err


def test_leaf_rule():
    from jax.sharding import PartitionSpec as P

    from pipeline_lib.train.mesh import leaf_spec

    assert leaf_spec((8, 6), 1) == P()
    assert leaf_spec((8, 6), 2) == P(None, "model")
    assert leaf_spec((8, 5), 2) == P("model", None)
    assert leaf_spec((7, 5), 2) == P()
    assert leaf_spec((8,), 2) == P()
    assert leaf_spec((2, 4, 4), 2) == P()
