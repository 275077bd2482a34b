"""The chat format, in one place: Qwen2.5 ChatML, rendered to text and token ids with the assistant tokens marked.

A conversation is a list of `{"role", "content"}` messages, roles `system`, `user`, `assistant` (recipe.md §5.2).
Each message renders as `<|im_start|>{role}\\n{content}<|im_end|>\\n`; the generation prompt is
`<|im_start|>assistant\\n`. This is the text Qwen2.5's official chat template (`vocab.qwen_chat_template()`, which
the exported `tokenizer_config.json` carries) renders for such conversations, and the ids equal `transformers`'
`apply_chat_template` on the same tokenizer (tested).

The one difference is explicit: a conversation that does not start with a system message gets `default_system`
in front. Ours defaults to the Sailor2 system prompt (as Sailor2's README passes it); Qwen2.5's template inserts
its own ("You are Qwen, created by Alibaba Cloud. ..."): pass `default_system=QWEN_SYSTEM_PROMPT` to render
exactly what `apply_chat_template` renders then, or `None` for no system message at all.

For SFT loss masks, `encode` also returns which tokens belong to an assistant message's content and its closing
`<|im_end|>` (what the model must learn to produce). The whole text is tokenised at once, exactly as the template
path does, and tokens are assigned by their character offsets: a token that overlaps the content counts as
assistant (e.g. "\\n\\n\\n" when the content starts with newlines merges with the header's "\\n").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SAILOR2_SYSTEM_PROMPT = (
    "You are an AI assistant named Sailor2, created by Sea AI Lab. As an AI assistant, you can answer questions in "
    "English, Chinese, and Southeast Asian languages such as Burmese, Cebuano, Ilocano, Indonesian, Javanese, "
    "Khmer, Lao, Malay, Sundanese, Tagalog, Thai, Vietnamese, and Waray. Your responses should be friendly, "
    "unbiased, informative, detailed, and faithful.")
QWEN_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
ROLES = ("system", "user", "assistant")
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
GENERATION_PROMPT = f"{IM_START}assistant\n"


@dataclasses.dataclass(frozen=True)
class ChatEncoding:
    text: str
    ids: np.ndarray                      # int32 [T]
    assistant_mask: np.ndarray           # bool [T]: assistant contents and their closing <|im_end|>
    assistant_spans: list[tuple[int, int]]  # [start, end) token ranges, one per assistant message


def check_messages(messages: Any, where: str = "messages") -> list[dict[str, str]]:
    """The messages as plain dicts, or a ValueError naming the first bad message and field."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ValueError(f"{where}: expected a non-empty list of {{role, content}} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValueError(f"{where}[{i}]: expected an object with role and content, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"{where}[{i}].role: {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"{where}[{i}].content: expected a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out


def render(messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = False,
           default_system: str | None = SAILOR2_SYSTEM_PROMPT) -> tuple[str, list[tuple[int, int]]]:
    """(text, character spans [start, end) of each assistant message's content plus its `<|im_end|>`)."""
    messages = check_messages(messages)
    if messages[0]["role"] != "system" and default_system is not None:
        messages = [{"role": "system", "content": default_system}, *messages]
    parts, spans, at = [], [], 0
    for m in messages:
        header = f"{IM_START}{m['role']}\n"
        body = m["content"] + IM_END
        if m["role"] == "assistant":
            spans.append((at + len(header), at + len(header) + len(body)))
        piece = header + body + "\n"
        parts.append(piece)
        at += len(piece)
    if add_generation_prompt:
        parts.append(GENERATION_PROMPT)
    return "".join(parts), spans


def encode(messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = False,
           default_system: str | None = SAILOR2_SYSTEM_PROMPT, tokenizer=None) -> ChatEncoding:
    """Render and tokenise (special tokens recognised, as `apply_chat_template` does); `tokenizer` is a
    `tokenizers.Tokenizer` (default: the Qwen2.5 tokenizer)."""
    return encode_batch([messages], add_generation_prompt=add_generation_prompt, default_system=default_system,
                        tokenizer=tokenizer)[0]


def encode_batch(conversations: Sequence[Sequence[Mapping[str, str]]], *, add_generation_prompt: bool = False,
                 default_system: str | None = SAILOR2_SYSTEM_PROMPT, tokenizer=None) -> list[ChatEncoding]:
    """`encode` for many conversations, tokenised in one call (the tokenizer's batch encoder)."""
    if tokenizer is None:
        from sailor2_jax.tokenizer import load_tokenizer
        tokenizer = load_tokenizer()
    rendered = [render(m, add_generation_prompt=add_generation_prompt, default_system=default_system)
                for m in conversations]
    # encode_batch, not encode_batch_fast: the masks need the character offsets, which the fast path leaves out
    encodings = tokenizer.encode_batch([text for text, _ in rendered], add_special_tokens=False)
    return [_with_mask(text, spans, enc) for (text, spans), enc in zip(rendered, encodings)]


def _with_mask(text: str, char_spans: list[tuple[int, int]], enc) -> ChatEncoding:
    """Token ids with the assistant tokens marked: a token counts when its characters overlap a span."""
    ids = np.asarray(enc.ids, np.int32)
    starts = np.asarray([o[0] for o in enc.offsets], np.int64)
    ends = np.asarray([o[1] for o in enc.offsets], np.int64)
    mask = np.zeros(len(ids), bool)
    token_spans = []
    for lo, hi in char_spans:
        inside = np.flatnonzero((ends > lo) & (starts < hi))
        token_spans.append((int(inside[0]), int(inside[-1]) + 1))
        mask[inside] = True
    return ChatEncoding(text=text, ids=ids, assistant_mask=mask, assistant_spans=token_spans)
