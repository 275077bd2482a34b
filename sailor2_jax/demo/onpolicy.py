"""One on-policy round from the off-policy DPO policy through `sailor2-jax onpolicy` (4 samples per prompt, reward
scores, the language-consistency verifier), then DPO from the off-policy checkpoint on the new pairs.

The models are tiny and barely trained, so the sampled text is gibberish and lid.176's verdicts on it are arbitrary:
the pipeline is the point (the verifier on real text is tested on UDHR, tests/post/test_verifier.py).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from sailor2_jax.config import resolve_path
from sailor2_jax.demo.stage import Context, StageResult
from sailor2_jax.files import write_jsonl

TITLE = "one on-policy round from the DPO policy (reward scores, language verifier), then on-policy DPO"
PREFERENCES = "data/post/preference.jsonl"


def onpolicy_prompts(path: Path) -> int:
    """One prompt per language from the embedded pairs (with its `language`), written as a prompts file."""
    seen, prompts = set(), []
    for line in resolve_path(PREFERENCES).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["language"] not in seen:
            seen.add(record["language"])
            prompts.append({"id": record["id"], "prompt": record["prompt"], "language": record["language"]})
    write_jsonl(path, prompts)
    return len(prompts)


def run(ctx: Context) -> StageResult:
    for run_dir in ("dpo_onpolicy", "onpolicy"):
        shutil.rmtree(ctx.out / run_dir, ignore_errors=True)
    prompts, pairs = ctx.out / "onpolicy" / "prompts.jsonl", ctx.out / "onpolicy" / "pairs.jsonl"
    n = onpolicy_prompts(prompts)
    ctx.run_command(["onpolicy", "--policy", str(ctx.out / "dpo"), "--reward-model", str(ctx.out / "reward_hf"),
                     "--prompts", str(prompts), "--samples", "4", "--temperature", "0.8", "--max-new-tokens", "16",
                     "--output", str(pairs)])
    counts = json.loads((ctx.out / "onpolicy" / "pairs.jsonl.summary.json").read_text())
    outcomes = ("pairs", "no_consistent_response", "all_scores_equal")
    summary = {"prompts": n, **{k: counts.get(k, 0) for k in (*outcomes, "rejected_for_language")}}
    checks = {"every prompt paired or its reason counted": counts.get("read") == n
              == counts.get("malformed", 0) + sum(counts.get(k, 0) for k in outcomes)}
    if not counts.get("pairs"):  # possible with gibberish samples: the DPO step has nothing to learn from
        ctx.console.print("[yellow]no on-policy pair this time (no consistent sample): on-policy DPO is skipped")
        return StageResult(summary, checks)
    _, losses = ctx.train("dpo_onpolicy", ["model=null", f"init.checkpoint={ctx.out / 'dpo'}", "steps=2",
                                           "checkpoint.every=2", f"data.files=[{pairs}]"], base="demo_dpo")
    summary["dpo_losses"] = losses
    checks["finite on-policy DPO losses"] = all(map(math.isfinite, losses))
    return StageResult(summary, checks)
