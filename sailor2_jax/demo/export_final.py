"""The DPO checkpoint exported to Hugging Face (`runs/demo/hf_final`) and checked in `transformers`: what the later
stages (generation, serving, evaluation) read."""

from __future__ import annotations

import numpy as np

from sailor2_jax.demo.fixtures import demo_texts, torch_logits
from sailor2_jax.demo.parity import TOLERANCE, logits
from sailor2_jax.demo.stage import Context, StageResult

TITLE = "export the DPO checkpoint to Hugging Face and check it in transformers"


def run(ctx: Context) -> StageResult:
    from sailor2_jax.model.hf import export_hf
    from sailor2_jax.model.source import open_run

    model, step = open_run(ctx.out / "dpo", dtype="float32")  # compared in fp32, as transformers runs here
    exported = export_hf(model, ctx.out / "hf_final", tokenizer=ctx.out / "base", overwrite=True)
    _, tokens, segs = demo_texts()
    ours = logits(model, tokens)
    diff = float(np.abs(ours - torch_logits(exported, tokens))[segs.astype(bool)].max())
    ctx.console.print(f"[bold green]trained model (step {step}) in transformers: max |Δlogit| = {diff:.2e}")
    return StageResult({"dir": str(exported), "step": step, "max_abs_logit_diff_trained_export_vs_transformers": diff},
                       {"transformers computes our logits from the export":
                        diff <= TOLERANCE * max(1.0, float(np.abs(ours).max()))})
