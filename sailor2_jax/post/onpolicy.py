"""One on-policy round (recipe.md §6.1): prompts → K samples from the policy → reward scores → language verdicts →
(chosen, rejected) pairs.

For each prompt the policy samples K responses with the generation engine (the K samples share one prefill), the
reward model scores each (prompt, response) conversation with its own chat template, the verifier
(post/verifier.py) marks each response consistent or not, and `choose_pair` picks the pair. Every prompt is
accounted for: read = malformed + no pair (by reason) + pairs.

A prompt line is `{"prompt": text}` or `{"messages": [...]}` (a chat whose last turn is the user's), optionally with
`language`, and `task: translation` with `target_language`; other fields are kept. A pair line is what the
preference loader reads (post/conversation_files.py), with the evidence: `prompt` (as given, or the messages), `chosen`,
`rejected`, `chosen_score`, `rejected_score`, `language` (the expected one), `languages` and `consistent` (per
sample), `all_scores`, `rejected_for` (`language` or `score`) and the prompt's other fields.

`Sampler` is a function (token-id prompts, K) → K texts per prompt: the `onpolicy` command wraps a `Generator` of an
exported or trained policy, and the online mode (train/online.py) the live parameters of the run.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sailor2_jax.files import write_json
from sailor2_jax.post.reward import RewardModel
from sailor2_jax.post.verifier import LanguageVerifier, Pair, choose_pair

Sampler = Callable[[Sequence[Sequence[int]], int], list[list[str]]]
Messages = list[dict[str, str]]


@dataclasses.dataclass(frozen=True)
class PromptRecord:
    record: dict[str, Any]          # the line as read
    messages: Messages              # the chat the policy answers (a text prompt is one user message)
    where: str                      # file:line


def read_prompts(path: str | Path, counts: collections.Counter | None = None, *, log=None) -> list[PromptRecord]:
    """The good prompts of a JSONL file; a malformed line is reported (file:line: reason) and counted."""
    from sailor2_jax.post.conversation_files import parse_prompt_line, prompt_lines

    counts = counts if counts is not None else collections.Counter()
    out = []
    for number, raw in prompt_lines(path):
        counts["read"] += 1
        try:
            record, messages = parse_prompt_line(raw, chat=True)
            if messages[-1]["role"] != "user":
                raise ValueError("the chat must end with a user turn (the policy answers it)")
            if record.get("task") == "translation" and not isinstance(record.get("target_language"), str):
                raise ValueError("task: translation needs `target_language`")
        except ValueError as e:
            counts["malformed"] += 1
            (log or (lambda m: print(m, file=sys.stderr)))(f"{path}:{number}: {e}; prompt skipped")
            continue
        out.append(PromptRecord(record, messages, f"{path}:{number}"))
    return out


def generator_sampler(generator, tokenizer, *, sampling, max_new_tokens: int, seed: int, eos_ids: Sequence[int],
                      batch_size: int, on_batch=None) -> Sampler:
    """A `Sampler` over a `generate.engine.Generator` (prompts chat-encoded by `encode_prompts`): texts without
    their stop token."""
    def sample(prompts: Sequence[Sequence[int]], k: int) -> list[list[str]]:
        results = generator.generate(prompts, sampling=sampling, max_new_tokens=max_new_tokens, num_samples=k,
                                     seed=seed, eos_ids=tuple(eos_ids), batch_size=batch_size, on_batch=on_batch)
        return [[tokenizer.decode(c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids,
                                  skip_special_tokens=False) for c in completions] for completions in results]
    return sample


def encode_prompts(prompts: Sequence[PromptRecord], tokenizer, system: str | None) -> list[list[int]]:
    from sailor2_jax.post.chat import encode_batch

    return [list(e.ids) for e in encode_batch([p.messages for p in prompts], add_generation_prompt=True,
                                                default_system=system, tokenizer=tokenizer)]


def make_pairs(prompts: Sequence[PromptRecord], responses: Sequence[Sequence[str]], reward: RewardModel,
               verifier: LanguageVerifier | None, counts: collections.Counter | None = None) -> list[dict[str, Any]]:
    """Score, verify and pair each prompt's responses; `verifier` None turns the language check off (every response
    counts as consistent; languages are not identified). No-pair prompts are counted by reason in `counts`."""
    counts = counts if counts is not None else collections.Counter()
    k = len(responses[0]) if responses else 0
    conversations = [p.messages + [{"role": "assistant", "content": r}] for p, rs in zip(prompts, responses)
                     for r in rs]
    scores_PK = reward.score(conversations).reshape(len(prompts), k) if prompts else np.zeros((0, k))
    out = []
    for p, rs, scores in zip(prompts, responses, scores_PK):
        scores = [float(s) for s in scores]
        if verifier is not None:
            expected = verifier.expected_language(p.record, p.messages)
            verdicts = [verifier.verdict(r, expected) for r in rs]
            languages, consistent = [v.language for v in verdicts], [v.consistent for v in verdicts]
        else:
            expected, languages, consistent = p.record.get("language"), None, [True] * len(rs)
        pair = choose_pair(scores, consistent)
        if not isinstance(pair, Pair):
            counts[pair] += 1
            continue
        counts["pairs"] += 1
        counts["rejected_for_language"] += pair.by_language
        prompt = p.record.get("prompt", p.messages)
        extra = {key: v for key, v in p.record.items() if key not in ("prompt", "messages")}
        out.append(extra | {
            "prompt": prompt, "chosen": rs[pair.chosen], "rejected": rs[pair.rejected],
            "chosen_score": scores[pair.chosen], "rejected_score": scores[pair.rejected],
            "language": expected, "languages": languages, "consistent": consistent, "all_scores": scores,
            "rejected_for": "language" if pair.by_language else "score"})
    return out



def summary_line(counts: collections.Counter, k: int) -> str:
    no_pair = {r: counts[r] for r in ("no_consistent_response", "all_scores_equal") if counts[r]}
    return (f"{counts['read']} prompts read, {counts['malformed']} malformed; {counts['pairs']} pairs from {k} samples "
            f"each ({counts['rejected_for_language']} with a wrong-language rejected); no pair: "
            f"{', '.join(f'{r} {n}' for r, n in no_pair.items()) or 'none'}")


def write_summary(path: str | Path, counts: collections.Counter, **extra: Any) -> None:
    """`counts` and `extra` as JSON, atomically."""
    write_json(path, dict(counts) | extra)
