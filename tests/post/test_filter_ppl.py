"""Perplexity filtering of preference pairs: the cut per language or absolute, every pair accounted for."""

import numpy as np
import pytest

from sailor2_jax.post.filter_ppl import filter_pairs, pair_conversations
from sailor2_jax.post.records import Accounting, PreferencePair, Source


def pairs(languages):
    user = [{"role": "user", "content": "q"}]
    return [PreferencePair(user, [{"role": "assistant", "content": f"good {i}"}],
                           [{"role": "assistant", "content": f"bad {i}"}], lang, Source("f.jsonl", i + 1))
            for i, lang in enumerate(languages)]


def test_pair_conversations_are_prompt_plus_each_side():
    ps = pairs(["en"])
    convs = pair_conversations(ps)
    assert [c.messages for c in convs] == [ps[0].prompt + ps[0].chosen, ps[0].prompt + ps[0].rejected]


def test_cut_per_language_on_the_worse_side():
    ps = pairs(["th"] * 4 + ["en"] * 4)
    chosen = np.array([5, 6, 7, 8, 2, 2, 2, 2], float)
    rejected = np.array([1, 1, 1, 90, 3, 4, 5, 2.5], float)   # a pair is as bad as its worse side
    acc = Accounting(read=8)
    out = filter_pairs(ps, chosen, rejected, keep=0.75, acc=acc)
    # th pair perplexities 5, 6, 7, 90 -> cut 7; en 3, 4, 5, 2.5 -> cut 4: each language loses its worst quarter
    assert out.cut == {"th": 7.0, "en": 4.0}
    assert sorted(p.source.line for p, _, _ in out.removed) == [4, 7]
    assert acc.kept == 6 and acc.rejected == {"high_perplexity": 2} and acc.balanced


def test_absolute_cut_and_bad_arguments():
    ps = pairs(["th", "en", None])
    out = filter_pairs(ps, np.array([1.0, 9.0, 3.0]), np.array([2.0, 1.0, 3.5]), keep=None, max_ppl=3.5)
    assert [p.source.line for p, _, _ in out.kept] == [1, 3] and out.cut == {"all": 3.5}
    with pytest.raises(ValueError, match="exactly one"):
        filter_pairs(ps, np.ones(3), np.ones(3), keep=0.5, max_ppl=2.0)
    with pytest.raises(ValueError, match="keep must be"):
        filter_pairs(ps, np.ones(3), np.ones(3), keep=1.5)
