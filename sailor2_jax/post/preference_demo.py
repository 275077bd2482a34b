"""The demo's preference-tuning stage (recipe.md §6), after its off-policy DPO on the embedded pairs (`OUT/dpo`):
a reward model trained by the `reward` objective on the same pairs and exported as a `Qwen2ForSequenceClassification`
→ one on-policy round from the DPO policy through the `onpolicy` command (4 samples per prompt, reward scores,
the language-consistency verifier) → DPO from the off-policy checkpoint on the new pairs.

The models are tiny and barely trained, so the sampled text is gibberish and lid.176's verdicts on it are arbitrary:
the pipeline is the point (the verifier's behaviour on real text is tested on UDHR, tests/post/test_verifier.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sailor2_jax.config import resolve_path

PREFERENCES = "data/post/preference.jsonl"


def onpolicy_prompts(path: Path) -> int:
    """One prompt per language from the embedded pairs (with its `language`), written as a prompts file."""
    seen, prompts = set(), []
    for line in resolve_path(PREFERENCES).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["language"] not in seen:
            seen.add(record["language"])
            prompts.append({"id": record["id"], "prompt": record["prompt"], "language": record["language"]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in prompts), encoding="utf-8")
    return len(prompts)


def preference_stage(out: Path, summary: dict, console, step) -> None:
    from sailor2_jax.cli import run_command
    from sailor2_jax.demo import FP32, _train
    from sailor2_jax.model.reward import export_reward
    from sailor2_jax.model.source import open_run

    for run in ("reward", "dpo_onpolicy", "onpolicy"):
        shutil.rmtree(out / run, ignore_errors=True)
    step("9b. a reward model trained by Bradley-Terry on the embedded pairs, exported as a sequence classifier")
    # started from the SFT run: its decoder under a new score head
    _, reward_losses = _train("reward", out, ["model=null", f"init.checkpoint={out / 'sft'}", "steps=4",
                                              "checkpoint.every=4"], base="demo_reward")
    model, _ = open_run(out / "reward", dtype="float32")
    reward_dir = export_reward(model, out / "reward_hf", tokenizer=out / "base", overwrite=True)

    step("9c. one on-policy round: 4 samples per prompt from the DPO policy, reward scores, language verifier")
    prompts, pairs = out / "onpolicy" / "prompts.jsonl", out / "onpolicy" / "pairs.jsonl"
    n = onpolicy_prompts(prompts)
    argv = ["onpolicy", "--policy", str(out / "dpo"), "--reward-model", str(reward_dir), "--prompts", str(prompts),
            "--samples", "4", "--temperature", "0.8", "--max-new-tokens", "16", "--out", str(pairs)]
    run_command(argv, console)
    counts = json.loads((out / "onpolicy" / "pairs.jsonl.summary.json").read_text())
    summary["preference"] = {"reward_losses": reward_losses, "reward_model": str(reward_dir), "prompts": n,
                             "onpolicy": {k: counts.get(k, 0) for k in ("pairs", "rejected_for_language",
                                                                          "no_consistent_response",
                                                                          "all_scores_equal")}}
    if not counts.get("pairs"):
        console.print("[yellow]no on-policy pair this time (no consistent sample): the on-policy DPO step is skipped")
        return
    step("9d. on-policy DPO: from the off-policy checkpoint on the new pairs")
    _, dpo = _train("dpo_onpolicy", out, ["model=null", f"init.checkpoint={out / 'dpo'}", "steps=2",
                                          "checkpoint.every=2", f"data.files=[{pairs}]"], base="demo_dpo")
    summary["preference"]["onpolicy_dpo_losses"] = dpo
