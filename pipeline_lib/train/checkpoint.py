"""Resumable checkpoints (orbax v0 `CheckpointManager`) and atomic parameter export.

Where checkpoints live: in a directory the caller passes that is **not** a declared output of
the Snakemake rule (conventions §4.1: Snakemake deletes declared outputs before a job starts,
and `update()` rolls a failed job's directory back). The rule declares only the small final
artifacts (`export_params` below, metrics); a killed job leaves no output, the rerun finds the
checkpoint directory and resumes from its latest step.

Layout: `<dir>/<step>/{state,meta}`: `state` is the pytree (params, optimizer state, step, RNG
key data) saved with `StandardSave`, `meta` a JSON item (data-iterator position, best-eval
record, seed). Orbax writes a step into a temporary directory and renames it when complete,
so a job killed mid-save never leaves a half-written step that `latest_step()` would pick;
leftovers are deleted on the next start. Checkpoint directories are local (see `_local_dir`).

Multi-process runs (jax.distributed): every process calls save/restore; orbax's multi-host
protocol writes each array shard once (by the process holding its primary replica) and the
metadata and commit from process 0, so the directory must be on a filesystem all processes
share. Host-local values (the PRNG key data) are saved as numpy values, written once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp

from pipeline_lib.errors import PipelineError
from pipeline_lib.files import atomic_open, atomic_write_text
from pipeline_lib.train.optim import path_str

log = logging.getLogger(__name__)
PyTree = Any


class CheckpointError(PipelineError, RuntimeError):
    """A checkpoint directory or parameter file that is missing, unreadable or inconsistent."""


def _local_dir(directory: str | os.PathLike) -> Path:
    """A checkpoint directory on a (local or mounted) filesystem; a gs:// URI is refused.

    Orbax could write to gs:// itself, but its directory operations go through
    etils.epath -> tf.io.gfile, whose GCS client has Google's endpoint built in, so such
    checkpoints cannot be tested against a loopback GCS-API server; and `Path()` would fold
    the URI into a local directory named 'gs:'. Results reach GCS through Snakemake's storage
    plugin instead (README, "Results on GCS").
    """
    if str(directory).startswith(("gs://", "gs:/")):
        raise CheckpointError(
            f"{directory}: checkpoint directories must be local (or a mounted bucket, e.g. "
            "gcsfuse); send results to GCS with --default-storage-provider gcs"
        )
    return Path(directory)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _host_local(x) -> bool:
    """An array of this process alone in a multi-process run (e.g. the PRNG key data).

    Orbax's multi-host protocol saves only global arrays (each shard once, by its primary
    replica); a host-local array is the same on every process, so it is saved as a numpy value,
    which the primary process writes once.
    """
    if jax.process_count() == 1:
        return False
    sharding = getattr(x, "sharding", None)
    return sharding is not None and all(
        d.process_index == jax.process_index() for d in sharding.device_set
    )


def abstract_like(tree: PyTree) -> PyTree:
    """ShapeDtypeStructs (with shardings) of a live pytree: the restore target."""
    return jax.tree.map(
        lambda x: np.zeros(x.shape, x.dtype) if _host_local(x)
        else ocp.utils.to_shape_dtype_struct(x),
        tree,
    )


def _savable(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: np.asarray(x) if _host_local(x) else x, tree)


class Checkpointer:
    """Periodic, keep-last-N, auto-resumable checkpoints of (state pytree, JSON meta).

    keep: the newest `keep` steps are kept. keep_period: steps divisible by it are kept as
    well (e.g. the 5k/10k pre-training steps used downstream). async_save: writing to disk
    happens in a background thread after the arrays were copied to host memory.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 3,
        keep_period: int | None = None,
        async_save: bool = True,
        create: bool = True,
    ):
        self.directory = _local_dir(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(
                f"{self.directory}: checkpoint path exists but is not a directory"
            )
        if not create and not self.directory.is_dir():
            raise CheckpointError(f"{self.directory}: checkpoint directory not found")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            keep_period=keep_period,
            create=create,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
        )
        try:
            self._manager = ocp.CheckpointManager(
                self.directory.absolute(), options=options, item_names=("state", "meta")
            )
        except Exception as e:  # orbax raises assorted types for unreadable directories
            raise CheckpointError(
                f"{self.directory}: cannot open checkpoints ({_one_line(e)})"
            ) from e

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: PyTree, meta: dict) -> None:
        """Save `step` (a no-op if that step is already on disk)."""
        if step in self._manager.all_steps():
            return
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_savable(state)), meta=ocp.args.JsonSave(meta)
            ),
            force=True,  # the caller decides when to save
        )

    def restore(self, abstract_state: PyTree, step: int | None = None) -> tuple[PyTree, dict]:
        """(state, meta) of `step` (default: latest). `abstract_state` fixes structure and shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{self.directory}: no checkpoint to restore")
        if step not in self._manager.all_steps():
            raise CheckpointError(f"{self.directory}: no checkpoint for step {step}")
        where = self.directory / str(step)
        try:
            out = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:
            raise CheckpointError(
                f"{where}: corrupt or incompatible checkpoint ({_one_line(e)})"
            ) from e
        if out["meta"] is None or out["state"] is None:
            raise CheckpointError(f"{where}: checkpoint is missing its state or meta item")
        return out["state"], dict(out["meta"])

    def delete(self, step: int) -> None:
        self._manager.delete(step)

    def wait(self) -> None:
        """Block until background saves are on disk (call before exiting or raising)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- checkpoint directories keyed by what the run is ----------------------------------------

SPEC_FILE = "run_spec.json"


def run_directory(root: str | os.PathLike, spec: dict) -> Path:
    """`root/<hash of spec>`: the checkpoints of exactly this run.

    `spec` is everything the run's result depends on (config slice, data checksums, source
    checkpoint digest, seeds). A changed learning rate, data set or source checkpoint gives a
    new directory, so a rerun trains afresh instead of resuming a stale run and reporting its
    old result; the same spec finds its checkpoints again and resumes. The spec is stored in
    the directory (`run_spec.json`) and checked on reuse (a hash collision fails loudly).
    """
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    directory = _local_dir(root) / key
    spec_path = directory / SPEC_FILE
    if spec_path.is_file():
        if json.loads(spec_path.read_text()) != json.loads(text):
            raise CheckpointError(f"{directory}: holds the checkpoints of another run spec")
    else:
        atomic_write_text(spec_path, json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n")
    return directory


# --- exported parameters -------------------------------------------------------------------


def _to_host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        # multi-host with parameters split over hosts: a collective, every process calls it
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def flatten_params(params: PyTree) -> dict[str, np.ndarray]:
    """{'encoder/layers_0/attention/query/kernel': array, ...} (NNX `.value` dropped)."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        key = path_str(path)
        if key in flat:
            raise ValueError(f"two parameters flatten to the same name {key!r}")
        arr = _to_host(leaf)
        if arr.dtype == ml_dtypes.bfloat16:  # npz has no bfloat16; f32 holds it exactly
            arr = arr.astype(np.float32)
        flat[key] = arr
    return flat


def export_params(params: PyTree, path: str | os.PathLike) -> Path:
    """Write params to an .npz (keys = '/'-joined paths) atomically: temp file, fsync, rename.

    Call it on every process of a multi-host job; only process 0 writes.
    """
    path = Path(path)
    flat = flatten_params(params)
    if jax.process_index() != 0:
        return path
    with atomic_open(path, "wb") as f:
        np.savez(f, **flat)
    return path


def load_params(
    path: str | os.PathLike,
    like: PyTree | None = None,
    cache_dir: str | os.PathLike = "results/cache/params",
) -> PyTree:
    """Read an `export_params` file: the flat dict, or (with `like`) a pytree shaped like `like`.

    `path` may be a gs:// URI (a released checkpoint): it is fetched once into `cache_dir`.
    """
    if isinstance(path, str) and path.startswith("gs://"):  # before Path() folds the '//'
        from pipeline_lib.remote import local_copy

        path = local_copy(path, cache_dir)
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: parameter file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            flat = {k: z[k] for k in z.files}
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable parameter file ({_one_line(e)})") from e
    if like is None:
        return flat
    return unflatten_like(flat, like, where=str(path))


def unflatten_like(flat: dict[str, np.ndarray], like: PyTree, where: str = "params") -> PyTree:
    """A pytree shaped like `like` from a `flatten_params` dict (dtypes of `like`)."""

    def fill(p, leaf):
        key = path_str(p)
        if key not in flat:
            raise CheckpointError(f"{where}: no parameter {key!r}")
        if flat[key].shape != tuple(leaf.shape):
            raise CheckpointError(
                f"{where}: {key!r} has shape {flat[key].shape}, expected {tuple(leaf.shape)}"
            )
        return np.asarray(flat[key]).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, like)
