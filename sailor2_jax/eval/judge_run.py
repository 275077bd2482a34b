"""The judge task end to end: prompts → the model's answers and the reference answers → the judge → items →
metrics, written as `DIR/judge.jsonl` (one line per prompt: both answers, the A/B order, the judge's raw answer, the
choice, the reward before and after the length and language rules, or why it was dropped) and `DIR/results.json`
(the eval format: `{"tasks": {"judge": metrics}, ...}`, so `eval-report` compares judge runs with eval runs)."""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from sailor2_jax.eval.judge import (
    aggregate,
    length_rule,
    model_is_a,
    model_reward,
    pairwise_messages,
    parse_choice,
    truncate_words,
)
from sailor2_jax.eval.judge_backends import RewardJudge
from sailor2_jax.eval.judge_data import JudgePrompt
from sailor2_jax.files import write_atomic, write_jsonl


def run_judge(prompts: list[JudgePrompt], answerer, judge, out_dir: Path, *, reference=None, k: int = 500,
              seed: int = 0, max_words: int = 1000, bootstrap: int = 1000, verifier=None, model_name: str | None = None,
              rejected: int = 0, keep_truncated: bool = False) -> dict:
    """Judge `answerer`'s answers against `reference`'s (an answerer) or, without one, the prompts' `reference`
    fields; returns the summary written to results.json. `keep_truncated` judges answers cut by the length limit
    instead of dropping them (Sea-WildBench drops them; for smoke runs of models that seldom stop)."""
    if not prompts:
        raise ValueError("no judge prompt to run")
    if verifier is None:
        from sailor2_jax.post.verifier import LanguageVerifier
        verifier = LanguageVerifier()
    start = time.time()
    conversations = [p.messages for p in prompts]
    answers = answerer.answer(conversations)
    if reference is not None:
        references = reference.answer(conversations)
        reference_name = reference.name
    else:
        missing = [p.where for p in prompts if p.reference is None]
        if missing:
            raise ValueError(f"{len(missing)} prompts have no `reference` answer (first: {missing[0]}); give a "
                             "reference model")
        references, reference_name = [(p.reference, False) for p in prompts], "the prompts' reference answers"

    items, todo = [], []
    for p, (answer, truncated), (ref, ref_truncated) in zip(prompts, answers, references):
        verdict = verifier.verdict(answer, p.language)
        item = {"id": p.id, "language": p.language, "tag": p.tag, "model_answer": answer, "reference_answer": ref,
                "model_language": verdict.language, "model_consistent": verdict.consistent,
                "model_is_a": model_is_a(p.id, seed)}
        item |= {"model_truncated": truncated, "reference_truncated": ref_truncated}
        if keep_truncated:
            truncated = ref_truncated = False
        reasons = [r for r, bad in (("model_empty", not answer.strip()), ("model_truncated", truncated),
                                    ("reference_empty", not ref.strip()), ("reference_truncated", ref_truncated))
                   if bad]
        if reasons:
            item["dropped"] = reasons[0]
        else:
            todo.append(len(items))
        items.append(item)

    if todo:
        a = [items[i]["model_answer"] if items[i]["model_is_a"] else items[i]["reference_answer"] for i in todo]
        b = [items[i]["reference_answer"] if items[i]["model_is_a"] else items[i]["model_answer"] for i in todo]
        convs = [prompts[i].messages for i in todo]
        if isinstance(judge, RewardJudge):
            outputs = judge.judge_pairs(convs, [truncate_words(x, max_words) for x in a],
                                        [truncate_words(x, max_words) for x in b])
        else:
            requests = [pairwise_messages(c, x, y, prompts[i].checklist, max_words)
                        for c, x, y, i in zip(convs, a, b, todo)]
            with tqdm(total=len(requests), desc="judge", unit="item", file=sys.stderr) as bar:
                outputs = judge.judge(requests, on_item=bar.update)
        for i, output in zip(todo, outputs):
            item = items[i]
            choice = parse_choice(output)
            item |= {"judge_output": output, "choice": choice}
            if choice is None:
                item["dropped"] = "parse_error"
                continue
            raw = model_reward(choice, item["model_is_a"])
            reward = length_rule(raw, len(item["model_answer"]), len(item["reference_answer"]), k)
            if not item["model_consistent"]:
                reward = -1.0  # a critical failure whatever the judge said
            item |= {"reward_judge": raw, "reward": reward}

    metrics = aggregate(items, bootstrap=bootstrap, seed=seed)
    dropped = collections.Counter(it["dropped"] for it in items if "dropped" in it)
    write_jsonl(out_dir / "judge.jsonl", items)
    summary = {"tasks": {"judge": metrics}, "model": model_name or answerer.name, "judge": judge.name,
               "reference": reference_name, "keep_truncated": keep_truncated, "k": k, "seed": seed,
               "max_words": max_words,
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": round(time.time() - start, 1),
               "records": {"judge": {"read": len(prompts) + rejected, "scored": len(items) - sum(dropped.values()),
                                     "skipped": rejected}},
               "dropped": dict(dropped), "judge_calls": getattr(judge, "calls", None)}
    write_atomic(out_dir / "results.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
