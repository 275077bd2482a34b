"""SFT data: messages and ShareGPT files give the same ids, which equal `transformers`' apply_chat_template; the
loss mask's tokens decode to exactly the assistant contents plus `<|im_end|>`; every malformed kind is counted with
file:line; over-long conversations are cut at a turn boundary or dropped; packing, epochs and state."""

from __future__ import annotations

import json

import grain
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from sailor2_jax.languages import LANGUAGE_INDEX
from sailor2_jax.data.config import Batching
from sailor2_jax.data.packing import pack_without_splitting, sft_example
from sailor2_jax.tokenizer import IM_END_ID, load_tokenizer, save_hf_tokenizer
from sailor2_jax.post import chat
from sailor2_jax.post.conversation_files import Accounting, read_conversations
from sailor2_jax.post.sft_data import SFTBatches, packed_rows, tokenize_conversations

CONVERSATIONS = [
    ([{"role": "user", "content": "Terjemahkan ke bahasa Inggris: Selamat pagi"},
      {"role": "assistant", "content": "Good morning"}], "id"),
    ([{"role": "system", "content": "Trả lời ngắn gọn."}, {"role": "user", "content": "Thủ đô của Việt Nam?"},
      {"role": "assistant", "content": "Hà Nội."}, {"role": "user", "content": "Còn Thái Lan?"},
      {"role": "assistant", "content": "\n\nBangkok  "}], "vi"),
    ([{"role": "user", "content": "แปลว่า ขอบคุณ"}, {"role": "assistant", "content": "Thank you"}], "th"),
    ([{"role": "user", "content": "ជំរាបសួរ"}, {"role": "assistant", "content": "សួស្តី! 中文 <b>ok</b>\t"}], None),
]
SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt"}
BAD_LINES = {
    "malformed_json": '{"messages": [',
    "not_a_json_object": '["a list"]',
    "missing_field": '{"text": "no turns here"}',
    "unknown_role": '{"messages": [{"role": "robot", "content": "beep"}, {"role": "assistant", "content": "x"}]}',
    "empty_content": '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}',
    "no_assistant_turn": '{"messages": [{"role": "user", "content": "hi"}]}',
    "bad_message": '{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}',
}


def _record(messages, language, fmt):
    if fmt == "messages":
        rec = {"messages": messages}
    else:
        rec = {"conversations": [{"from": SHAREGPT_ROLE[m["role"]], "value": m["content"]} for m in messages]}
    return rec | ({"language": language} if language else {})


def _write(path, fmt, copies=1, bad=True):
    lines = [json.dumps(_record(m, lang, fmt), ensure_ascii=False) for m, lang in CONVERSATIONS * copies]
    lines += list(BAD_LINES.values()) if bad else []
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    save_hf_tokenizer(out)
    return AutoTokenizer.from_pretrained(out)


def test_messages_and_sharegpt_give_the_same_ids_and_every_bad_record_is_counted(tmp_path):
    by_format = {}
    for fmt in ("messages", "sharegpt"):
        acc = Accounting()
        examples = tokenize_conversations(read_conversations([_write(tmp_path / f"{fmt}.jsonl", fmt)], "auto", acc),
                                          4096, acc=acc, progress=False)
        assert acc.balanced and acc.read == len(CONVERSATIONS) + len(BAD_LINES) and acc.kept == len(CONVERSATIONS)
        assert dict(acc.formats) == {fmt: 1}
        by_format[fmt] = examples
        # the bad lines are messages-style: a ShareGPT file reads them as such (formats may mix), same faults
        assert dict(acc.rejected) == {k: 1 for k in BAD_LINES}
        text = "\n".join(acc.lines())
        assert f"{fmt}.jsonl:{len(CONVERSATIONS) + 1}: malformed_json" in text
        assert [e.language for e in examples] == [LANGUAGE_INDEX.get(lang, -1) for _, lang in CONVERSATIONS]
    for a, b in zip(by_format["messages"], by_format["sharegpt"]):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.mask, b.mask)


def test_parquet_and_directories_and_a_forced_format(tmp_path):
    (tmp_path / "d").mkdir()
    pq.write_table(pa.Table.from_pylist([_record(m, lang, "sharegpt") for m, lang in CONVERSATIONS]),
                   tmp_path / "d" / "a.parquet")
    _write(tmp_path / "d" / "b.jsonl", "messages", bad=False)
    acc = Accounting()
    convs = list(read_conversations([str(tmp_path / "d")], "auto", acc))
    assert len(convs) == 8 and acc.files == 2 and dict(acc.formats) == {"sharegpt": 1, "messages": 1}
    acc = Accounting()
    convs = list(read_conversations([str(tmp_path / "d")], "messages", acc))
    assert len(convs) == 4 and acc.rejected == {"missing_field": 4} and acc.balanced is False  # kept set by caller
    with pytest.raises(FileNotFoundError, match="input not found"):
        list(read_conversations([str(tmp_path / "nope.jsonl")]))


def test_packed_rows_are_the_chat_template_with_assistant_only_masks(tmp_path, hf_tok):
    acc = Accounting()
    examples = tokenize_conversations(read_conversations([_write(tmp_path / "c.jsonl", "messages", copies=2)],
                                                         acc=acc), 4096, acc=acc, progress=False)
    it = SFTBatches(examples, Batching(batch_size=2, seq_len=256, seed=0), process_index=0, process_count=1)
    tok = load_tokenizer()
    seen = 0
    for _ in range(2):
        batch = next(it)
        assert set(batch) == {"tokens", "targets", "loss_mask", "segment_ids", "positions", "languages"}
        for r in range(2):
            seg = batch["segment_ids"][r]
            for s in range(1, seg.max() + 1):
                at = np.flatnonzero(seg == s)
                assert np.array_equal(batch["positions"][r, at], np.arange(len(at)))
                ids = np.concatenate([batch["tokens"][r, at[:1]], batch["targets"][r, at]])
                messages = next(m for m, _ in CONVERSATIONS if len(chat.encode(m).ids) == len(ids))
                full = messages if messages[0]["role"] == "system" else [
                    {"role": "system", "content": chat.SAILOR2_SYSTEM_PROMPT}, *messages]
                hf_ids = hf_tok.apply_chat_template(full, tokenize=True)
                assert ids.tolist() == list(hf_ids["input_ids"] if hasattr(hf_ids, "keys") else hf_ids)
                learned = batch["targets"][r, at][batch["loss_mask"][r, at] > 0]
                # exactly the contents and their <|im_end|>; a content that starts with newlines merges with the
                # header's "\n" into one token (BPE), which is learned whole (chat.py)
                want = "".join(("\n" if m["content"].startswith("\n") else "") + m["content"] + "<|im_end|>"
                               for m in messages if m["role"] == "assistant")
                assert tok.decode(learned.tolist(), skip_special_tokens=False) == want
                assert (learned == IM_END_ID).sum() == sum(m["role"] == "assistant" for m in messages)
                seen += 1
            assert not batch["loss_mask"][r, seg == 0].any()
    assert seen >= 4


def test_overlong_conversations_are_cut_at_a_turn_boundary_or_dropped(tmp_path):
    path = _write(tmp_path / "c.jsonl", "messages", bad=False)
    full = tokenize_conversations(read_conversations([path]), 4096, progress=False)
    multi = full[1]  # two assistant turns
    first_turn_end = multi.conversation.messages[:3]
    cut_len = len(chat.encode(first_turn_end).ids)
    limit = cut_len + 3  # the first assistant turn fits, the second does not
    assert len(multi.ids) > limit
    others = [len(e.ids) for e in full if e is not multi]
    assert min(others) > limit  # with the default system prompt, no other conversation fits, not even cut
    acc = Accounting()
    cut = tokenize_conversations(read_conversations([path], acc=acc), limit, overlong="truncate", acc=acc,
                                 progress=False)
    assert len(cut) == 1 and acc.truncated == 1 and acc.rejected == {"too_long": 3} and acc.balanced
    assert cut[0].truncated and cut[0].conversation.source.line == 2
    np.testing.assert_array_equal(cut[0].ids, multi.ids[:cut_len])  # ... <|im_end|> \n: a whole turn
    assert cut[0].ids[-2] == IM_END_ID and cut[0].mask.sum() == multi.mask[:cut_len].sum()
    acc = Accounting()
    dropped = tokenize_conversations(read_conversations([path], acc=acc), limit, overlong="drop", acc=acc,
                                     progress=False)
    assert not dropped and acc.rejected == {"too_long": 4} and acc.truncated == 0 and acc.balanced
    assert "c.jsonl:2: too_long" in "\n".join(acc.lines())


def test_epoch_length_counts_grains_packing():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, 200)
    for method in ("first_fit", "best_fit"):
        examples = [(np.arange(n + 1, dtype=np.int32), np.ones(n + 1, bool), 0) for n in lengths]
        ds = grain.MapDataset.source(examples).to_iter_dataset().map(lambda e: sft_example(*e))
        rows = sum(1 for _ in pack_without_splitting(ds, 64, method, 16))
        assert packed_rows(lengths, 64, 16, method) == rows


def test_epochs_reshuffle_and_the_state_restores_exactly(tmp_path):
    examples = tokenize_conversations(read_conversations([_write(tmp_path / "c.jsonl", "messages", copies=3)]),
                                      4096, progress=False)
    make = lambda: SFTBatches(examples, Batching(batch_size=2, seq_len=256, seed=1), process_index=0,  # noqa: E731
                              process_count=1)
    it = make()
    per_epoch = it.batches_per_epoch
    assert per_epoch >= 2
    first = [next(it) for _ in range(per_epoch)]
    state = json.loads(json.dumps(it.get_state()))
    later = [next(it) for _ in range(3)]
    again = make()
    again.set_state(state)
    for a in later:
        b = next(again)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    other = SFTBatches(examples[:-1], Batching(batch_size=2, seq_len=256, seed=1), process_index=0, process_count=1)
    with pytest.raises(ValueError, match="does not fit this SFT data"):
        other.set_state(state)
    reseeded = SFTBatches(examples, Batching(batch_size=2, seq_len=256, seed=2), process_index=0, process_count=1)
    assert any(not np.array_equal(a["tokens"], next(reseeded)["tokens"]) for a in first)  # the seed shuffles
