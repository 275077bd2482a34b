"""Continual pre-training, stage 1, on the mixture RegMix found (UDHR through the real tokenizer → seqio → grain
packing): a 10-step schedule stopped after step 6, as a preempted run would be, then resumed from its checkpoint
(model, optimiser, RNG and data iterator restored) to its end."""

from __future__ import annotations

import math
import shutil

from sailor2_jax.demo.stage import Context, StageResult

TITLE = "continual pre-training, stage 1, on the RegMix mixture; stopped at step 6 and resumed"


def run(ctx: Context) -> StageResult:
    shutil.rmtree(ctx.out / "stage1", ignore_errors=True)  # a rerun of the demo starts its runs afresh
    rates = (ctx.out / "regmix" / "rates.json").absolute()
    overrides = ["model=null", f"init.hf_dir={ctx.out / 'expanded'}", "optimizer.schedule.total_steps=10",
                 "checkpoint.every=3", "log.eval_every=3", f"data.mixture_overrides=[mixture.rates_file={rates}]"]
    _, first = ctx.train("stage1", [*overrides, "steps=6"])
    ctx.console.print("resume: the same run continues from its latest checkpoint")
    resumed, losses = ctx.train("stage1", [*overrides, "steps=10"])
    return StageResult(
        {"losses": losses, "first_run_losses": first, "resumed_from": resumed.resumed_from},
        {"the rerun resumed from step 6": resumed.resumed_from == 6 and resumed.step == 10,
         "finite losses": all(map(math.isfinite, losses)),
         "the loss went down": losses[-1] < losses[0]})
