"""Multi-host start-up: `jax.distributed.initialize` from flags or the environment, before any other JAX call.

- TPU pods: nothing to pass; JAX discovers the coordinator and the process ids from the TPU metadata.
- SLURM and Open MPI jobs with several tasks: JAX's cluster detection fills in what is not given.
- Elsewhere (several CPU processes, hand-started GPU hosts): coordinator address, process count and process id,
  from the `train`/`export` flags (`add_arguments`) or from SAILOR2_COORDINATOR / SAILOR2_NUM_PROCESSES /
  SAILOR2_PROCESS_ID.
- On CPU the cross-process collectives use gloo.

A hung start-up is the usual multi-host failure (anchors.md): the coordinator waits `timeout_s` and then fails
with JAX's error instead of hanging forever.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The multi-host flags of every command that runs as one process per host."""
    p.add_argument("--coordinator", help="multi-host: coordinator address host:port (not needed on TPU pods)")
    p.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    p.add_argument("--process-id", type=int, help="multi-host: this process's id")


def initialize_from(args: argparse.Namespace) -> bool:
    """`initialize` from a command's `add_arguments` flags (environment for the ones not given)."""
    return initialize(args.coordinator, args.num_processes, args.process_id)


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, timeout_s: int = 300) -> bool:
    """Join the job if one is described; returns True when running as more than one process."""
    import jax  # here, so that the command line starts without importing JAX

    if jax.distributed.is_initialized():  # joined already (a second command in the same process)
        return jax.process_count() > 1
    coordinator = coordinator or os.environ.get("SAILOR2_COORDINATOR")
    if num_processes is None and "SAILOR2_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["SAILOR2_NUM_PROCESSES"])
    if process_id is None and "SAILOR2_PROCESS_ID" in os.environ:
        process_id = int(os.environ["SAILOR2_PROCESS_ID"])
    detected = (os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("TPU_ACCELERATOR_TYPE")
                or int(os.environ.get("SLURM_NTASKS", "1")) > 1 or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)
    if coordinator is None and not detected:
        return False  # a single process
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ValueError("multi-host: give the coordinator address, the process count and the process id "
                         "together (or none of them where JAX detects the cluster)")
    if (os.environ.get("JAX_PLATFORMS") or "").startswith("cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_s)
    return jax.process_count() > 1

