"""SFT stage 2: two epochs on the selection, smaller batches (the recipe's second stage on selected data)."""

from __future__ import annotations

import math

from sailor2_jax.demo.stage import Context, StageResult

TITLE = "SFT stage 2: two epochs on the selection, smaller batches"


def run(ctx: Context) -> StageResult:
    _, losses = ctx.train("sft_stage2", ["model=null", f"init.checkpoint={ctx.out / 'sft'}",
                                         f"data.files=[{ctx.out / 'select' / 'selected.jsonl'}]"],
                          base="demo_sft_stage2")
    return StageResult({"losses": losses}, {"finite losses": bool(losses) and all(map(math.isfinite, losses))})
