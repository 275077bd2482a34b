"""Perplexity filtering of translated preference pairs (recipe.md §6.1: "low-quality translations are then filtered
based on perplexity scores provided by the Sailor2-8B base").

Each side of a pair (the prompt with the chosen response, the prompt with the rejected one) is chat-rendered and
scored by SFT selection's scorer (post/select.py `score_policy`: the perplexity of the response's assistant tokens
under the model, batched, jitted, sharded). A pair's perplexity is the larger of its two sides' — a garbled
translation of either response makes the pair unusable. Pairs are kept up to a perplexity cut: the `keep` quantile
within each language (default; a language's translations are judged against each other, since perplexities differ
across languages and scripts), or an absolute `max_ppl`. Every pair is accounted for: kept + removed (by reason:
`high_perplexity`, and the reader's and tokeniser's reasons) = read.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np

from sailor2_jax.post.conversation_files import Accounting, Conversation, PreferencePair, Rejection


@dataclasses.dataclass
class Filtered:
    kept: list[tuple[PreferencePair, float, float]]      # pair, chosen ppl, rejected ppl
    removed: list[tuple[PreferencePair, float, float]]   # above the cut
    cut: dict[str, float]                                # per language (or "all"): the largest kept perplexity


def pair_conversations(pairs: Sequence[PreferencePair]) -> list[Conversation]:
    """Two conversations per pair (chosen side, rejected side), in order."""
    return [Conversation(p.prompt + side, p.language, None, p.source, {}) for p in pairs
            for side in (p.chosen, p.rejected)]


def cuts(ppl: np.ndarray, languages: Sequence[str | None], keep: float | None, max_ppl: float | None
         ) -> dict[str, float]:
    """The largest perplexity kept, per language (`keep` quantile) or for all (`max_ppl`)."""
    if max_ppl is not None:
        return {"all": float(max_ppl)}
    groups = collections.defaultdict(list)
    for value, language in zip(ppl, languages):
        groups[language or "unknown"].append(value)
    return {lang: float(np.quantile(np.asarray(v), keep, method="inverted_cdf")) for lang, v in groups.items()}


def filter_pairs(pairs: Sequence[PreferencePair], chosen_ppl: np.ndarray, rejected_ppl: np.ndarray, *,
                 keep: float | None = 0.9, max_ppl: float | None = None, acc: Accounting | None = None) -> Filtered:
    if (keep is None) == (max_ppl is None):
        raise ValueError("give exactly one of keep (a quantile per language) and max_ppl (an absolute cut)")
    if keep is not None and not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    acc = acc if acc is not None else Accounting()
    pair_ppl = np.maximum(chosen_ppl, rejected_ppl)
    cut = cuts(pair_ppl, [p.language for p in pairs], keep, max_ppl)
    out = Filtered([], [], cut)
    for p, c, r, worst in zip(pairs, chosen_ppl, rejected_ppl, pair_ppl):
        limit = cut["all"] if "all" in cut else cut[p.language or "unknown"]
        if worst <= limit:
            out.kept.append((p, float(c), float(r)))
        else:
            out.removed.append((p, float(c), float(r)))
            acc.reject(Rejection(p.source, "high_perplexity", f"{worst:.1f} > {limit:.1f}"))
    acc.kept = len(out.kept)
    return out
