"""`sailor2-jax select-sft` on the embedded conversations: perplexity under the SFT model and embedding
near-duplicates, the best 5 % per language kept for SFT stage 2."""

from __future__ import annotations

import json
import math

from sailor2_jax.demo.stage import Context, StageResult

TITLE = "select-sft: perplexity under the SFT model + embedding near-duplicates, 5 % per language"
KEEP = 0.05


def run(ctx: Context) -> StageResult:
    where = ctx.out / "select"
    ctx.run_command(["select-sft", "--checkpoint", str(ctx.out / "sft"), "--input", "data/post/sft.jsonl", "--output-dir",
                     str(where), "--keep", str(KEEP), "--seq-len", "256", "--overlong", "drop", "--dtype", "float32",
                     "--batch-size", "16"])
    s = json.loads((where / "summary.json").read_text())
    ctx.console.print(f"selected {s['selected']} of {s['scored']} scored conversations ({s['near_duplicates']} "
                      f"near-duplicates), by language: {s['selected_by_language']}; {where}/selection.png")
    skipped = sum(s["skipped"].values()) if isinstance(s["skipped"], dict) else s["skipped"]
    selected = sum(1 for _ in (where / "selected.jsonl").open(encoding="utf-8"))
    return StageResult(
        {k: s[k] for k in ("read", "kept", "skipped", "scored", "near_duplicates", "selected", "selected_by_language")}
        | {"dir": str(where)},
        {"every conversation accounted for": s["read"] == s["kept"] + skipped,
         "selected.jsonl holds the selection": selected == s["selected"] > 0,
         "about 5 % kept (quotas rounded up per language)":
             s["selected"] <= math.ceil(KEEP * s["scored"]) + len(s["selected_by_language"])})
