"""TensorBoard event files written by MetricsWriter: the scalars of metrics.jsonl, live, and a
resume that leaves no duplicate step (the SIGKILL case is tests/test_train_resume.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pipeline_lib.train import events, metrics


def _jsonl_scalars(path: Path) -> dict:
    return {
        (tag, r["step"]): float(np.float32(v))
        for r in map(json.loads, path.read_text().splitlines())
        for tag, v in events.scalars(r).items()
    }


def _event_scalars(directory: Path) -> dict:
    found = events.read_events(directory)
    keys = [(tag, step) for tag, step, _ in found]
    assert len(keys) == len(set(keys)), "a (tag, step) is in the event files twice"
    return {(tag, step): v for tag, step, v in found}


def test_scalars_are_the_finite_numbers_of_a_line_tagged_by_split():
    record = {"step": 3, "split": "eval", "accuracy": 0.5, "loss": None, "num_tokens": 12,
              "event": "nonfinite", "flag": True, "nan": float("nan")}
    assert events.scalars(record) == {"eval/accuracy": 0.5, "eval/num_tokens": 12.0}
    assert events.events_dir(Path("d/metrics.3.jsonl")) == Path("d/metrics.3.tb")


def test_every_line_is_in_the_events_at_once_and_a_resume_rebuilds_them(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = metrics.MetricsWriter(path)
    writer.begin(None)
    for step in range(1, 7):
        writer.write({"step": step, "split": "train", "loss": 1 / step, "learning_rate": 0.1})
        # flushed at each line: visible before the writer is closed
        assert _event_scalars(tmp_path / "metrics.tb")[("train/loss", step)] == pytest.approx(
            1 / step)
    writer.write({"step": 6, "split": "eval", "accuracy": float("nan"), "loss": 0.3})
    assert _event_scalars(tmp_path / "metrics.tb") == _jsonl_scalars(path)

    # a second attempt restored at step 4 (the first one was never closed: killed)
    resumed = metrics.MetricsWriter(path)
    resumed.begin(4)
    resumed.write({"step": 6, "split": "train", "loss": 9.0})
    got = _event_scalars(tmp_path / "metrics.tb")
    assert got == _jsonl_scalars(path)
    assert got[("train/loss", 6)] == 9.0 and ("eval/loss", 6) not in got
    assert sorted({s for _, s in got}) == [1, 2, 3, 4, 6]
    resumed.close()
    writer.close()

    # a fresh start (no checkpoint) drops the stale events with the stale lines
    fresh = metrics.MetricsWriter(path)
    fresh.begin(None)
    assert events.read_events(tmp_path / "metrics.tb") == [] and path.read_text() == ""
    fresh.close()
    assert not list(tmp_path.glob(".*tmp")), "no temporary directory is left behind"


def test_a_record_cut_by_sigkill_ends_the_file_and_a_bit_flip_is_caught(tmp_path):
    writer = events.EventWriter(tmp_path / "tb")
    for step in (1, 2):
        writer.write({"step": step, "split": "train", "loss": float(step)})
    writer.close()
    live, = (tmp_path / "tb").glob("*.live")
    data = live.read_bytes()
    live.write_bytes(data[:-3])  # the last record cut short
    assert events.read_scalars(tmp_path / "tb") == {"train/loss": {1: 1.0}}
    flipped = bytearray(data)
    flipped[-6] ^= 0xFF  # inside the last record's payload: its CRC no longer matches
    live.write_bytes(bytes(flipped))
    assert events.read_scalars(tmp_path / "tb") == {"train/loss": {1: 1.0}}


def test_only_process_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics.jax, "process_index", lambda: 1)
    writer = metrics.MetricsWriter(tmp_path / "metrics.jsonl")
    writer.begin(None)
    writer.write({"step": 1, "split": "train", "loss": 1.0})
    writer.close()
    assert list(tmp_path.iterdir()) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _scalars_over_http(port: int, run: str, tag: str):
    url = f"http://localhost:{port}/data/plugin/scalars/scalars?run={run}&tag={tag}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return [(step, value) for _, step, value in json.loads(response.read())]
    except (OSError, ValueError):
        return None


def _wait_for(port, run, tag, want, timeout=60.0):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = _scalars_over_http(port, run, tag)
        if got == want:
            return got
        time.sleep(0.5)
    return got


@pytest.mark.slow
def test_a_live_tensorboard_shows_a_running_job_and_its_resume(tmp_path):
    """The real TensorBoard server (its default loader) on a run being written: a new line
    appears while the writer is open, and after a resume from step 4 the killed attempt's
    step 6 is gone and the new step 5 is shown."""
    path = tmp_path / "run" / "metrics.jsonl"
    writer = metrics.MetricsWriter(path)
    writer.begin(None)
    for step in range(1, 7):
        writer.write({"step": step, "split": "train", "loss": float(step)})
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(tmp_path),
         "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        run = "run/metrics.tb"
        first = [(s, float(s)) for s in range(1, 7)]
        # the server's start-up (it imports TensorFlow when installed) can take a while on a
        # loaded machine; later reloads take about --reload_interval
        assert _wait_for(port, run, "train/loss", first, timeout=180) == first
        writer.write({"step": 7, "split": "train", "loss": 7.0})
        assert _wait_for(port, run, "train/loss", first + [(7, 7.0)]) == first + [(7, 7.0)]
        resumed = metrics.MetricsWriter(path)  # the first attempt "killed" (never closed)
        resumed.begin(4)
        resumed.write({"step": 5, "split": "train", "loss": 50.0})
        want = [(s, float(s)) for s in range(1, 5)] + [(5, 50.0)]
        assert _wait_for(port, run, "train/loss", want) == want
        resumed.close()
        writer.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
