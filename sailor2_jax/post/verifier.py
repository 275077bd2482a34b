"""The language-consistency verifier and on-policy pair construction (recipe.md §6.1).

Sailor2 "detect[s] and correct[s] cases where the input language differs from the output language, except for the
translation task"; how it corrects is not published. Here (the recipe's recommended default):

- **expected language** of a prompt: its `target_language` when it carries `task: translation`; else its `language`
  field; else fastText lid.176's label of the prompt's last user message (`sailor2_jax/data/clean/langid.py`, with
  pycld2 settling close languages (ms/id, war/ceb, ...) as the cleaning pipeline does).
- **verdict** per response: lid.176's label of the response; it is consistent when the label is the expected
  language. lid.176 cannot reliably tell Malay from Indonesian or Waray from Cebuano on short text (see langid.py),
  so by default (`lenient_pairs`) a label in the expected language's confusable pair also counts as consistent. An
  empty response has no language (`und`) and is inconsistent.
- **pair**: the chosen is the highest-scored consistent response; the rejected is the lowest-scored
  language-inconsistent response if there is one (the verifier's correction: a wrong-language answer is what the
  policy should move away from, whatever its reward), else the lowest-scored consistent one. No pair, counted by
  reason: `no_consistent_response` (nothing to choose) and `all_scores_equal` (the reward model cannot tell the
  samples apart, e.g. identical samples). Equal scores pick the first response in sample order, so a pair is a
  pure function of (responses, scores, verdicts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from sailor2_jax.data.clean.langid import LanguageIdentifier
from sailor2_jax.languages import canonical_language

UNDETERMINED = "und"
# the pairs lid.176 cannot tell apart on short text, one for the other (narrower than the cleaning's close groups:
# a Javanese answer to an Indonesian prompt is a change of language)
LENIENT_PAIRS: dict[str, frozenset[str]] = {
    "ms": frozenset({"ms", "id"}), "id": frozenset({"ms", "id"}),
    "war": frozenset({"war", "ceb"}), "ceb": frozenset({"war", "ceb"}),
}
NO_CONSISTENT = "no_consistent_response"
ALL_EQUAL = "all_scores_equal"


@dataclasses.dataclass(frozen=True)
class Verdict:
    language: str      # lid.176's label of the response (`und` for an empty one)
    consistent: bool


@dataclasses.dataclass(frozen=True)
class Pair:
    chosen: int        # index of the chosen response among the samples
    rejected: int
    by_language: bool  # the rejected was picked for its language, not its score


def prompt_text(prompt: str | Sequence[Mapping[str, str]]) -> str:
    """The text whose language a prompt is in: a text prompt itself, else its last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    if not users:
        raise ValueError("the prompt has no user message to take its language from")
    return users[-1]


class LanguageVerifier:
    """Expected languages of prompts and consistency verdicts on responses (lid.176 + pycld2, no downloads)."""

    def __init__(self, identifier: LanguageIdentifier | None = None, lenient_pairs: bool = True):
        self.identifier = identifier or LanguageIdentifier()
        self.lenient_pairs = lenient_pairs

    def identify(self, text: str, hint: str | None = None) -> str:
        """lid.176's label of `text`; with a `hint` in a confusable pair, pycld2 may settle the pair for the hint
        (langid.py's rule with no probability cutoff)."""
        if not text.strip():
            return UNDETERMINED
        if hint is None:
            return self.identifier.predict(text, k=1)[0][0]
        return self.identifier.check(text, hint, cutoff=0.0).label

    def expected_language(self, record: Mapping[str, Any], prompt: str | Sequence[Mapping[str, str]]) -> str:
        """The language a response to `record` must be in (module docstring); a ValueError names a bad field."""
        task = record.get("task")
        if task == "translation":
            target = record.get("target_language")
            if not isinstance(target, str) or not target.strip():
                raise ValueError("task: translation needs `target_language` (the language the answer is in)")
            return canonical_language(target)
        if task is not None and not isinstance(task, str):
            raise ValueError(f"`task` must be a string, got {type(task).__name__}")
        language = record.get("language")
        if language is not None:
            if not isinstance(language, str) or not language.strip():
                raise ValueError(f"`language` must be a non-empty language code, got {language!r}")
            return canonical_language(language)
        return self.identify(prompt_text(prompt))

    def verdict(self, response: str, expected: str) -> Verdict:
        label = self.identify(response, hint=expected)
        ok = label == expected or (self.lenient_pairs and label in LENIENT_PAIRS.get(expected, ()))
        return Verdict(label, ok and label != UNDETERMINED)


def choose_pair(scores: Sequence[float], consistent: Sequence[bool]) -> Pair | str:
    """The (chosen, rejected) indices of one prompt's samples, or the reason there is no pair (module docstring)."""
    if len(scores) != len(consistent):
        raise ValueError(f"{len(scores)} scores for {len(consistent)} verdicts")
    if len(scores) < 2:
        raise ValueError("a pair needs at least two samples per prompt")
    good = [i for i, ok in enumerate(consistent) if ok]
    if not good:
        return NO_CONSISTENT
    if min(scores) == max(scores):
        return ALL_EQUAL
    chosen = max(good, key=lambda i: (scores[i], -i))
    bad = [i for i, ok in enumerate(consistent) if not ok]
    if bad:
        return Pair(chosen, min(bad, key=lambda i: (scores[i], i)), by_language=True)
    # all consistent and not all equal: the lowest score is below the highest, so this is another response
    return Pair(chosen, min(good, key=lambda i: (scores[i], i)), by_language=False)
