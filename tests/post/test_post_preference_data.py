"""Preference data: records in every accepted shape, every bad record counted, the DPO batch contract with masks
that cover exactly the responses (ids checked against `transformers`' apply_chat_template), exact resume, and a DPO
run with precomputed reference log-probs reading it."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from sailor2_jax.config import load
from sailor2_jax.data.config import Batching
from sailor2_jax.tokenizer import IM_END_ID, load_tokenizer, save_hf_tokenizer
from sailor2_jax.post import chat
from sailor2_jax.post.preference_data import PreferenceBatches, encode_pairs, load_preferences
from sailor2_jax.post.conversation_files import Accounting, read_preferences
from sailor2_jax.train.config import TrainConfig
from sailor2_jax.train.init import data_iterator

GOOD = [
    {"prompt": "Terjemahkan: good morning", "chosen": "Selamat pagi", "rejected": "Selamat malam", "language": "id"},
    {"prompt": [{"role": "user", "content": "แปล: thank you"}],  # UltraFeedback layout: the prompt repeated
     "chosen": [{"role": "user", "content": "แปล: thank you"}, {"role": "assistant", "content": "ขอบคุณ"}],
     "rejected": [{"role": "user", "content": "แปล: thank you"}, {"role": "assistant", "content": "สวัสดี"}],
     "language": "th"},
    {"prompt": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Xin chào?"}],
     "chosen": "Chào bạn!", "rejected": [{"role": "assistant", "content": "Hello there, friend."}], "language": "vi"},
]
BAD = {
    "missing_field": {"prompt": "p", "chosen": "a"},
    "identical_responses": {"prompt": "p", "chosen": "same", "rejected": "same"},
    "unknown_role": {"prompt": [{"role": "robot", "content": "x"}], "chosen": "a", "rejected": "b"},
    "empty_content": {"prompt": "p", "chosen": "  ", "rejected": "b"},
    "no_assistant_turn": {"prompt": "p", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
    "bad_message": {"prompt": "p", "chosen": 7, "rejected": "b"},
}


def _write(tmp_path, n_good: int = 3):
    lines = [json.dumps(r, ensure_ascii=False) for r in (GOOD * 4)[:n_good]]
    lines += [json.dumps(r) for r in BAD.values()] + ["{not json", "[1, 2]"]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    parquet = tmp_path / "more" / "pairs.parquet"
    parquet.parent.mkdir()
    pq.write_table(pa.Table.from_pylist([{"prompt": "Say hi in Lao", "chosen": "ສະບາຍດີ", "rejected": "hi"}]),
                   parquet)
    return jsonl, parquet


def test_every_record_is_accounted_for(tmp_path):
    jsonl, parquet = _write(tmp_path)
    acc = Accounting()
    pairs = list(read_preferences([str(jsonl), str(tmp_path / "more")], acc))
    assert len(pairs) == 4 and acc.read == 3 + len(BAD) + 2 + 1
    assert dict(acc.rejected) == {**{k: 1 for k in BAD}, "malformed_json": 1, "not_a_json_object": 1}
    assert [p.language for p in pairs] == [None, "id", "th", "vi"]  # files sorted: more/pairs.parquet first
    assert pairs[2].chosen == [{"role": "assistant", "content": "ขอบคุณ"}]  # the repeated prompt is taken off
    assert pairs[3].prompt[0] == {"role": "system", "content": "Be brief."}
    encoded = encode_pairs(pairs, 4096, acc=acc, progress=False)
    acc.kept = len(encoded)
    assert acc.balanced
    lines = acc.lines()
    assert "pairs.jsonl:5: identical_responses" in "\n".join(lines)


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    save_hf_tokenizer(out)
    return AutoTokenizer.from_pretrained(out)


def test_rows_are_the_chat_template_and_masks_cover_the_response_only(tmp_path, hf_tok):
    jsonl, _ = _write(tmp_path)
    acc = Accounting()
    encoded = encode_pairs(read_preferences([str(jsonl)], acc), 4096, acc=acc, progress=False)
    tok = load_tokenizer()
    T = 128
    it = PreferenceBatches(encoded, Batching(batch_size=3, seq_len=T, seed=0), process_index=0, process_count=1)
    batch = next(it)
    assert all(v.shape == (3, T) for v in batch.values()) and len(batch) == 10
    for r in range(3):
        for side in ("chosen", "rejected"):
            tokens, targets = batch[f"{side}_tokens"][r], batch[f"{side}_targets"][r]
            mask, seg = batch[f"{side}_loss_mask"][r].astype(bool), batch[f"{side}_segment_ids"][r]
            n = int(seg.sum())
            full = np.concatenate([tokens[:1], targets[:n]])
            pair = next(p.pair for p in encoded if np.array_equal(p.ids[side], full))
            response = getattr(pair, side)
            messages = [{"role": "system", "content": chat.SAILOR2_SYSTEM_PROMPT}] + pair.prompt + response \
                if pair.prompt[0]["role"] != "system" else pair.prompt + response
            hf_ids = hf_tok.apply_chat_template(messages, tokenize=True)
            assert full.tolist() == list(hf_ids["input_ids"] if hasattr(hf_ids, "keys") else hf_ids)
            np.testing.assert_array_equal(tokens[1:n], targets[:n - 1])
            learned = targets[mask]
            want = "".join(m["content"] + "<|im_end|>" for m in response if m["role"] == "assistant")
            assert tok.decode(learned.tolist(), skip_special_tokens=False) == want
            assert learned[-1] == IM_END_ID and not mask[n:].any()
            prompt = len(chat.encode(pair.prompt).ids)
            assert not mask[:prompt - 1].any() and np.array_equal(batch["chosen_tokens"][r, :prompt],
                                                                   batch["rejected_tokens"][r, :prompt])


def test_overlong_pairs_are_dropped_or_truncated_and_counted(tmp_path):
    jsonl, _ = _write(tmp_path)
    # the first two pairs have 117 and 115 ids with the system prompt (prompts 108 and 106), the third 27
    for overlong, kept, cut in (("drop", 1, 0), ("truncate", 3, 2)):
        acc = Accounting()
        encoded = encode_pairs(read_preferences([str(jsonl)], acc), 112, overlong=overlong, acc=acc, progress=False)
        assert len(encoded) == kept and acc.rejected["too_long"] == 3 - kept and acc.truncated == cut
        assert sum(max(len(p.ids[s]) for s in ("chosen", "rejected")) == 112 for p in encoded) == cut
        assert all(len(p.ids[s]) <= 112 and p.mask[s][1:].any() for p in encoded for s in ("chosen", "rejected"))
    acc = Accounting()
    encode_pairs(read_preferences([str(jsonl)], acc), 107, overlong="truncate", acc=acc, progress=False)
    assert acc.rejected["too_long"] == 2  # a response that keeps no token is dropped


def test_epochs_shuffle_and_state_restores_exactly(tmp_path):
    jsonl, _ = _write(tmp_path, n_good=6)
    encoded = encode_pairs(read_preferences([str(jsonl)]), 4096, progress=False)
    make = lambda: PreferenceBatches(encoded, Batching(batch_size=2, seq_len=128, seed=3), process_index=0,
                                     process_count=1)
    it = make()
    assert it.batches_per_epoch == 3
    rows = lambda batches: [r.tobytes() for b in batches for r in b["chosen_tokens"]]  # noqa: E731
    epoch0, epoch1 = rows(next(it) for _ in range(3)), rows(next(it) for _ in range(3))
    every = [p.row("chosen", 128, 151643)["tokens"].tobytes() for p in encoded]
    assert sorted(epoch0) == sorted(every) == sorted(epoch1) and epoch0 != epoch1  # each pair once, reshuffled
    state = it.get_state()
    json.dumps(state)
    after = [next(it) for _ in range(4)]
    again = make()
    again.set_state(json.loads(json.dumps(state)))
    for a, b in zip(after, (next(again) for _ in range(4))):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    other = PreferenceBatches(encoded[:5], Batching(batch_size=2, seq_len=128, seed=3), process_index=0, process_count=1)
    with pytest.raises(ValueError, match="does not fit"):
        other.set_state(state)


def test_process_rows_partition_the_global_batch(tmp_path):
    jsonl, _ = _write(tmp_path, n_good=6)
    encoded = encode_pairs(read_preferences([str(jsonl)]), 4096, progress=False)
    batching = Batching(batch_size=4, seq_len=128, seed=0)
    whole = next(PreferenceBatches(encoded, batching, process_index=0, process_count=1))
    parts = [next(PreferenceBatches(encoded, batching, process_index=p, process_count=2)) for p in range(2)]
    for k in whole:
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def test_dpo_run_with_precomputed_reference_reads_the_files(tmp_path):
    from sailor2_jax.train.loop import train

    jsonl, parquet = _write(tmp_path, n_good=6)
    load_preferences.cache_clear()
    cfg = load(TrainConfig, None, ["model.base=tiny", "model.num_layers=1", "objective.kind=dpo",
                                   "objective.reference=precompute", "data.source=preference",
                                   f"data.files=[{jsonl},{parquet}]", "data.batch_size=8", "data.seq_len=128",
                                   "data.epochs=2", "log.every=1", "log.tensorboard=false", "log.progress=false",
                                   "checkpoint.every=100", "compute.dtype=float32"])
    assert data_iterator(cfg, 151936).batches_per_epoch == 1
    result = train(cfg, tmp_path / "run")
    assert result.stopped == "done" and result.step == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    counts = next(x for x in lines if "data/read" in x)
    assert counts["data/read"] == 6 + len(BAD) + 2 + 1 and counts["data/kept"] == 7
    assert counts["data/rejected/identical_responses"] == 1
    assert np.isfinite(lines[-1]["loss"])
    with pytest.raises(ValueError, match="data.files"):
        load(TrainConfig, None, ["model.base=tiny", "objective.kind=dpo", "data.source=preference"])
    with pytest.raises(ValueError, match="not sft"):
        load(TrainConfig, None, ["model.base=tiny", "objective.kind=sft", "data.source=preference", "data.files=[x]"])
