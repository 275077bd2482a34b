"""The chat format against `transformers`' `apply_chat_template` on the tokenizer we export (which carries Qwen2.5's
official template), the explicit default-system behaviour, and the assistant masks."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from sailor2_jax.tokenizer import IM_END_ID, load_tokenizer, qwen_chat_template, save_hf_tokenizer
from sailor2_jax.post import chat

CONVERSATIONS = {
    "system_user": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Xin chào! Bạn khỏe không?"}],
    "user_only": [{"role": "user", "content": "สวัสดีครับ ช่วยแปลประโยคนี้หน่อย"}],
    "multi_turn": [{"role": "user", "content": "Apa kabar?"}, {"role": "assistant", "content": "Baik, terima kasih."},
                   {"role": "user", "content": "ជំរាបសួរ"}, {"role": "assistant", "content": "\n\nမင်္ဂလာပါ  "}],
    "late_system": [{"role": "system", "content": "A"}, {"role": "user", "content": "B"},
                    {"role": "system", "content": "C"}, {"role": "user", "content": " 中文 <b>x</b>\t"}],
}


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    save_hf_tokenizer(out)
    return AutoTokenizer.from_pretrained(out)


def _hf_ids(tok, messages, add_generation_prompt):
    out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def test_exported_tokenizer_carries_qwen_chat_template(hf_tok):
    assert hf_tok.chat_template == qwen_chat_template()
    assert "You are Qwen, created by Alibaba Cloud" in hf_tok.chat_template


@pytest.mark.parametrize("name", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_ids_equal_apply_chat_template(hf_tok, name, add_generation_prompt):
    messages = CONVERSATIONS[name]
    has_system = messages[0]["role"] == "system"
    # Qwen's template inserts its own system prompt when there is none: ours does so when asked to
    ours = chat.encode(messages, add_generation_prompt=add_generation_prompt, default_system=chat.QWEN_SYSTEM_PROMPT)
    assert ours.ids.tolist() == _hf_ids(hf_tok, messages, add_generation_prompt)
    assert ours.text == hf_tok.apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=add_generation_prompt)
    # our default is the Sailor2 system prompt: the same as giving it to transformers explicitly
    sailor = chat.encode(messages, add_generation_prompt=add_generation_prompt)
    explicit = messages if has_system else [{"role": "system", "content": chat.SAILOR2_SYSTEM_PROMPT}, *messages]
    assert sailor.ids.tolist() == _hf_ids(hf_tok, explicit, add_generation_prompt)
    if not has_system:
        assert chat.SAILOR2_SYSTEM_PROMPT in sailor.text and chat.QWEN_SYSTEM_PROMPT not in sailor.text
        bare = chat.encode(messages, default_system=None)
        assert bare.text.startswith("<|im_start|>user\n")


def test_generation_prompt_and_assistant_masks():
    tok = load_tokenizer()
    messages = CONVERSATIONS["multi_turn"]
    enc = chat.encode(messages, add_generation_prompt=True)
    assert enc.text.endswith("<|im_start|>assistant\n")
    assert len(enc.assistant_spans) == 2
    for (start, end), message in zip(enc.assistant_spans, [m for m in messages if m["role"] == "assistant"]):
        assert enc.ids[end - 1] == IM_END_ID and enc.assistant_mask[start:end].all()
        text = tok.decode(enc.ids[start:end].tolist(), skip_special_tokens=False)
        # the span decodes to the content and its <|im_end|>; a leading newline of the content merges with the
        # header's newline into one token, which the span then includes
        assert text.endswith(message["content"] + "<|im_end|>") and text.strip("\n") == \
            message["content"].strip("\n") + "<|im_end|>"
    assert enc.assistant_mask.sum() == sum(end - start for start, end in enc.assistant_spans)
    assert not enc.assistant_mask[-3:].any()  # the generation prompt is not an assistant target


def test_bad_messages_name_the_message_and_field():
    with pytest.raises(ValueError, match=r"messages\[1\]\.role: 'tool'"):
        chat.render([{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}])
    with pytest.raises(ValueError, match=r"messages\[0\]\.content: expected a string"):
        chat.render([{"role": "user", "content": ["parts"]}])
    with pytest.raises(ValueError, match="non-empty list"):
        chat.render([])
