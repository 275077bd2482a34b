"""Streaming text: released only at UTF-8 character boundaries (Thai, Burmese, Khmer characters span several
byte-level tokens), equal to `tokenizers`' batch decode, and never across a stop string still being matched."""

from __future__ import annotations

import numpy as np
import pytest

from sailor2_jax.serve.text import TextStream, TokenBytes
from sailor2_jax.tokenizer import IM_END_ID, load_tokenizer

TEXTS = {"th": "สวัสดีครับ ยินดีที่ได้รู้จัก", "my": "မင်္ဂလာပါ ခင်ဗျာ နေကောင်းလား", "km": "សួស្តី ពិភពលោក សុខសប្បាយទេ"}


@pytest.fixture(scope="module")
def table():
    return TokenBytes(load_tokenizer())


@pytest.mark.parametrize("lang", sorted(TEXTS))
def test_streamed_pieces_are_whole_characters(table, lang):
    ids = load_tokenizer().encode(TEXTS[lang]).ids
    stream = TextStream(table)
    pieces = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(pieces) == TEXTS[lang]
    assert not any("\ufffd" in p for p in pieces)
    assert "" in pieces  # some token ended mid-character and released nothing: the case this guards


def test_stream_equals_batch_decode_on_random_ids(table):
    tok = load_tokenizer()
    rng = np.random.RandomState(0)
    for _ in range(200):  # random byte tokens: invalid sequences become U+FFFD where tokenizers puts them
        ids = rng.randint(0, 151665, rng.randint(1, 20)).tolist() + [IM_END_ID]
        stream = TextStream(table)
        assert "".join(stream.push(i) for i in ids) + stream.finish() == tok.decode(ids, skip_special_tokens=True)


def test_stop_strings_are_held_back_and_cut(table):
    tok = load_tokenizer()
    text = "ยินดีที่ได้รู้จัก ครับ"
    ids = tok.encode(text).ids
    stop = "รู้จัก"  # spans several tokens
    stream = TextStream(table, [stop, "never"])
    released = []
    for i in ids:
        released.append(stream.push(i))
        assert stop not in "".join(released)
        if stream.stopped:
            break
    assert stream.stopped and "".join(released) == text[:text.index(stop)]
    # a stop prefix that never completes is released at the end
    stream = TextStream(table, ["จักร"])
    assert "".join(stream.push(i) for i in ids) + stream.finish() == text and not stream.stopped
