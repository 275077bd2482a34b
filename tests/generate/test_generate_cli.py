"""`sailor2-jax generate` and `sailor2-jax chat` end to end on a tiny random model with the real Qwen2.5 tokenizer,
checked against `transformers` (apply_chat_template + greedy generate on the same directory)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from generate_helpers import real_vocab_hf_dir
from transformers import AutoTokenizer

from sailor2_jax.cli import main
from sailor2_jax.tokenizer import EOS_ID, IM_END_ID
from sailor2_jax.post.chat import SAILOR2_SYSTEM_PROMPT

EOS = [EOS_ID, IM_END_ID]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return real_vocab_hf_dir(tmp_path_factory.mktemp("tiny_real_vocab"), seed=1)


@pytest.fixture(scope="module")
def reference(hf_dir):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(hf_dir)

    def greedy(messages, max_new_tokens):
        ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        ids = torch.tensor([list(ids["input_ids"] if hasattr(ids, "keys") else ids)])
        with torch.no_grad():
            out = model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=EOS,
                                 pad_token_id=EOS_ID)
        new = out[0, ids.shape[1]:].tolist()
        stop = next((i for i, t in enumerate(new) if t in EOS), None)
        return new if stop is None else new[:stop + 1]
    return greedy, tok


def test_generate_command(hf_dir, reference, tmp_path, capsys):
    greedy, tok = reference
    chat_messages = [{"role": "user", "content": "Xin chào! Bạn là ai?"}]
    lines = [json.dumps({"id": 1, "prompt": "The capital of Thailand is", "lang": "en"}),
             "{not json",
             json.dumps({"id": 2, "messages": chat_messages, "lang": "vi"}, ensure_ascii=False),
             json.dumps({"prompt": ""}),
             json.dumps({"messages": [{"role": "bot", "content": "x"}]}),
             "[1, 2]",
             "",
             json.dumps({"id": 3, "prompt": "สวัสดีครับ", "extra": {"keep": [1, 2]}}, ensure_ascii=False)]
    src, out = tmp_path / "prompts.jsonl", tmp_path / "out" / "completions.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = main(["generate", "--model", str(hf_dir), "--input", str(src), "--output", str(out), "--dtype", "float32",
                 "--max-new-tokens", "6", "--num-samples", "2", "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for number in (2, 4, 5, 6):
        assert f"{src}:{number}: " in captured.err
    assert "4 malformed lines skipped" in captured.out and "3 prompts" in captured.out
    assert "tokens/s" in captured.out
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == [1, 2, 3]
    assert records[0]["lang"] == "en" and records[1]["messages"] == chat_messages
    assert records[2]["extra"] == {"keep": [1, 2]}
    for r in records:
        assert len(r["completions"]) == 2 and r["completions"][0] == r["completions"][1]  # greedy
        for c in r["completions"]:
            assert c["finish_reason"] in ("stop", "length") and 1 <= len(c["token_ids"]) <= 6
            ids = c["token_ids"][:-1] if c["finish_reason"] == "stop" else c["token_ids"]
            assert c["text"] == tok.decode(ids)
    # the chat line: the same ids transformers generates from its own chat template with Sailor2's system prompt
    expected = greedy([{"role": "system", "content": SAILOR2_SYSTEM_PROMPT}, *chat_messages], 6)
    assert records[1]["completions"][0]["token_ids"] == expected


def test_chat_command_streams_and_keeps_the_conversation(hf_dir, reference, monkeypatch, capsys):
    greedy, tok = reference
    said = ["Halo, apa kabar?", "Ceritakan lagi.", "/system Jawab singkat.", "ជំរាបសួរ", "/reset", "Kumusta?"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(said) + "\n"))
    code = main(["chat", "--model", str(hf_dir), "--dtype", "float32", "--max-new-tokens", "5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    replies = captured.out.split("assistant> ")[1:]
    assert len(replies) == 4
    limit = " [max new tokens reached]\n"
    replies = [r[:-len(limit)] if r.endswith(limit) else r[:-1] for r in replies]

    def expect(messages):
        ids = greedy(messages, 5)
        return tok.decode(ids[:-1] if ids[-1] in EOS else ids)

    conversation = [{"role": "system", "content": SAILOR2_SYSTEM_PROMPT}, {"role": "user", "content": said[0]}]
    assert replies[0] == expect(conversation)
    conversation += [{"role": "assistant", "content": replies[0]}, {"role": "user", "content": said[1]}]
    assert replies[1] == expect(conversation)  # the second turn sees the first
    conversation = [{"role": "system", "content": "Jawab singkat."}, {"role": "user", "content": said[3]}]
    assert replies[2] == expect(conversation)
    conversation[1:] = [{"role": "user", "content": said[5]}]  # /reset keeps the system prompt
    assert replies[3] == expect(conversation)
