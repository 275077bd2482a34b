"""Stage 2 (annealing): all 15 languages, the low-resource ones included, with 20 % stage-1 replay; it continues
stage 1's AdamW state with a decaying learning rate (no new warmup), the replayed streams where stage 1 left them."""

from __future__ import annotations

import math
import shutil

from sailor2_jax.demo.stage import Context, StageResult

TITLE = "stage 2 (annealing): all 15 languages incl. the low-resource ones, 20 % stage-1 replay"


def run(ctx: Context) -> StageResult:
    shutil.rmtree(ctx.out / "stage2", ignore_errors=True)
    _, losses = ctx.train("stage2", [
        "model=null", f"init.checkpoint={ctx.out / 'stage1'}", "init.optimizer_state=true", "data.mixture=demo_stage2",
        "steps=4", "checkpoint.every=4", "log.eval_every=0",
        "optimizer.schedule={kind: wsd, peak_lr: 3.0e-3, warmup_steps: 0, decay_steps: 4, final_lr: 3.0e-4}"])
    return StageResult({"losses": losses}, {"four finite losses": len(losses) == 4 and all(map(math.isfinite, losses))})
