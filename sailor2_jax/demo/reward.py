"""A reward model trained by Bradley-Terry (the `reward` objective) on the embedded pairs, started from the SFT run
(its decoder under a new score head, as reward models usually start), exported as a
`Qwen2ForSequenceClassification` that `transformers` scores alike."""

from __future__ import annotations

import math
import shutil

from sailor2_jax.demo.stage import Context, StageResult

TITLE = "a reward model trained by Bradley-Terry on the embedded pairs, exported as a sequence classifier"


def run(ctx: Context) -> StageResult:
    from sailor2_jax.model.reward import export_reward
    from sailor2_jax.model.source import open_run

    shutil.rmtree(ctx.out / "reward", ignore_errors=True)
    _, losses = ctx.train("reward", ["model=null", f"init.checkpoint={ctx.out / 'sft'}", "steps=4",
                                     "checkpoint.every=4"], base="demo_reward")
    model, _ = open_run(ctx.out / "reward", dtype="float32", head="reward")
    reward_dir = export_reward(model, ctx.out / "reward_hf", tokenizer=ctx.out / "base", overwrite=True)
    ctx.console.print(f"reward model exported to {reward_dir}")
    return StageResult({"losses": losses, "dir": str(reward_dir)},
                       {"finite losses": all(map(math.isfinite, losses)),
                        "exported as a sequence classifier": (reward_dir / "config.json").is_file()})
