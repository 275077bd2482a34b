"""Perplexity filtering of preference pairs: the cut per language or absolute, every pair accounted for."""

import numpy as np
import pytest

from sailor2_jax.post.filter_ppl import filter_pairs, pair_conversations
from sailor2_jax.post.conversation_files import Accounting, PreferencePair, Source


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


def test_filter_ppl_command(tmp_path, capsys):
    """End to end on a tiny random Qwen2: perplexities equal transformers' on the chat-rendered sides, half of each
    language kept, a malformed line and an over-long pair accounted for."""
    import json

    import torch
    from reward_helpers import policy_dir, udhr
    from transformers import Qwen2ForCausalLM

    from sailor2_jax.cli import main
    from sailor2_jax.post import chat

    model = policy_dir(tmp_path / "lm")
    records = [{"prompt": udhr(lang, i)[:60], "chosen": udhr(lang, i + 1)[:80], "rejected": udhr(lang, i + 2)[:70],
                "language": lang} for lang in ("th", "vi") for i in range(4)]
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    lines.insert(3, "{broken")
    lines.append(json.dumps({"prompt": "q", "chosen": udhr("en", 0) * 3, "rejected": "short", "language": "en"}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["filter-ppl", "--model", str(model), "--input", str(tmp_path / "pairs.jsonl"), "--output-dir",
                 str(tmp_path / "out"), "--keep", "0.5", "--max-tokens", "200", "--dtype", "float32"]) == 0
    kept = [json.loads(x) for x in (tmp_path / "out" / "kept.jsonl").read_text().splitlines()]
    removed = [json.loads(x) for x in (tmp_path / "out" / "removed.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["pairs/read"] == 10 and summary["pairs/kept"] == len(kept) == 4 and len(removed) == 4
    assert summary["pairs/rejected/high_perplexity"] == 4 and summary["pairs/rejected/too_long"] == 1
    assert summary["pairs/rejected/malformed_json"] == 1
    assert sorted(r["language"] for r in kept) == ["th", "th", "vi", "vi"]
    for k in kept:
        assert max(k["chosen_ppl"], k["rejected_ppl"]) <= summary["cut"][k["language"]]

    hf = Qwen2ForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    for r in kept + removed:
        for side in ("chosen", "rejected"):
            enc = chat.encode(r["prompt"] + r[side])
            with torch.no_grad():
                logp = torch.log_softmax(hf(torch.tensor(enc.ids[None], dtype=torch.long)).logits[0, :-1], -1)
            target = torch.tensor(enc.ids[1:], dtype=torch.long)
            nll = -logp.gather(-1, target[:, None])[:, 0].numpy()
            want = float(np.exp(nll[enc.assistant_mask[1:]].mean()))
            assert r[f"{side}_ppl"] == pytest.approx(want, rel=1e-4)
