"""The real Qwen2.5 tokenizer (offline, verified), its seqio wrapper, and a user tokenizer.json overriding it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tokenizers

from sailor2_jax import tokenizer as vocab_mod
from sailor2_jax.tokenizer import EOS_ID, IM_END_ID, IM_START_ID, QWEN_VOCAB_SIZE
from sailor2_jax.data.vocab import QwenVocabulary, get_vocabulary


@pytest.fixture(scope="module")
def qwen() -> QwenVocabulary:
    return get_vocabulary()


def test_qwen_ids(qwen):
    assert qwen.encode("Hello world") == [9707, 1879]
    assert qwen.encode("<|im_start|>user") == [IM_START_ID, 872]
    assert qwen.vocab_size == QWEN_VOCAB_SIZE == 151_665
    tok = qwen.tokenizer
    assert (tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")) == \
        (EOS_ID, IM_START_ID, IM_END_ID) == (151643, 151644, 151645)
    assert tok.token_to_id("<|file_sep|>") == 151664 and tok.token_to_id("<think>") is None  # Qwen3-only, dropped
    assert qwen.eos_id == EOS_ID and qwen.decode([9707, 1879]) == "Hello world"


def test_documents_treat_special_tokens_as_text(qwen):
    [doc] = qwen.encode_documents(["a <|endoftext|> b"])
    assert doc[-1] == EOS_ID and list(doc[:-1]).count(EOS_ID) == 0
    assert qwen.decode(doc[:-1]) == "a <|endoftext|> b"


def test_batch_tf_and_single_encodings_agree(qwen):
    import tensorflow as tf

    texts = ["Xin chào thế giới", "สวัสดีชาวโลก", "你好，世界", "ជំរាបសួរ", "Kumusta"]
    assert list(qwen.encode_tf(tf.constant("<|im_start|>user")).numpy()) == [IM_START_ID, 872]  # as `encode`
    batch = qwen.encode_batch(texts)
    for text, ids in zip(texts, batch):
        assert ids.dtype == np.int32 and list(ids) == qwen.encode(text)
        assert list(qwen.encode_tf(tf.constant(text)).numpy()) == list(ids)


def test_pickles_as_its_path(qwen):
    again = pickle.loads(pickle.dumps(qwen))
    assert again == qwen and again.encode("Hello world") == [9707, 1879]


def test_changed_tokenizer_file_is_refused(monkeypatch):
    monkeypatch.setattr(vocab_mod, "QWEN_TOKENIZER_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        vocab_mod.load_tokenizer.__wrapped__(None)


def test_user_tokenizer_json_overrides(tmp_path):
    # a byte-level BPE with the Qwen2 pre-tokenizer shape, trained in-process in milliseconds
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, hello there"] * 20, trainer)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    v = QwenVocabulary(str(path))
    assert v.eos_id == 0 and v.vocab_size == tok.get_vocab_size()
    assert v.decode(v.encode("hello world")) == "hello world"
    with pytest.raises(FileNotFoundError):
        QwenVocabulary(str(tmp_path / "missing.json"))


def test_hf_tokenizer_files_load_in_transformers(tmp_path):
    from transformers import AutoTokenizer

    vocab_mod.save_hf_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok("Hello world").input_ids == [9707, 1879]
    assert tok("<|im_start|>user").input_ids == [151644, 872]
    assert (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == (EOS_ID, EOS_ID, None)
    assert len(tok) == QWEN_VOCAB_SIZE
