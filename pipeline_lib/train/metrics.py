"""What a training run logs and reports: metric lines, throughput/MFU, best eval and summary.

`loop.train` and `many.train_many` write one JSON line per log step ("split": "train") and
per evaluation ("split": "eval") through `MetricsWriter` (which mirrors them into TensorBoard
event files, `events`), keep the best evaluation by `select_metric` (`improves`) and end with
the `run_summary` dict. Everything here is host-side Python over
numbers already fetched from the devices; nothing is jitted.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from pipeline_lib.files import atomic_write_text


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Per-token loss and accuracy from summed counts (whatever sums are present)."""
    out = {}
    tokens = sums.get("num_tokens")
    if tokens:
        out["loss"] = sums["loss_sum"] / tokens
        if "nll_sum" in sums:
            out["nll"] = sums["nll_sum"] / tokens
        if "z_loss_sum" in sums:
            out["z_loss"] = sums["z_loss_sum"] / tokens
        if "num_correct" in sums:
            out["accuracy"] = sums["num_correct"] / tokens
        out["num_tokens"] = tokens
    else:
        out["loss"] = sums["loss_sum"]
    return out


# --- the metrics file ----------------------------------------------------------------------


def truncate_metrics(path: Path, keep_through: int | None) -> list[dict]:
    """Drop metric lines after the restored step (they were logged by the killed attempt);
    returns the kept lines."""
    if not path.exists():
        return []
    kept: list[tuple[str, dict]] = []
    if keep_through is not None:
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by SIGKILL
            if record.get("step", 0) <= keep_through:
                kept.append((line, record))
    atomic_write_text(path, "".join(line + "\n" for line, _ in kept))
    return [record for _, record in kept]


def json_safe(d: dict) -> dict:
    """NaN/Inf floats -> None (strict JSON)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


class MetricsWriter:
    """A run's metrics: JSON lines, mirrored into TensorBoard event files (`train.events`,
    next to the JSON-lines file). Only process 0 writes (every process computes the same
    values).

    `begin(restored_step)` starts an attempt: the JSON lines after the restored step (None: a
    fresh run, all of them) are dropped and the event files rebuilt from the kept ones, so a
    resumed run continues both without duplicate steps. Every `write` flushes both.
    """

    def __init__(self, path: Path | None, *, tensorboard: bool = True):
        self.path = Path(path) if path is not None and jax.process_index() == 0 else None
        self.tensorboard = tensorboard
        self.events = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def begin(self, restored_step: int | None) -> None:
        if self.path is None:
            return
        kept = truncate_metrics(self.path, restored_step)
        if self.tensorboard:
            from pipeline_lib.train.events import EventWriter, events_dir

            self.close()
            self.events = EventWriter(events_dir(self.path), kept)

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        record = json_safe(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
        if self.events is not None:
            self.events.write(record)

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None


# --- train log lines -----------------------------------------------------------------------


def _is_sum(name: str) -> bool:
    """Step metrics that are token sums (add over steps) rather than per-step values."""
    return name.endswith("_sum") or name.startswith("num_")


def train_record(host: list[dict]) -> dict:
    """One log line from the host copies of the steps' metrics since the previous line."""
    sums = {k: float(sum(m[k] for m in host)) for k in host[0] if _is_sum(k)}
    return {
        **summarize(sums),
        "learning_rate": float(host[-1]["learning_rate"]),
        "grad_norm": float(np.mean([m["grad_norm"] for m in host])),
    }


def format_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)


def progress_line(record: dict, num_steps: int) -> str:
    parts = [f"step {record['step']}/{num_steps}", f"loss {record['loss']:.4f}"]
    if "accuracy" in record:
        parts.append(f"acc {record['accuracy']:.4f}")
    parts += [f"lr {record['learning_rate']:.3g}", f"grad_norm {record['grad_norm']:.3g}"]
    if "tokens_per_s" in record:
        parts.append(f"{record['tokens_per_s']:.0f} tok/s")
    if "mfu" in record:
        parts.append(f"mfu {record['mfu']:.2%}")
    return " ".join(parts)


class Throughput:
    """Steps and loss tokens per second (and MFU) between log lines, after the first step.

    MFU = achieved model FLOPs / (peak_flops_per_device x devices); the model FLOPs come from
    `flops_per_step` (fixed-shape batches: e.g. 3 x the forward matmul FLOPs of one batch) or,
    failing that, `flops_per_token` x loss tokens.
    """

    def __init__(
        self,
        peak_flops_per_device: float | None = None,
        flops_per_step: float | None = None,
        flops_per_token: float | None = None,
    ):
        peak = peak_flops_per_device
        self.peak = peak * jax.device_count() if peak else None
        self.flops_per_step, self.flops_per_token = flops_per_step, flops_per_token
        self.started = False
        self.pending: list = []  # num_tokens (device scalar or None) of each timed step
        self.t0 = 0.0

    def start(self) -> None:
        self.started, self.t0 = True, time.perf_counter()

    def read(self) -> dict:
        """Rates since the previous read (the caller has synced, the values are ready)."""
        now = time.perf_counter()
        if not self.pending or now <= self.t0:
            return {}
        seconds = now - self.t0
        out = {"steps_per_s": len(self.pending) / seconds}
        tokens = [float(t) for t in self.pending if t is not None]
        if tokens:
            out["tokens_per_s"] = sum(tokens) / seconds
        if self.peak and self.flops_per_step:
            out["mfu"] = out["steps_per_s"] * self.flops_per_step / self.peak
        elif self.peak and self.flops_per_token and tokens:
            out["mfu"] = out["tokens_per_s"] * self.flops_per_token / self.peak
        self.pending, self.t0 = [], now
        return out


# --- best evaluation, early stop, summary --------------------------------------------------


def improves(record: dict, best: dict | None, select_metric: str) -> bool:
    """Whether the eval `record` beats `best` ({"step", "metrics"} or None) on `select_metric`
    (higher is better; a record without the metric, or with a NaN/Inf value, never does: a
    diverged evaluation must never become the "best" checkpoint)."""
    value = record.get(select_metric)
    if value is None or not math.isfinite(value):
        return False
    return best is None or value > best["metrics"][select_metric]


def reached(last_eval: dict | None, select_metric: str, stop_at: float | None) -> bool:
    """Whether the last evaluation's `select_metric` reached `stop_at` (None: never)."""
    return (
        stop_at is not None
        and last_eval is not None
        and last_eval["metrics"].get(select_metric, -math.inf) >= stop_at
    )


def run_summary(
    step: int, best: dict | None, last_eval: dict | None, resumed_from: int | None
) -> dict:
    """The `summary_path` JSON of a finished run."""
    return {"step": step, "best": best, "last_eval": last_eval, "resumed_from": resumed_from}
