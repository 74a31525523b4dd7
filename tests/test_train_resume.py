"""A training job killed with SIGKILL and rerun ends with bitwise-identical parameters.

Attempt 1 is a fresh `python` process running `test_train_support.run_training` (packed
mixed data, dropout, z-loss, gradient accumulation, AdamW, async orbax checkpoints and evals
every 4 steps), killed with SIGKILL once a checkpoint is committed on disk. Attempt 2, another
fresh process, resumes it to the end and then (to save a third JAX start-up) trains the
uninterrupted reference from scratch in its own directories. The metrics file and the
TensorBoard event files of the resumed run hold every step once, like the reference's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline_lib.train.events import read_events, scalars

TESTS = Path(__file__).resolve().parent
NUM_STEPS = 8


def _cmd(workdir: Path, *runs: tuple[str, float]) -> list[str]:
    """python -c running `run_training` once per (name, sleep per batch), in order."""
    code = "import test_train_support as t"
    for name, sleep in runs:
        code += (
            f"; t.run_training({str(workdir)!r}, num_steps={NUM_STEPS}, sleep={sleep}, "
            f"name={name!r})"
        )
    return [sys.executable, "-c", code]


def _env(cache_dir: Path) -> dict:
    env = dict(os.environ)
    # identical flags in every attempt; fusion emitters off halves CPU compile time here
    env["XLA_FLAGS"] = "--xla_cpu_use_fusion_emitters=false"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    # the processes compile the same step: share it through JAX's persistent cache,
    # which the trainer leaves alone (it is the CLI's JAX_COMPILATION_CACHE_DIR)
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
    return env


def _committed_steps(ckpt: Path) -> list[int]:
    # orbax writes "<step>.orbax-checkpoint-tmp-*" and renames it to "<step>" when complete
    return sorted(int(p.name) for p in ckpt.glob("*") if p.name.isdigit()) if ckpt.exists() else []


def _logged(path: Path) -> list[tuple[int, str]]:
    """(step, split) of every complete line of a metrics file (a line cut by SIGKILL is not)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append((row["step"], row["split"]))
    return out


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    env = _env(tmp_path / "jax_cache")

    # attempt 1: killed with SIGKILL after a checkpoint is committed, before the end
    proc = subprocess.Popen(
        _cmd(tmp_path, ("run", 0.2)),
        cwd=TESTS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        # killed after the checkpoint at step 4 and the log line of step 6: the metrics and
        # event files then hold a step the resumed attempt logs again
        if any(s >= 4 for s in _committed_steps(tmp_path / "run_ckpt")) and any(
            s > 4 for s, _ in _logged(tmp_path / "run_metrics.jsonl")
        ):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _committed_steps(tmp_path / "run_ckpt")
    assert killed_at and max(killed_at) < NUM_STEPS
    killed_events = read_events(tmp_path / "run_metrics.tb")
    assert max(step for _, step, _ in killed_events) > max(killed_at)
    assert not (tmp_path / "run_params.npz").exists()

    # attempt 2: resumes from the latest checkpoint and finishes; then the reference run
    rerun = subprocess.run(
        _cmd(tmp_path, ("run", 0.0), ("ref", 0.0)),
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed, reference = (json.loads(x) for x in rerun.stdout.strip().splitlines()[-2:])
    assert resumed["step"] == NUM_STEPS == reference["step"]
    assert resumed["resumed_from"] is not None and 4 <= resumed["resumed_from"] < NUM_STEPS
    assert reference["resumed_from"] is None

    expected, got = _load(tmp_path / "ref_params.npz"), _load(tmp_path / "run_params.npz")
    assert expected.keys() == got.keys()
    for name in expected:
        assert np.array_equal(expected[name], got[name]), name
    best_ref, best_run = _load(tmp_path / "ref_best.npz"), _load(tmp_path / "run_best.npz")
    for name in best_ref:
        assert np.array_equal(best_ref[name], best_run[name]), name

    # the metrics file of the resumed run holds every step once, like the reference
    assert _logged(tmp_path / "run_metrics.jsonl") == _logged(tmp_path / "ref_metrics.jsonl")
    # ... and so do its TensorBoard events: each (tag, step) once, the scalars of its metrics
    # file (float32, TensorBoard's scalar type), the same tags and steps as the reference
    run_events = read_events(tmp_path / "run_metrics.tb")
    keys = [(tag, step) for tag, step, _ in run_events]
    assert len(keys) == len(set(keys))
    from_jsonl = {
        (tag, r["step"]): value
        for r in map(json.loads, (tmp_path / "run_metrics.jsonl").read_text().splitlines())
        for tag, value in scalars(r).items()
    }
    assert {(t, s): v for t, s, v in run_events} == {
        k: float(np.float32(v)) for k, v in from_jsonl.items()
    }
    ref_events = read_events(tmp_path / "ref_metrics.tb")
    assert sorted(keys) == sorted((tag, step) for tag, step, _ in ref_events)
    ref_summary = json.loads((tmp_path / "ref_summary.json").read_text())
    run_summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert run_summary["best"] == ref_summary["best"]
    assert any((tmp_path / "jax_cache").iterdir())
