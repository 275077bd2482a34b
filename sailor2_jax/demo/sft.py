"""SFT stage 1 on the embedded conversations (data/post/sft.jsonl: real UDHR text in 15 languages), loss on the
assistant turns only, packed. The recipe trains one epoch; the demo's CPU runs an eighth of one, through the same
loader a full run uses."""

from __future__ import annotations

import math
import shutil

from sailor2_jax.demo.stage import Context, StageResult

TITLE = "SFT stage 1 on the embedded conversations (15 languages; loss on assistant turns, packed)"
EPOCHS = 0.125  # of the embedded conversations, at 8 × 256 tokens per step


def run(ctx: Context) -> StageResult:
    for run_dir in ("sft", "select", "sft_stage2", "dpo"):
        shutil.rmtree(ctx.out / run_dir, ignore_errors=True)
    _, losses = ctx.train("sft", ["model=null", f"init.checkpoint={ctx.out / 'stage2'}", f"data.epochs={EPOCHS}"],
                          base="demo_sft")
    return StageResult({"losses": losses}, {"finite losses": bool(losses) and all(map(math.isfinite, losses))})
