"""Demo stage: chat evaluation as Sea-WildBench does it (`sailor2-jax judge`) on the DPO model (`hf_final`), against
the embedded reference answers (30 prompts of our own, 2 in each of the 15 languages), judged by the local reward
model (`reward_hf`, scored by its PyTorch backend here: the `reward` stage already runs the JAX one, and this saves
its compilation) as a cheap stand-in for an LLM judge. The tiny random model seldom stops, so its answers are short
(24 new tokens) and judged although the length limit cut them (`--keep-truncated`; Sea-WildBench drops those)."""

from __future__ import annotations

import json

import numpy as np

from sailor2_jax.demo.stage import Context, StageResult

TITLE = "Judge: the DPO model vs reference answers in 15 languages, the reward model as judge (Sea-WildBench rules)"


def run(ctx: Context) -> StageResult:
    out = ctx.out / "judge"
    ctx.run_command(["judge", "--model", str(ctx.out / "hf_final"), "--dtype", "float32", "--judge-reward",
                     str(ctx.out / "reward_hf"), "--reward-backend", "transformers", "--output-dir", str(out),
                     "--max-new-tokens", "24",
                     "--keep-truncated", "--bootstrap", "200", "--name", "dpo"])
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    metrics = results["tasks"]["judge"]
    items = [json.loads(line) for line in (out / "judge.jsonl").read_text(encoding="utf-8").splitlines()]
    languages = sorted({it["language"] for it in items})
    judged = [it for it in items if "reward" in it]
    rewards = [it["reward"] for it in judged]
    checks = {
        "every prompt judged or dropped with a reason": len(items) == 30 and all(
            ("reward" in it) != ("dropped" in it) for it in items),
        "all 15 languages scored": len(languages) == 15 and all(f"score/{lang}" in metrics for lang in languages
                                                                if any("reward" in it and it["language"] == lang
                                                                       for it in items)),
        "score is (mean reward + 1) / 2": bool(judged) and abs(metrics["score"] - (np.mean(rewards) + 1) / 2) < 1e-9,
        "interval holds the score": metrics["score_ci_low"] <= metrics["score"] <= metrics["score_ci_high"],
        "language consistency per language": all(f"language_consistency/{lang}" in metrics for lang in languages),
        "wrong-language answers lose": all(it["reward"] == -1.0 for it in judged if not it["model_consistent"]),
    }
    summary = {"score": metrics.get("score"), "score_ci": [metrics.get("score_ci_low"), metrics.get("score_ci_high")],
               "language_consistency": metrics.get("language_consistency"), "judged": len(judged),
               "dropped": results.get("dropped", {}), "judge": results["judge"], "results": str(out / "results.json")}
    return StageResult(summary=summary, checks=checks)
