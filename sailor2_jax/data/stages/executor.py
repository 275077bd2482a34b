"""Where a chain of datatrove stages runs: on this machine (`local`), on a Slurm cluster or on Ray, as `executor:` in
the clean, translate and quality configs says."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

from datatrove.executor.base import PipelineExecutor
from datatrove.pipeline.base import PipelineStep
from pydantic import Field

from sailor2_jax.config import Config


class SlurmConfig(Config):
    partition: str = "cpu"
    time: str = "24:00:00"
    cpus_per_task: int = Field(1, gt=0)
    mem_per_cpu_gb: int = Field(2, gt=0)
    gpus_per_task: int = Field(0, ge=0, description="GPUs per task (translation and quality scoring on GPUs)")
    venv_path: str | None = None
    sbatch_args: dict[str, str] = Field(default_factory=dict)


class RayConfig(Config):
    address: str | None = None  # None: `ray.init()` joins RAY_ADDRESS or starts a local cluster
    cpus_per_task: int = Field(1, gt=0)
    mem_per_cpu_gb: float = Field(2, gt=0)
    gpus_per_task: float = Field(0, ge=0, description="GPUs per task (translation and quality scoring on GPUs)")


class ExecutorConfig(Config):
    kind: Literal["local", "slurm", "ray"] = "local"
    tasks: int = Field(1, gt=0, description="shards of the input (files are split between tasks)")
    workers: int = Field(1, gt=0, description="tasks run at once (local executor)")
    slurm: SlurmConfig = SlurmConfig()
    ray: RayConfig = RayConfig()


def executor(ex: ExecutorConfig, name: str, pipeline: list[PipelineStep], tasks: int, logs: str,
             depends: PipelineExecutor | None) -> PipelineExecutor:
    """A datatrove executor of the kind `ex` names, for one stage (`depends`: the stage before it)."""
    if ex.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(ex.workers, tasks), logging_dir=logs,
                                     skip_completed=False, depends=depends)
    if ex.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = ex.slurm
        return SlurmPipelineExecutor(pipeline, tasks=tasks, time=s.time, partition=s.partition,
                                     cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb,
                                     gpus_per_task=s.gpus_per_task, venv_path=s.venv_path,
                                     sbatch_args=s.sbatch_args or None, job_name=name, logging_dir=logs,
                                     skip_completed=False, depends=depends)
    from datatrove.executor import RayPipelineExecutor

    r = ex.ray
    return RayPipelineExecutor(pipeline, tasks=tasks, workers=min(ex.workers, tasks), logging_dir=logs,
                               cpus_per_task=r.cpus_per_task, mem_per_cpu_gb=r.mem_per_cpu_gb,
                               gpus_per_task=r.gpus_per_task, skip_completed=False, depends=depends)


def run_stages(ex: ExecutorConfig, plan: list[tuple[str, list[PipelineStep], int]], out: Path, prefix: str) -> None:
    """Chain the stages with `depends=` and launch the last: datatrove runs each dependency first."""
    if ex.kind == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(address=ex.ray.address)
    previous = None
    for name, pipeline, tasks in plan:
        previous = executor(ex, f"{prefix}-{name}", pipeline, tasks, str(out / "logs" / name), previous)
    with warnings.catch_warnings():
        # the local executor forks a multiprocessing Manager, its queue server; JAX, when the caller imported it,
        # warns that forking a multithreaded process may deadlock. The server runs no JAX and no threads of ours.
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        previous.run()
