"""Device mesh and shardings: one code path from 1 CPU device to a multi-host pod.

The mesh has two named axes, ('data', 'model'). Batches are split along 'data'. Parameters
(and optimizer state) are replicated, except that with a 'model' axis > 1 every 2-D leaf is
split along it by one simple rule (last dim if divisible, else first): enough for the MLP and
attention kernels of T5-small/BERT; anything cleverer belongs to the model's own annotations.
The compiler (GSPMD, `AxisType.Auto`) inserts the collectives.

Multi-process: `initialize_distributed` must run before anything else touches JAX (the CLI
calls it right after validating the config); the mesh then spans every process's devices,
every process builds the same global batch from the same data files and contributes the rows
of its own devices, and the collectives cross processes (gloo on CPU, NCCL / ICI on GPU / TPU).

Compilation cache: JAX reads JAX_COMPILATION_CACHE_DIR itself (the CLI sets it); nothing here
touches the cache configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from pipeline_lib.errors import PipelineError

log = logging.getLogger(__name__)
PyTree = Any

DATA, MODEL = "data", "model"


class DistributedError(PipelineError, RuntimeError):
    """A multi-process run that could not start (partners missing, coordinator unreachable)."""


AUTO = "auto"  # coordinator value: let JAX detect the cluster (SLURM, Cloud TPU, Open MPI)


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout_s: int = 300,
    heartbeat_timeout_s: int = 100,
) -> bool:
    """Call `jax.distributed.initialize` iff a multi-process run is configured; True if called.

    A coordinator address (host:port of process 0, the same on every process) is what asks for
    it; with none, this is a no-op, so single-process runs never start a coordination service.
    `"auto"` leaves address, process count and id to JAX's cluster detection (inside `srun`,
    on a Cloud TPU pod slice, under `mpirun`). `heartbeat_timeout_s` bounds how long the
    survivors of a dead process wait: JAX's coordination service then terminates every other
    process with a message naming the dead task, instead of leaving them blocked in a collective.
    """
    if not coordinator_address:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise ValueError(
                f"num_processes={num_processes} / process_id={process_id} need a coordinator "
                "address (--coordinator host:port)"
            )
        return False
    if coordinator_address == AUTO:
        address = None
    else:
        address = coordinator_address
        if num_processes is None or process_id is None:
            raise ValueError(
                f"coordinator {coordinator_address}: give the number of processes and this "
                "process's id as well (--num-processes N --process-id i)"
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process id {process_id} is not in 0..{num_processes - 1}")
    try:
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=initialization_timeout_s,
            heartbeat_timeout_seconds=heartbeat_timeout_s,
        )
    except (RuntimeError, ValueError) as e:  # XlaRuntimeError is a RuntimeError
        # (partners that never arrive are not caught here: after initialization_timeout_s
        # JAX's C++ client aborts the process with DEADLINE_EXCEEDED on its own)
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise DistributedError(
            f"jax.distributed: process {process_id} could not join the coordinator "
            f"{coordinator_address} of {num_processes} processes ({type(e).__name__}: {first})"
        ) from None
    log.info(
        "jax.distributed: process %d of %d, %d local / %d global devices (a process that "
        "stops is detected within %d s and ends the run)",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        heartbeat_timeout_s,
    )
    return True


def make_mesh(model_parallelism: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'model') mesh over `devices` (default: all), model axis of the given size."""
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) % model_parallelism:
        raise ValueError(
            f"{len(devices)} devices cannot be split into model axis {model_parallelism}"
        )
    shape = (len(devices) // model_parallelism, model_parallelism)
    return jax.make_mesh(shape, (DATA, MODEL), axis_types=(AxisType.Auto,) * 2, devices=devices)


def leaf_spec(shape: tuple[int, ...], model_size: int) -> P:
    """The partition rule for one parameter / optimizer-state leaf."""
    if model_size > 1 and len(shape) == 2:
        if shape[1] % model_size == 0:
            return P(None, MODEL)
        if shape[0] % model_size == 0:
            return P(MODEL, None)
    return P()


def state_shardings(tree: PyTree, mesh: Mesh) -> PyTree:
    model_size = mesh.shape[MODEL]
    return jax.tree.map(lambda x: NamedSharding(mesh, leaf_spec(np.shape(x), model_size)), tree)


def shard_state(tree: PyTree, mesh: Mesh) -> PyTree:
    """Copies of params/optimizer state on the mesh (replicated, or split along 'model').

    Always fresh buffers: the train step donates its state, and the caller's arrays must
    survive that. `device_put` alone is not enough: placing a 1-device array on a replicated
    mesh reuses its buffer as the device-0 shard, so the jitted copy makes new ones.
    """
    shardings = state_shardings(tree, mesh)
    placed = jax.device_put(tree, shardings)
    return jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=shardings)(placed)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """A global numpy batch -> arrays split along 'data' (each process supplies its rows)."""
    sharding = batch_sharding(mesh)
    n_proc, proc = jax.process_count(), jax.process_index()
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        if value.shape[0] % mesh.shape[DATA]:
            raise ValueError(
                f"batch feature {name!r}: {value.shape[0]} rows do not split over "
                f"{mesh.shape[DATA]} data-parallel devices"
            )
        rows = value.shape[0] // n_proc
        local = value[proc * rows : (proc + 1) * rows]
        out[name] = jax.make_array_from_process_local_data(sharding, local, value.shape)
    return out
