"""Data parallelism: one code path for 1 device, N devices, and N hosts.

A 1-D mesh with axis "data" spans every device of every process. Training
state is replicated (``P()``); batches are sharded along their first axis
(``P("data")``); ``jax.jit`` inserts the collectives. Because the loss is a
mean over the *global* (sharded) batch, gradients - including the SAM and
C-SAM gradients at the perturbed point - are already global, so
``csam_jax.csam_transform`` needs no ``batch_axis_name`` here (that argument
is for ``shard_map``/``pmap`` code with per-device losses).

Multi-host: each process reads its own slice of every global batch
(``input_pipeline.train_batches(process_index=..., process_count=...)``) and
``jax.make_array_from_process_local_data`` assembles the global array.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(
  *,
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  auto: bool = False,
  cpu_collectives: str | None = None,
) -> None:
  """Starts ``jax.distributed`` when asked; a no-op for single-process runs.

  Args:
    coordinator_address: "host:port" of process 0. With num_processes and
      process_id it starts an explicit multi-process run (e.g. several CPU
      or GPU machines).
    num_processes: total number of processes.
    process_id: this process's index.
    auto: call ``jax.distributed.initialize()`` with no arguments, letting
      JAX detect the cluster (TPU VMs, SLURM, ...).
    cpu_collectives: "gloo" or "mpi" for multi-process CPU runs (tests).

  Raises:
    ValueError: a partial set of explicit arguments.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit) and any(v is None for v in explicit):
    raise ValueError(
      "coordinator_address, num_processes and process_id must be given "
      f"together; got {explicit}."
    )
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  if coordinator_address is not None:
    jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=int(num_processes),
      process_id=int(process_id),
    )
  elif auto:
    jax.distributed.initialize()
  else:
    return
  logging.info(
    "jax.distributed: process %d of %d, %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.device_count(),
  )


def make_mesh() -> Mesh:
  """The 1-D "data" mesh over all devices of all processes."""
  return jax.make_mesh(
    (jax.device_count(),),
    (DATA_AXIS,),
    axis_types=(jax.sharding.AxisType.Auto,),
  )


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of the training state: a full copy on every device."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding of batches: split along the first axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(local_batch: dict[str, Any], mesh: Mesh) -> dict[str, Any]:
  """Assembles this process's rows of a batch into global arrays.

  Args:
    local_batch: dict of numpy arrays, this process's
      ``global_batch_size // process_count`` rows.
    mesh: the data mesh.

  Returns:
    dict of ``jax.Array`` sharded along the batch axis.
  """
  sharding = batch_sharded(mesh)
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
    for k, v in local_batch.items()
  }


def host_array_to_global(x: np.ndarray, mesh: Mesh) -> jax.Array:
  """Puts an array that every process holds in full onto the mesh.

  Sharded along the first axis when it divides the device count, else
  replicated. Used for evaluation inputs that all processes share.
  """
  x = np.asarray(x)
  if x.ndim and x.shape[0] % mesh.size == 0:
    sharding = batch_sharded(mesh)
  else:
    sharding = replicated(mesh)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def to_host(tree: Any) -> Any:
  """Fetches replicated (or fully addressable) arrays to numpy."""
  return jax.tree.map(np.asarray, tree)


def check_batch_size(batch_size: int, field: str = "batch_size") -> None:
  """Raises ValueError unless batch_size divides over devices and processes."""
  for count, what in (
    (jax.device_count(), "device count"),
    (jax.process_count(), "process count"),
  ):
    if batch_size <= 0 or batch_size % count:
      raise ValueError(
        f"config.{field}={batch_size} must be a positive multiple of the "
        f"{what} ({count})."
      )
