"""The demo's post-training stage on the embedded conversations and preference pairs (data/post/, built from
the UDHR passages of all 15 languages): SFT stage 1 → `select-sft` → SFT stage 2 on the selection → DPO.

The recipe's lengths are one epoch (stage 1) and several (stage 2); on the demo's CPU the runs are cut to a fraction
of an epoch (`data.epochs` below), the selection keeps 5 % of the conversations, and every run reads real files
through the same loaders a full run uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

SFT1_EPOCHS = 0.125   # of the embedded conversations, at 8 × 256 tokens per step
SELECT_KEEP = 0.05


def post_training_stage(out: Path, start_checkpoint: Path, train: Callable, step: Callable, console) -> dict:
    """Runs `sft`, `select`, `sft_stage2` and `dpo` under `out`; `train(name, out, overrides, base=config)` is the
    demo's training call. Returns the stage's summary."""
    from sailor2_jax.cli import run_command

    step("8. SFT stage 1 on the embedded conversations (15 languages; loss on assistant turns, packed)")
    _, sft1 = train("sft", out, ["model=null", f"init.checkpoint={start_checkpoint}", f"data.epochs={SFT1_EPOCHS}"],
                    base="demo_sft")
    step(f"8b. select-sft: perplexity under the SFT model + embedding near-duplicates, {SELECT_KEEP:.0%} per language")
    select_dir = out / "select"
    run_command(["select-sft", "--checkpoint", str(out / "sft"), "--input", "data/post/sft.jsonl", "--output",
                 str(select_dir), "--keep", str(SELECT_KEEP), "--seq-len", "256", "--overlong", "drop", "--dtype",
                 "float32", "--batch-size", "16"], console)
    selection = json.loads((select_dir / "summary.json").read_text())
    console.print(f"selected {selection['selected']} of {selection['scored']} scored conversations "
                  f"({selection['near_duplicates']} near-duplicates), by language: {selection['selected_by_language']}"
                  f"; {select_dir}/selection.png")
    step("8c. SFT stage 2: two epochs on the selection, smaller batches")
    _, sft2 = train("sft_stage2", out, ["model=null", f"init.checkpoint={out / 'sft'}",
                                        f"data.files=[{select_dir / 'selected.jsonl'}]"], base="demo_sft_stage2")
    step("8d. DPO on the embedded preference pairs (reference log-probs precomputed by the initial model)")
    _, dpo = train("dpo", out, ["model=null", f"init.checkpoint={out / 'sft_stage2'}", "steps=4", "checkpoint.every=4",
                                "objective.reference=precompute"], base="demo_dpo")
    return {"sft_stage1_losses": sft1, "selection": {k: selection[k] for k in (
        "read", "kept", "skipped", "scored", "near_duplicates", "selected", "selected_by_language")},
        "selection_dir": str(select_dir), "sft_stage2_losses": sft2, "dpo_losses": dpo}
