"""Chat evaluation as Sea-WildBench does it (WildBench's pairwise reward, arXiv 2406.04770; sail-sg/SEA-WildBench):
the model under test and a reference answer each prompt, a judge compares the two.

Per item (a prompt with its checklist and language):
- **A/B order** randomised per item, seeded: `model_is_a(id, seed)` (a hash, so it does not depend on the order or
  number of items);
- **the judge's input**: the conversation before the last user turn, that turn, both responses each cut at 1,000
  words (then "... (truncated)"), the checklist plus Sea-WildBench's language item; the judge answers JSON whose
  `choice` is one of A++ / A+ / A=B / B+ / B++ (the template is this project's wording of WildBench's pairwise
  template, `pairwise_messages`);
- **reward** (the model's side): +1 / +0.5 / 0 / -0.5 / -1; a slight win or loss (±0.5) becomes a tie when the
  winner's response is longer than the loser's by more than K characters (default 500; K < 0 turns it off);
- **dropped** (and counted by reason): the model's or the reference's response is empty or was truncated by the
  length limit, or the judge's answer names no choice (`parse_error`: Sea-WildBench's own caveat);
- **language**: a model response that lid.176 does not find in the prompt's language is a critical failure: reward
  -1 whatever the judge said (Sea-WildBench asks its judge to rank it below any quality issue; the rule is applied
  here so that every judge, the reward model included, follows it).

Aggregates, overall and per language: `score` = (mean reward + 1) / 2 (Sea-WildBench's reward.normalized), its 95%
bootstrap interval (`score_ci_low`, `score_ci_high`; items resampled with replacement, seeded), `win_rate` (share
of wins, much or slight) with its interval from the same resamples, the outcome counts, and `language_consistency`
(share of the model's responses in the prompt's language, over every answered item).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence

import numpy as np

CHOICES = ("A++", "A+", "A=B", "B+", "B++")
A_REWARD = {"A++": 1.0, "A+": 0.5, "A=B": 0.0, "B+": -0.5, "B++": -1.0}
OUTCOMES = {1.0: "win_much", 0.5: "win", 0.0: "tie", -0.5: "lose", -1.0: "lose_much"}
LANGUAGE_ITEM = ("Is the response written in the same language as the user's query (apart from text the task "
                 "itself asks for in another language)? A response in another language is a critical flaw, worse "
                 "than any weakness of content.")

JUDGE_SYSTEM = "You are a careful, impartial expert who evaluates the answers of AI assistants."
JUDGE_TEMPLATE = """# Task
Compare two responses of AI assistants to the user's latest query and decide which is better.

# Conversation so far
<|begin_of_history|>
{history}
<|end_of_history|>

# The user's latest query
<|begin_of_query|>
{query}
<|end_of_query|>

# Response A
<|begin_of_response_A|>
{response_a}
<|end_of_response_A|>

# Response B
<|begin_of_response_B|>
{response_b}
<|end_of_response_B|>

# Checklist
Let these questions guide your judgement; they do not limit it.
{checklist}

# How to judge
- Analyse each response against the query and the checklist, then compare them.
- Choose "A++" if A is much better than B, "A+" if A is slightly better, "A=B" if they are equally good (use this
  rarely), "B+" if B is slightly better, "B++" if B is much better.
- Length is not quality: do not prefer a response for being longer.
- Language consistency comes first: a response not written in the language of the query loses to one that is.

# Output
Answer with one JSON object and nothing else:
{{"analysis of A": "...", "analysis of B": "...", "reason of A=B": "...", "reason of A>B": "...",
 "reason of B>A": "...", "choice": "A++ | A+ | A=B | B+ | B++"}}
"""


def truncate_words(text: str, max_words: int = 1000) -> str:
    """The first `max_words` whitespace-separated words, then "... (truncated)" when anything was cut."""
    words = text.split()
    if len(words) <= max_words:
        return text
    return " ".join(words[:max_words]) + " ... (truncated)"


def model_is_a(item_id: str, seed: int) -> bool:
    return hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[0] % 2 == 0


def pairwise_messages(messages: Sequence[Mapping[str, str]], response_a: str, response_b: str,
                      checklist: Sequence[str], max_words: int = 1000) -> list[dict[str, str]]:
    """The judge's chat request for one item."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise ValueError("a judged conversation needs a user turn")
    last = users[-1]
    history = "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages[:last] if m["role"] != "system")
    items = [*checklist, LANGUAGE_ITEM]
    text = JUDGE_TEMPLATE.format(history=history or "(none)", query=messages[last]["content"],
                                 response_a=truncate_words(response_a, max_words),
                                 response_b=truncate_words(response_b, max_words),
                                 checklist="\n".join(f"- {c}" for c in items))
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": text}]


_CHOICE_RE = re.compile(r'"choice"\s*:\s*"\s*(A\+\+|A\+|A=B|B\+\+|B\+)')


def parse_choice(output: str) -> str | None:
    """The judge's `choice` (the JSON object's, else the first `"choice": "..."` in the text), or None."""
    start, end = output.find("{"), output.rfind("}")
    if 0 <= start < end:
        try:
            choice = json.loads(output[start:end + 1]).get("choice")
            if isinstance(choice, str) and choice.strip() in CHOICES:
                return choice.strip()
        except (json.JSONDecodeError, AttributeError):
            pass
    m = _CHOICE_RE.search(output)
    return m.group(1) if m else None


def model_reward(choice: str, is_a: bool) -> float:
    reward = A_REWARD[choice]
    return reward if is_a else -reward


def length_rule(reward: float, model_chars: int, reference_chars: int, k: int) -> float:
    """A slight win or loss becomes a tie when the winner is longer than the loser by more than k characters."""
    if k < 0 or abs(reward) != 0.5:
        return reward
    winner, loser = (model_chars, reference_chars) if reward > 0 else (reference_chars, model_chars)
    return 0.0 if winner - loser > k else reward


def bootstrap_intervals(rewards: Sequence[float], n: int, seed: int) -> dict[str, float]:
    """95% intervals of the score ((mean + 1) / 2) and of the win rate over `n` resamples with replacement (the
    same resamples for both)."""
    if not rewards or n <= 0:
        return {k: float("nan") for k in ("score_ci_low", "score_ci_high", "win_rate_ci_low", "win_rate_ci_high")}
    r = np.asarray(rewards, float)
    sample = r[np.random.default_rng(seed).integers(0, len(r), (n, len(r)))]
    scores, wins = (sample.mean(axis=1) + 1) / 2, (sample > 0).mean(axis=1)
    return {"score_ci_low": float(np.percentile(scores, 2.5)), "score_ci_high": float(np.percentile(scores, 97.5)),
            "win_rate_ci_low": float(np.percentile(wins, 2.5)), "win_rate_ci_high": float(np.percentile(wins, 97.5))}


def aggregate(items: Sequence[Mapping], bootstrap: int = 1000, seed: int = 0) -> dict[str, float]:
    """The judge task's metrics (module docstring) from judged items (`reward` or `dropped`, `language`,
    `model_consistent`)."""
    def metrics(group: Sequence[Mapping]) -> dict[str, float]:
        kept = [it for it in group if not it.get("dropped")]
        rewards = [it["reward"] for it in kept]
        out: dict[str, float] = {"judged": float(len(kept)), "dropped": float(len(group) - len(kept))}
        if rewards:
            out |= {"score": (float(np.mean(rewards)) + 1) / 2, "win_rate": float(np.mean([r > 0 for r in rewards])),
                    **bootstrap_intervals(rewards, bootstrap, seed)}
            for value, name in OUTCOMES.items():
                out[name] = float(sum(r == value for r in rewards))
        answered = [it["model_consistent"] for it in group if "model_consistent" in it]
        if answered:
            out["language_consistency"] = 100.0 * float(np.mean(answered))
        return out

    out = metrics(items)
    for lang in sorted({it["language"] for it in items}):
        out |= {f"{k}/{lang}": v for k, v in metrics([it for it in items if it["language"] == lang]).items()}
    return out
