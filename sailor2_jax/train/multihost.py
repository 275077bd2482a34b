"""Multi-host start-up: `jax.distributed.initialize` from flags or the environment, before any other JAX call.

- TPU pods: nothing to pass; JAX discovers the coordinator and the process ids from the TPU metadata.
- Elsewhere (GPU clusters, several CPU processes): coordinator address, process count and process id, from the
  `train` flags or from SAILOR2_COORDINATOR / SAILOR2_NUM_PROCESSES / SAILOR2_PROCESS_ID (JAX's own
  JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID are honoured by JAX itself).
- On CPU the cross-process collectives use gloo.

A hung start-up is the usual multi-host failure (anchors.md): the coordinator waits `timeout_s` and then fails
with JAX's error instead of hanging forever.
"""

from __future__ import annotations

import os

import jax


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, timeout_s: int = 300) -> bool:
    """Join the job if one is described; returns True when running as more than one process."""
    coordinator = coordinator or os.environ.get("SAILOR2_COORDINATOR")
    if num_processes is None and "SAILOR2_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["SAILOR2_NUM_PROCESSES"])
    if process_id is None and "SAILOR2_PROCESS_ID" in os.environ:
        process_id = int(os.environ["SAILOR2_PROCESS_ID"])
    on_tpu_vm = os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("TPU_ACCELERATOR_TYPE")
    if coordinator is None and not on_tpu_vm and "JAX_COORDINATOR_ADDRESS" not in os.environ:
        return False  # a single process
    if (coordinator is None) != (num_processes is None) or (num_processes is None) != (process_id is None):
        if coordinator is not None or num_processes is not None or process_id is not None:
            raise ValueError("multi-host: give the coordinator address, the process count and the process id "
                             "together (or none of them on a TPU pod)")
    if (os.environ.get("JAX_PLATFORMS") or "").startswith("cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_s)
    return jax.process_count() > 1
