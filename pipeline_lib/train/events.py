"""TensorBoard event files of a training run: the scalars of its metrics.jsonl, live.

`metrics.MetricsWriter` (the one place a run's metrics are written) mirrors every JSON line it
appends into an event file here, and flushes it at once, so `tensorboard --logdir results`
shows a running job. The events of `<dir>/metrics.jsonl` live in `<dir>/metrics.tb/` (of
`metrics.3.jsonl` in `metrics.3.tb/`: one TensorBoard run per metrics file, as TensorBoard
merges every event file of one directory into one run). The running metrics logs sit with the
checkpoints under `{results_dir}/ckpt/...`, so the events are under `results/` without any
family copying them.

Tags are `<split>/<name>` (`train/loss`, `eval/accuracy`, `train/tokens_per_s`); every number of
a line becomes one scalar at the line's step: the metrics.jsonl value rounded to float32, the
scalar plugin's type (TensorBoard's fast Rust loader, its default, silently drops float64
scalars; measured with tensorboard 2.21). metrics.jsonl keeps the exact values. Non-numbers
(the `event` marker, nulls that stand for NaN) are not scalars and are skipped.

Writer. TensorBoard's own pieces without its TensorFlow bridge: the `tensorboard` package's
protos, scalar-plugin metadata and `RecordWriter` (the TFRecord framing with masked CRCs)
over a plain file, written synchronously (no background thread: a line is on disk when
`write` returns). It imports neither TensorFlow nor torch, and the same package is the
viewer. The alternatives each pull a framework into every training job: clu's SummaryWriter
is `tf.summary`, tensorboard's `EventFileWriter` goes through `tf.io.gfile` (the real
TensorFlow whenever it is installed, as it is here for seqio), and tensorboardX imports
torch whenever torch is installed. `benchmarks/event_writer.py` measures the start-up of
each and what a metrics line costs with events.

Resume without duplicate steps: the event directory is a *derived view* of metrics.jsonl.
When a run starts or resumes, metrics.jsonl is truncated to the restored step and the
directory is rebuilt from the kept lines (one replay file, written into a temporary sibling
that replaces the old directory atomically), then a new file continues live. So the files on
disk never hold a step twice, whatever attempt was killed where, and they always agree with
metrics.jsonl. The replay file starts with a SessionLog START at step 0, TensorBoard's restart
marker: a TensorBoard left open across the resume shows the rebuilt curve, not the killed
attempt's points beside it (tests/test_events.py runs the real server). `read_events` /
`read_scalars` read a directory back.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from collections.abc import Iterable
from pathlib import Path

from pipeline_lib.files import atomic_directory

SKIP = ("step", "split", "event")


def events_dir(metrics_path: Path) -> Path:
    """Where the events of a JSON-lines metrics file go: `<dir>/<name minus .jsonl>.tb/`."""
    name = metrics_path.name.removesuffix(".jsonl")
    return metrics_path.with_name(f"{name}.tb")


def scalars(record: dict) -> dict[str, float]:
    """{tag: value} of one metrics line: every finite number (bools are not metrics)."""
    split = record.get("split", "train")
    return {
        f"{split}/{key}": float(value)
        for key, value in record.items()
        if key not in SKIP and isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value)
    }


def _scalar_event(record: dict, wall_time: float):
    """The Event of one metrics line (None when it has no scalar): float32 scalar tensors
    tagged for TensorBoard's scalar plugin."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
    from tensorboard.plugins.scalar import metadata

    values = [
        summary_pb2.Summary.Value(
            tag=tag,
            metadata=metadata.create_summary_metadata(display_name=tag, description=""),
            tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[value]),
        )
        for tag, value in scalars(record).items()
    ]
    if not values:
        return None
    return event_pb2.Event(
        wall_time=wall_time, step=int(record["step"]), summary=summary_pb2.Summary(value=values)
    )


class _EventFile:
    """One event file: TensorBoard's record framing over a plain append-only file."""

    def __init__(self, directory: Path, suffix: str):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        # TensorBoard's naming, which it sorts by: events.out.tfevents.<time>.<host>...
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}{suffix}")
        self._records = RecordWriter(open(Path(directory) / name, "xb"))
        self.add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add(self, event) -> None:
        self._records.write(event.SerializeToString())

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        if not self._records.closed:
            self._records.close()


class EventWriter:
    """The event files of one run; `replay` holds the metrics lines kept from earlier attempts."""

    def __init__(self, directory: Path, replay: Iterable[dict] = ()):
        from tensorboard.compat.proto import event_pb2

        self.directory = Path(directory)
        with atomic_directory(self.directory) as tmp:
            # ".0.replay" sorts before ".1.live" (TensorBoard reads a run's files in name
            # order; the names agree up to here when both are made within one second)
            replayed = _EventFile(tmp, ".0.replay")
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            replayed.add(event_pb2.Event(wall_time=time.time(), step=0, session_log=start))
            for record in replay:
                event = _scalar_event(record, time.time())
                if event is not None:
                    replayed.add(event)
            replayed.close()
        self._live = _EventFile(self.directory, ".1.live")

    def write(self, record: dict) -> None:
        event = _scalar_event(record, time.time())
        if event is not None:
            self._live.add(event)
            self._live.flush()

    def close(self) -> None:
        self._live.close()


def _records(path: Path) -> Iterable[bytes]:
    """The records of one event file; a record cut short (SIGKILL mid-write) or with a bad
    checksum ends the file."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    data = path.read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        end = pos + 12 + length + 4
        if end > len(data) or struct.unpack("<I", data[pos + 8 : pos + 12])[0] != masked_crc32c(
            header
        ):
            return
        payload = data[pos + 12 : pos + 12 + length]
        if struct.unpack("<I", data[end - 4 : end])[0] != masked_crc32c(payload):
            return
        yield payload
        pos = end


def read_events(directory: Path) -> list[tuple[str, int, float]]:
    """Every scalar (tag, step, value) of the event files in `directory`, in file-name order
    (TensorBoard's order) and then as written; duplicates, if any, are kept."""
    from tensorboard.compat.proto import event_pb2

    out = []
    for path in sorted(Path(directory).glob("events.out.tfevents.*")):
        for payload in _records(path):
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                number = value.tensor.float_val[0] if value.tensor.float_val else value.simple_value
                out.append((value.tag, int(event.step), float(number)))
    return out


def read_scalars(directory: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of `read_events` (a later value of a step replaces an earlier
    one, as TensorBoard shows it)."""
    out: dict[str, dict[int, float]] = {}
    for tag, step, value in read_events(directory):
        out.setdefault(tag, {})[step] = value
    return out
