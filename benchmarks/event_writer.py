"""Benchmark: what TensorBoard event files cost a training job (`train.events`).

    python benchmarks/event_writer.py [--quick]

1. Start-up, in fresh processes (median of 3): importing the project's event writer and
   opening an event file, against the named baseline tensorboard's own `EventFileWriter`
   (which goes through `tf.io.gfile`, i.e. imports TensorFlow when it is installed, as it is
   for seqio), and, when installed, tensorboardX's `SummaryWriter` (which imports torch when
   torch is installed).
2. Per metrics line: `MetricsWriter.write` with events against JSON lines only, same record
   (14 numbers, the shape of a T5 train line), same process.
3. A resume's rebuild: replaying N kept lines into a fresh event directory.

The last line is one JSON object of named figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline_lib.train import events, metrics  # noqa: E402

RECORD = {"step": 0, "split": "train", "loss": 0.1, "nll": 0.1, "z_loss": 0.0, "accuracy": 0.97,
          "num_tokens": 21753.0, "learning_rate": 0.02, "grad_norm": 876.6, "steps_per_s": 4.6,
          "tokens_per_s": 2007.3, "mfu": 0.01, "a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}

STARTUP = {
    "project_writer": "from pathlib import Path; from pipeline_lib.train.events import "
                      "EventWriter; EventWriter(Path({d!r}))",
    "tensorboard_EventFileWriter": "from tensorboard.summary.writer.event_file_writer import "
                                   "EventFileWriter; EventFileWriter({d!r})",
    "tensorboardX_SummaryWriter": "from tensorboardX import SummaryWriter; SummaryWriter({d!r})",
}


def startup_seconds(code: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code.format(d=d + "/tb")], check=True,
                           capture_output=True, cwd=Path(__file__).resolve().parents[1])
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def per_line_seconds(tensorboard: bool, n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        writer = metrics.MetricsWriter(Path(d) / "metrics.jsonl", tensorboard=tensorboard)
        writer.begin(None)
        t = time.perf_counter()
        for step in range(1, n + 1):
            writer.write({**RECORD, "step": step})
        seconds = (time.perf_counter() - t) / n
        writer.close()
    return seconds


def rebuild_seconds(n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        events.EventWriter(Path(d) / "tb", [{**RECORD, "step": s} for s in range(1, n + 1)]).close()
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats and lines")
    args = ap.parse_args()
    repeats, lines = (1, 300) if args.quick else (3, 2000)
    figures: dict[str, float] = {}
    for name, code in STARTUP.items():
        if name.startswith("tensorboardX") and importlib.util.find_spec("tensorboardX") is None:
            print(f"{name}: not installed, skipped")
            continue
        figures[f"startup_{name}_s"] = startup_seconds(code, repeats)
        print(f"start-up (fresh python, import + open a file), {name}: "
              f"{figures[f'startup_{name}_s']:.2f} s")
    base = figures["startup_tensorboard_EventFileWriter_s"]
    figures["startup_ratio_vs_tensorboard_EventFileWriter"] = (
        base / figures["startup_project_writer_s"])
    ratio = figures["startup_ratio_vs_tensorboard_EventFileWriter"]
    print(f"  the project's writer starts {ratio:.1f}x faster than the baseline "
          "tensorboard EventFileWriter")
    jsonl, both = per_line_seconds(False, lines), per_line_seconds(True, lines)
    figures.update(jsonl_line_ms=1e3 * jsonl, jsonl_plus_events_line_ms=1e3 * both,
                   events_cost_ratio_vs_jsonl_only=both / jsonl)
    print(f"per metrics line: JSON only {1e3 * jsonl:.3f} ms, JSON + events {1e3 * both:.3f} ms "
          f"({both / jsonl:.1f}x)")
    figures["rebuild_1000_lines_s"] = rebuild_seconds(1000) if not args.quick else (
        rebuild_seconds(300) * 1000 / 300)
    print("resume: rebuilding the events of 1000 kept lines: "
          f"{figures['rebuild_1000_lines_s']:.2f} s")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
