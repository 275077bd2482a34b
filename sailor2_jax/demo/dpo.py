"""Off-policy DPO on the embedded preference pairs (data/post/preference.jsonl), the reference log-probs precomputed
by the initial model before training: the same step family as pre-training and SFT."""

from __future__ import annotations

import math

from sailor2_jax.demo.stage import Context, StageResult

TITLE = "DPO on the embedded preference pairs (reference log-probs precomputed by the initial model)"


def run(ctx: Context) -> StageResult:
    _, losses = ctx.train("dpo", ["model=null", f"init.checkpoint={ctx.out / 'sft_stage2'}", "steps=4",
                                  "checkpoint.every=4", "objective.reference=precompute"], base="demo_dpo")
    # the policy starts as its own reference: the first step's loss is exactly log 2
    return StageResult({"losses": losses}, {"first DPO loss is log 2": math.isclose(losses[0], math.log(2), abs_tol=2e-3),
                                            "finite losses": all(map(math.isfinite, losses))})
