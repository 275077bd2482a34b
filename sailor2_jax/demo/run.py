"""`make demo`: the stages in order, numbered and timed; each stage's named checks must hold, else the demo stops with
one line naming the stage and the failed check. Everything is written under OUT/, and OUT/summary.json holds every
stage's summary, checks and seconds."""

from __future__ import annotations

import os
import resource
import shutil
import time
from pathlib import Path
from types import ModuleType

from rich.console import Console

from sailor2_jax.demo import (base, clean, dpo, evaluate, expand, export, export_final, generate, judge, long_context,
                              onpolicy, parity, regmix, reward, select, serve, sft, sft_stage2, speculative, stage1,
                              stage2, stage2_data, tpu_compile)
from sailor2_jax.demo.stage import Context
from sailor2_jax.files import write_json

STAGES: tuple[ModuleType, ...] = (
    clean, stage2_data,                       # data: cleaning, stage-2 translation and quality selection
    base, expand, parity, export,             # model: a Qwen2.5-architecture base, LlamaPro, transformers parity
    regmix, stage1, stage2,                   # continual pre-training on the mixture RegMix finds, with a resume
    long_context,                             # 4x the length: YaRN, context parallelism, passkey retrieval
    sft, select, sft_stage2, dpo, export_final,  # post-training: SFT → selection → SFT → DPO → Hugging Face
    reward, onpolicy,                         # a reward model and an on-policy round
    generate, speculative, serve,             # use: generation (the model drafting for itself), serving
    tpu_compile, evaluate, judge,             # TPU compilation, evaluation, chat judging
)


# What the whole demo leaves under OUT (measured: 1.7 GiB, most of it the tiny model's checkpoints, each holding a
# 151,936-row embedding and its Adam moments), with room for the checkpoint being written over it.
DISK_NEEDED = int(2.5 * 2**30)


class DemoFailed(RuntimeError):
    """A stage raised or one of its checks failed: the message names the stage and what failed."""


def disk_used(path: Path) -> int:
    """Bytes of the files under `path` (what the demo has written so far)."""
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
               if not os.path.islink(os.path.join(root, f)))


def check_free_disk(out: Path) -> None:
    """Refuse to start when OUT's disk cannot hold the demo, rather than fail minutes later mid-checkpoint; a rerun
    overwrites what an earlier run left, so that counts as room."""
    free = shutil.disk_usage(out).free + disk_used(out)
    if free < DISK_NEEDED:
        raise DemoFailed(f"{out}: {free / 2**30:.1f} GiB free on its disk (counting an earlier run's files), the "
                         f"demo writes about {DISK_NEEDED / 2**30:.1f} GiB there; free some space or pass another "
                         "--output-dir")


def name_of(stage: ModuleType) -> str:
    return stage.__name__.rsplit(".", 1)[-1]


def run_demo(out: str | Path, stages: tuple[ModuleType, ...] = STAGES, console: Console | None = None) -> dict:
    """Run `stages` under `out`; returns (and writes as OUT/summary.json) the summary. Raises `DemoFailed`."""
    import jax

    ctx = Context(out=Path(out), console=console or Console())
    ctx.out.mkdir(parents=True, exist_ok=True)
    check_free_disk(ctx.out)
    summary: dict = {"devices": jax.device_count(), "backend": jax.default_backend(), "stages": {}}
    start = time.perf_counter()
    for number, stage in enumerate(stages, 1):
        name = name_of(stage)
        ctx.console.rule(f"[bold]{number}. {stage.TITLE}")
        began = time.perf_counter()
        try:
            result = stage.run(ctx)
        except Exception as e:
            raise DemoFailed(f"stage {number} ({name}) failed: {type(e).__name__}: {e}") from e
        result.checks = {check: bool(ok) for check, ok in result.checks.items()}  # (numpy bools too)
        ctx.results[name] = result
        seconds = round(time.perf_counter() - began, 1)
        summary["stages"][name] = {"seconds": seconds, "checks": result.checks, **result.summary}
        failed = [check for check, ok in result.checks.items() if not ok]
        if failed:
            write_json(ctx.out / "summary.json", summary)
            raise DemoFailed(f"stage {number} ({name}): check failed: {'; '.join(failed)} (its summary: "
                             f"{ctx.out / 'summary.json'})")
        passed = f"{len(result.checks)} checks passed" if result.checks else "no checks"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux
        disk = disk_used(ctx.out) / 2**30
        summary["stages"][name] |= {"peak_rss_gib": round(peak, 2), "disk_gib": round(disk, 2)}
        # soft_wrap: one line in a log too (a console that is not a terminal is 80 columns wide)
        ctx.console.print(f"[dim]{number}. {name}: {passed}, {seconds}s, peak memory so far {peak:.1f} GiB, "
                          f"{disk:.2f} GiB on disk", soft_wrap=True)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    write_json(ctx.out / "summary.json", summary)
    checks = sum(len(r.checks) for r in ctx.results.values())
    ctx.console.rule(f"[bold]demo finished in {summary['seconds']}s, {checks} checks passed — "
                     f"{ctx.out / 'summary.json'}")
    return summary
