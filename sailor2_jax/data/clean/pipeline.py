"""The cleaning run: datatrove stages on the executor the config names (local, Slurm or Ray), in sailcraft's order
(its `run_example.sh`: clean → near dedup → exact-substring dedup → clean again; [sN] marks sailcraft's stage N).

1. analyse (N tasks, one per input shard): read → normalise → facts (digests, heuristics, LID, MinHash, lines).
2. decide (1 task): URL dedup → exact dedup → heuristics → LID [s1] → MinHash [s2], on all facts.
3. substring dedup (substring.py) [s3]: index (N) → exchange (N, with several shards) → suffix array (N).
4. frequent lines (1 task): lines in more than `max_count` documents of their bucket (lines.py).
5. apply (N tasks): decisions → substring cuts → frequent-line removal → second pass: heuristics and LID again on
   the texts these changed [s4] → KenLM (optional; sailcraft's stages 1 and 4 run it) → kept/ and rejected/.
6. summarise (1 task): summary.json, summary.png, and the check that kept + rejected = read.

With Slurm or Ray the output directory must be on a file system every node sees; each stage depends on the one
before (`depends=`), as in datatrove's own MinHash example.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep

from sailor2_jax.data.clean.analyse import Annotate, Normalise, WorkWriter
from sailor2_jax.data.clean.apply import ApplyDecisions, OutputWriter, PerplexityFilter, SecondPass
from sailor2_jax.data.clean.config import CleanConfig
from sailor2_jax.data.stages.executor import run_stages
from sailor2_jax.data.clean.decide import Decide
from sailor2_jax.data.clean.lines import FrequentLineFilter, FrequentLines
from sailor2_jax.data.clean.read import InputReader
from sailor2_jax.data.clean.substring import SubstringCut, SubstringExchange, SubstringFind, SubstringIndex
from sailor2_jax.data.clean.summary import Summarise, check_balance


def stages(inputs: list[str], out_dir: str, config: CleanConfig) -> list[tuple[str, list[PipelineStep], int]]:
    """(name, pipeline, tasks) for the stages of this config."""
    out = get_datafolder(out_dir)
    tasks = config.executor.tasks
    substring, lines = config.substring_dedup.enabled, config.frequent_lines.enabled
    plan = [("analyse", [InputReader(inputs, config, out), Normalise(config, out), Annotate(config),
                         WorkWriter(config, out)], tasks),
            ("decide", [Decide(config, out, tasks)], 1)]
    if substring:
        plan.append(("substring-index", [ApplyDecisions(config, out), SubstringIndex(config, out)], tasks))
        if tasks > 1:
            plan.append(("substring-exchange", [SubstringExchange(config, out)], tasks))
        plan.append(("substring-find", [SubstringFind(config, out, tasks)], tasks))
    if lines:
        plan.append(("frequent-lines", [FrequentLines(config, out, tasks)], 1))
    apply: list[PipelineStep] = [ApplyDecisions(config, out)]
    if substring:
        apply.append(SubstringCut(config, out))
    if lines:
        apply.append(FrequentLineFilter(config, out))
    if config.second_pass and (config.heuristics or config.lid) and (substring or lines):
        apply.append(SecondPass(config, out))
    if config.kenlm.enabled:
        apply.append(PerplexityFilter(config, out))
    apply.append(OutputWriter(config, out))
    return [*plan, ("apply", apply, tasks), ("summarise", [Summarise(out)], 1)]


def run_clean(inputs: list[str], out_dir: str | Path, config: CleanConfig) -> dict:
    """Clean `inputs` into `out_dir`; returns the summary (for Slurm: where the submitted jobs log). Raises
    AccountingError if a document went missing."""
    out = Path(out_dir)
    for sub in ("kept", "rejected", "work", "logs"):  # a rerun must not count an earlier run's files
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        run_stages(config.executor, stages(inputs, str(out), config), out, "clean")
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
