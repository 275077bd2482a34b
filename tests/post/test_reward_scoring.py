"""Reward scores of chat conversations: the JAX backend and the transformers backend against `transformers`' own
forward pass of the same classifier, one conversation at a time (fp32, relative 1e-4); the `score` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from reward_helpers import reward_dir, udhr
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sailor2_jax.cli import main
from sailor2_jax.post.reward import load_reward_model


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    return reward_dir(tmp_path_factory.mktemp("rm") / "rm")


def conversations():
    out = []
    for i, (lang, reply) in enumerate([("th", "th"), ("vi", "en"), ("en", "en"), ("zh", "zh"), ("km", "km")]):
        out.append([{"role": "user", "content": udhr(lang, i % 2)},
                    {"role": "assistant", "content": udhr(reply, 2)[:80 + 40 * i]}])
    out.append([{"role": "system", "content": "Be brief."}, *out[0]])
    return out


def reference_scores(rm_dir, convs) -> np.ndarray:
    """transformers alone: its tokenizer's chat template, its classifier, one unpadded conversation at a time."""
    tok = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for c in convs:
            ids = tok.apply_chat_template(c, tokenize=True, return_dict=True, return_tensors="pt")
            out.append(model(input_ids=ids["input_ids"]).logits[0, 0].item())
    return np.asarray(out, np.float32)


@pytest.mark.parametrize("backend", ["jax", "transformers"])
def test_backends_equal_transformers(rm_dir, backend):
    convs = conversations()
    expected = reference_scores(rm_dir, convs)
    rm = load_reward_model(rm_dir, backend, batch_size=4, dtype="float32", progress=False)
    got = rm.score(convs)
    assert got.shape == (len(convs),) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert np.ptp(expected) > 1e-2  # the conversations score differently: the comparison means something
    with pytest.raises(ValueError, match="ending with the assistant"):
        rm.score([convs[0][:1]])


def test_score_command(rm_dir, tmp_path, capsys):
    convs = conversations()
    conv_file = tmp_path / "convs.jsonl"
    lines = [json.dumps({"id": i, "messages": c}, ensure_ascii=False) for i, c in enumerate(convs)]
    lines.insert(2, "{not json")
    lines.append(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"},
                                          {"role": "user", "content": "and?"}]}))
    conv_file.write_text("\n".join(lines) + "\n")
    assert main(["score", "--reward-model", str(rm_dir), "--input", str(conv_file),
                 "--output", str(tmp_path / "scored.jsonl")]) == 0
    scored = [json.loads(x) for x in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [r["id"] for r in scored] == list(range(len(convs)))
    np.testing.assert_allclose([r["score"] for r in scored], reference_scores(rm_dir, convs), rtol=1e-4, atol=1e-5)
    out = capsys.readouterr().out
    assert "malformed_json 1" in out and "no_final_assistant_turn 1" in out

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"prompt": c[0]["content"], "chosen": c[1]["content"],
                                           "rejected": convs[(i + 1) % 5][1]["content"]}, ensure_ascii=False)
                               for i, c in enumerate(convs[:5])) + "\n")
    assert main(["score", "--reward-model", str(rm_dir), "--input", str(pairs), "--output",
                 str(tmp_path / "pairs_scored.jsonl"), "--reward-backend", "transformers"]) == 0
    scored = [json.loads(x) for x in (tmp_path / "pairs_scored.jsonl").read_text().splitlines()]
    chosen = reference_scores(rm_dir, convs[:5])
    rejected = reference_scores(rm_dir, [[c[0], convs[(i + 1) % 5][1]] for i, c in enumerate(convs[:5])])
    np.testing.assert_allclose([r["chosen_score"] for r in scored], chosen, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([r["rejected_score"] for r in scored], rejected, rtol=1e-4, atol=1e-5)
