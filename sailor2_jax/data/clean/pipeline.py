"""The cleaning run: three datatrove stages on the executor the config names (local, Slurm or Ray).

1. analyse (N tasks, one per input shard): read → normalise → facts (digests, heuristics, LID, MinHash, lines).
2. decide (1 task): URL dedup → exact dedup → heuristics → LID → MinHash → frequent-line buckets, on all facts.
3. apply (N tasks): decisions → frequent-line removal → KenLM (optional) → kept/ and rejected/.
4. summarise (1 task): summary.json, summary.png, and the check that kept + rejected = read.

With Slurm or Ray the output directory must be on a file system every node sees; each stage depends on the one
before (`depends=`), as in datatrove's own MinHash example.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from datatrove.executor.base import PipelineExecutor
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep

from sailor2_jax.data.clean.analyse import Annotate, Normalise, WorkWriter
from sailor2_jax.data.clean.apply import ApplyDecisions, FrequentLineFilter, OutputWriter, PerplexityFilter
from sailor2_jax.data.clean.config import CleanConfig
from sailor2_jax.data.clean.decide import Decide
from sailor2_jax.data.clean.read import InputReader
from sailor2_jax.data.clean.summary import Summarise, check_balance


def stages(inputs: list[str], out_dir: str, config: CleanConfig) -> list[tuple[str, list[PipelineStep], int]]:
    """(name, pipeline, tasks) for the four stages."""
    out = get_datafolder(out_dir)
    tasks = config.executor.tasks
    analyse = [InputReader(inputs, config, out), Normalise(config, out), Annotate(config), WorkWriter(config, out)]
    decide = [Decide(config, out, tasks)]
    apply = [ApplyDecisions(config, out)]
    if config.frequent_lines.enabled:
        apply.append(FrequentLineFilter(config, out))
    if config.kenlm.enabled:
        apply.append(PerplexityFilter(config, out))
    apply.append(OutputWriter(config, out))
    return [("analyse", analyse, tasks), ("decide", decide, 1), ("apply", apply, tasks),
            ("summarise", [Summarise(out)], 1)]


def _executor(config: CleanConfig, name: str, pipeline: list[PipelineStep], tasks: int, logs: str,
              depends: PipelineExecutor | None) -> PipelineExecutor:
    ex = config.executor
    if ex.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(ex.workers, tasks), logging_dir=logs,
                                     skip_completed=False, depends=depends)
    if ex.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = ex.slurm
        return SlurmPipelineExecutor(pipeline, tasks=tasks, time=s.time, partition=s.partition,
                                     cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb,
                                     venv_path=s.venv_path, sbatch_args=s.sbatch_args or None,
                                     job_name=f"clean-{name}", logging_dir=logs, skip_completed=False,
                                     depends=depends)
    from datatrove.executor import RayPipelineExecutor

    r = ex.ray
    return RayPipelineExecutor(pipeline, tasks=tasks, workers=min(ex.workers, tasks), logging_dir=logs,
                               cpus_per_task=r.cpus_per_task, mem_per_cpu_gb=r.mem_per_cpu_gb,
                               skip_completed=False, depends=depends)


def run_clean(inputs: list[str], out_dir: str | Path, config: CleanConfig) -> dict:
    """Clean `inputs` into `out_dir`; returns the summary (for Slurm: where the submitted jobs log). Raises
    AccountingError if a document went missing."""
    out = Path(out_dir)
    for sub in ("kept", "rejected", "work", "logs"):  # a rerun must not count an earlier run's files
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    if config.executor.kind == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(address=config.executor.ray.address)
    start = time.perf_counter()
    previous = None
    executors = []
    for name, pipeline, tasks in stages(inputs, str(out), config):
        previous = _executor(config, name, pipeline, tasks, str(out / "logs" / name), previous)
        executors.append(previous)
    try:  # datatrove runs `depends` first: launching the last stage runs the whole chain
        executors[-1].run()
    except BaseException:  # interrupted or failed: no half-written output that looks like a result (logs stay)
        for sub in ("kept", "rejected", "work", "summary.json", "summary.png"):
            if (out / sub).is_dir():
                shutil.rmtree(out / sub, ignore_errors=True)
            else:
                (out / sub).unlink(missing_ok=True)
        raise
    if config.executor.kind == "slurm":  # sbatch returns at once; the summary is for a finished run
        return {"submitted": True, "logs": str(out / "logs")}
    summary = json.loads((out / "summary.json").read_text())
    summary["seconds"] = round(time.perf_counter() - start, 3)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    summary["message"] = check_balance(summary, out / "summary.json")
    return summary
