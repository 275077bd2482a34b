"""The Qwen2.5 tokenizer (`sailor2_jax.tokenizer`) as a `seqio.Vocabulary`, for the pre-training tasks.

Documents are encoded with special tokens treated as plain text (`split_special_tokens=True`): a web page that
contains the string "<|endoftext|>" must not inject a document separator. Chat formatting (SFT) encodes with
special tokens recognised, which is also the Hugging Face default for `encode`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import tokenizers

from sailor2_jax.data.tf_runtime import seqio, tf
from sailor2_jax.tokenizer import EOS_TOKEN, load_tokenizer


class QwenVocabulary(seqio.Vocabulary):
    """A `tokenizers` tokenizer as a seqio vocabulary (default: Qwen2.5). Pickles as its path, for Beam workers.

    `eos_id` is <|endoftext|>. seqio's own feature converters assume id 0 is padding, which in Qwen is the token
    "!": we never use them; packing and loss masks are built in grain (loader.py).
    """

    def __init__(self, path: str | None = None):
        self._path = None if path is None else str(path)
        tok = load_tokenizer(self._path)
        eos = tok.token_to_id(EOS_TOKEN)
        if eos is None:
            raise ValueError(f"tokenizer {self._path or 'Qwen2.5'} has no {EOS_TOKEN} token")
        self._eos = int(eos)
        self._size = tok.get_vocab_size(with_added_tokens=True)
        # Two handles on one model: one recognises special tokens in text (chat), one treats them as text (documents).
        self._tok = tok
        self._doc_tok = tokenizers.Tokenizer.from_str(tok.to_str())
        self._doc_tok.encode_special_tokens = True
        super().__init__(extra_ids=0)

    def __getstate__(self) -> dict:
        return {"path": self._path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QwenVocabulary) and other._path == self._path

    def __hash__(self) -> int:
        return hash((QwenVocabulary, self._path))

    @property
    def tokenizer(self) -> tokenizers.Tokenizer:
        return self._tok

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def pad_id(self) -> int:
        return self._eos

    @property
    def unk_id(self) -> None:
        return None  # byte-level BPE: every string is representable

    @property
    def _base_vocab_size(self) -> int:
        return self._size

    # --- Python side ---------------------------------------------------------------------------------------
    def _encode(self, s: str) -> list[int]:
        return self._tok.encode(s, add_special_tokens=False).ids

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def encode_batch(self, texts: Sequence[str], split_special_tokens: bool = True) -> list[np.ndarray]:
        """Encode many texts at once (Rust, parallel when TOKENIZERS_PARALLELISM allows); int32 arrays.

        `split_special_tokens=True` (documents) encodes "<|endoftext|>" in the text as ordinary characters.
        """
        tok = self._doc_tok if split_special_tokens else self._tok
        return [np.asarray(e.ids, dtype=np.int32) for e in tok.encode_batch_fast(list(texts), add_special_tokens=False)]

    def encode_documents(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Pre-training form: each document's tokens followed by <|endoftext|>."""
        return [np.append(ids, np.int32(self._eos)) for ids in self.encode_batch(texts)]

    # --- TensorFlow side (seqio preprocessors run in tf.data) -----------------------------------------------
    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        def encode(t: tf.Tensor) -> np.ndarray:  # same as `encode`; documents go through `encode_batch` instead
            return np.asarray(self._encode(t.numpy().decode("utf-8")), np.int32)

        ids = tf.py_function(encode, [s], Tout=tf.int32)
        ids.set_shape([None])
        return ids

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        text = tf.py_function(lambda t: self._decode(t.numpy().tolist()), [ids], Tout=tf.string)
        text.set_shape([])
        return text


@functools.lru_cache(maxsize=4)
def get_vocabulary(path: str | None = None) -> QwenVocabulary:
    """A shared vocabulary per tokenizer path (loading the 7 MB tokenizer.json takes about a second)."""
    return QwenVocabulary(path)
