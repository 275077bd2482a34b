"""SFT stage-2 selection: perplexity equals `transformers`' on a tiny random model, planted near-duplicates are
removed and distinct conversations kept, quotas balance the languages, and the command writes its four outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

from sailor2_jax.config import ComputeConfig, MeshConfig
from sailor2_jax.embedded import post_data as udhr_data
from sailor2_jax.post.chat import SAILOR2_SYSTEM_PROMPT
from sailor2_jax.post.conversation_files import read_conversations
from sailor2_jax.post.select import Scores, SelectConfig, policy_embeddings, quotas, score_policy, select
from sailor2_jax.post.sft_data import tokenize_conversations
from sailor2_jax.sharding import make_mesh

FP32 = ComputeConfig(dtype="float32")
V = 151936  # the real vocabulary: the conversations are tokenised with the Qwen2.5 tokenizer


def _hf_config(**kw) -> Qwen2Config:
    return Qwen2Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6,
                       max_position_embeddings=1024, bos_token_id=151643, eos_token_id=151645, **kw)


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))


@pytest.fixture(scope="module")
def hf_lm(tmp_path_factory):
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(_hf_config()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    path = tmp_path_factory.mktemp("lm")
    model.save_pretrained(path)
    return model, str(path)


def _examples(tmp_path, records, max_tokens=1024):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return tokenize_conversations(read_conversations([str(path)]), max_tokens, progress=False), str(path)


def _udhr_records(languages=("th", "vi", "id", "en", "km"), domains=("continue", "quote")):
    return [r for r in udhr_data.conversations(udhr_data.passages())
            if r["language"] in languages and r["domain"] in domains]


def test_perplexity_equals_transformers(tmp_path, hf_lm, mesh):
    from sailor2_jax.model.hf import import_hf

    ref, path = hf_lm
    examples, _ = _examples(tmp_path, _udhr_records(("th", "en"), ("continue", "quote"))[:9])
    scores = score_policy(import_hf(path, mesh, FP32), examples, mesh, system=SAILOR2_SYSTEM_PROMPT, batch_size=4,
                          progress=False)
    for ex, nll, n in zip(examples, scores.nll, scores.tokens):
        with torch.no_grad():
            logits = ref(torch.tensor(ex.ids[None], dtype=torch.long)).logits[0, :-1].double()
        logp = torch.log_softmax(logits, -1)[torch.arange(len(ex.ids) - 1), torch.tensor(ex.ids[1:])].numpy()
        mask = ex.mask[1:]
        assert n == mask.sum() > 0
        want = np.exp(-logp[mask].mean())
        np.testing.assert_allclose(np.exp(nll), want, rtol=1e-4)


def test_planted_near_duplicates_are_removed_and_distinct_ones_kept(tmp_path, mesh):
    from sailor2_jax.config import load_model_config
    from sailor2_jax.model.init import create_model

    # one task per passage: two tasks quoting the same passage are near-duplicates too (the embedding finds them)
    records = _udhr_records(domains=("continue",))
    planted = []
    for k in (0, 7, 15):  # the same conversation with one character of the answer changed
        dup = json.loads(json.dumps(records[k]))
        dup["messages"][1]["content"] = dup["messages"][1]["content"].rstrip(".") + "!"
        dup["id"] += "-dup"
        planted.append(dup)
    examples, _ = _examples(tmp_path, records + planted)
    model = create_model(load_model_config("tiny"), mesh, seed=0, compute=FP32)
    embedding = policy_embeddings(model, examples, mesh, system=SAILOR2_SYSTEM_PROMPT, batch_size=8,
                                  progress=False)
    scores = Scores(nll=np.zeros(len(examples)), tokens=np.ones(len(examples)), embedding=embedding)
    sel = select(scores, [e.conversation.language for e in examples], [e.conversation.domain for e in examples],
                 SelectConfig(keep=1.0, similarity_threshold=0.9))
    n = len(records)
    flagged = set(np.flatnonzero(sel.duplicate_of >= 0))
    pairs = {k: n + j for j, k in enumerate((0, 7, 15))}
    assert len(flagged) == 3 and all(len(flagged & {k, d}) == 1 for k, d in pairs.items())
    for i in flagged:  # each removed one duplicates its twin
        twin = pairs | {d: k for k, d in pairs.items()}
        assert sel.duplicate_of[i] == twin[i]
    assert sel.selected.sum() == len(examples) - 3  # every distinct conversation is kept
    # the planted twins stand apart from every pair of distinct passages
    assert sel.max_similarity[sorted(flagged)].min() > sel.max_similarity[sel.selected].max() + 0.05


def test_quotas_and_ranking_within_languages():
    assert quotas({"a": 10, "b": 30}, 8, "proportional") == {"a": 2, "b": 6}
    assert quotas({"a": 1, "b": 1, "c": 1}, 2, "proportional") == {"a": 1, "b": 1, "c": 0}
    assert quotas({"a": 2, "b": 30, "c": 30}, 12, "equal") == {"a": 2, "b": 5, "c": 5}
    assert sum(quotas({"a": 3, "b": 4, "c": 9}, 10, "equal").values()) == 10
    rng = np.random.default_rng(0)
    n = 60
    langs = ["th"] * 40 + ["lo"] * 20
    nll = np.concatenate([rng.normal(2, 0.1, 40), rng.normal(5, 0.1, 20)])  # Lao much less certain
    scores = Scores(nll=nll, tokens=np.ones(n), embedding=rng.normal(size=(n, 16)))
    sel = select(scores, langs, [None] * n, SelectConfig(keep=0.25))
    # per language: each keeps its share, its highest perplexities (not the globally highest: all Lao)
    assert sel.selected[:40].sum() == 10 and sel.selected[40:].sum() == 5
    assert nll[:40][sel.selected[:40]].min() >= np.sort(nll[:40])[-10]
    sel = select(scores, langs, [None] * n, SelectConfig(keep=0.25, per_language=False))
    assert sel.selected[40:].sum() == 15
    reward = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)  # the reward outweighs perplexity at weight 10
    scores.reward = reward
    sel = select(scores, langs, [None] * n, SelectConfig(keep=0.25, weights={"perplexity": 1.0, "reward": 10.0}))
    assert (reward[sel.selected] == 1.0).all()


def test_select_sft_command_writes_scores_selection_summary_plot(tmp_path, hf_lm):
    from sailor2_jax.cli import main

    torch.manual_seed(1)
    reward = Qwen2ForSequenceClassification(_hf_config(pad_token_id=151643, num_labels=1)).eval()
    reward.save_pretrained(tmp_path / "rm")
    records = _udhr_records(("th", "vi", "km"), ("continue",))
    _, path = _examples(tmp_path, records + [{"messages": [{"role": "user", "content": "hi"}]}])
    out = tmp_path / "sel"
    rc = main(["select-sft", "--model", hf_lm[1], "--input", path, "--output-dir", str(out), "--keep", "0.3",
               "--reward-model", str(tmp_path / "rm"), "--dtype", "float32", "--batch-size", "8",
               "--seq-len", "512"])
    assert rc == 0
    rows = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    selected = [json.loads(x) for x in (out / "selected.jsonl").read_text().splitlines()]
    assert len(rows) == len(records) and summary["read"] == len(records) + 1
    assert summary["skipped"] == {"no_assistant_turn": 1}
    assert all(r["reward"] is not None and r["perplexity"] > 1 for r in rows)
    assert len(selected) == sum(r["selected"] for r in rows) == summary["selected"]
    assert selected == [rec for rec, r in zip(records, rows) if r["selected"]]  # records as read, input order
    per_lang = {lang: sum(r["selected"] for r in rows if r["language"] == lang) for lang in ("th", "vi", "km")}
    sizes = {lang: sum(r["language"] == lang for r in rows) for lang in per_lang}
    assert sum(g["quota"] for g in summary["groups"].values()) == round(0.3 * len(rows))
    for lang, size in sizes.items():
        group = summary["groups"][lang]
        assert abs(group["quota"] - 0.3 * size) <= 1
        assert per_lang[lang] == min(group["quota"], size - group["near_duplicates"])
    assert (out / "selection.png").stat().st_size > 10_000
