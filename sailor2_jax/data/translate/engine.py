"""Translation engines for NLLB/M2M100 sequence-to-sequence models: CTranslate2 (a converted model; batched,
int8/bf16 on CPU or GPU) and `transformers` (the model as it is, in PyTorch). Both take the same source tokens —
[source language token] + text tokens + [</s>] — and start the output with the target language token, so the same
model gives the same greedy translation through either (tested).

Models and tokenizers are read from local directories only; `transformers` loads safetensors only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol

from sailor2_jax.languages import FLORES, canonical_language

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.bpe.model",
                    "vocab.json", "merges.txt", "added_tokens.json")


class Engine(Protocol):
    name: str

    def count_tokens(self, texts: list[str]) -> list[int]: ...

    def translate(self, texts: list[str], source: str, target: str) -> list[str]: ...


def is_ctranslate2_model(path: str | Path) -> bool:
    return (Path(path) / "model.bin").is_file()


def convert_to_ctranslate2(hf_dir: str | Path, out_dir: str | Path) -> Path:
    """Convert a Hugging Face NLLB/M2M100 directory with CTranslate2's converter (weights kept in their dtype; the
    compute type is chosen when loading), tokenizer files copied beside it; written to a temporary directory and
    renamed, so a half-converted model is never used. Reused when it exists."""
    from ctranslate2.converters import TransformersConverter

    out = Path(out_dir)
    if is_ctranslate2_model(out):
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    files = [f for f in _TOKENIZER_FILES if (Path(hf_dir) / f).is_file()]  # names inside hf_dir, not paths
    TransformersConverter(str(hf_dir), copy_files=files, load_as_float16=False).convert(str(tmp), force=True)
    tmp.rename(out)
    return out


def _tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    if not (Path(path) / "tokenizer.json").is_file() and not (Path(path) / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"no tokenizer in {path} (tokenizer.json or tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


class _Tokenized:
    """The tokenizer side both engines share."""

    def __init__(self, model_dir: str | Path, max_output_tokens: int):
        self.tokenizer = _tokenizer(model_dir)
        self.vocab = self.tokenizer.get_vocab()
        self.max_output_tokens = max_output_tokens

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) + 2 for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def source_ids(self, texts: list[str], source: str) -> list[list[int]]:
        src = self.vocab[language_token(self.vocab, source)]
        eos = self.tokenizer.eos_token_id
        return [[src, *ids, eos] for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def decode(self, ids: list[list[int]]) -> list[str]:
        return [self.tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]


class CTranslate2Engine(_Tokenized):
    name = "ctranslate2"

    def __init__(self, model_dir: str | Path, device: str = "auto", compute_type: str = "auto", beam_size: int = 4,
                 batch_size: int = 32, max_output_tokens: int = 256, threads: int = 0):
        import ctranslate2

        super().__init__(model_dir, max_output_tokens)
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.device = device
        self.translator = ctranslate2.Translator(str(model_dir), device=device, compute_type=compute_type,
                                                 intra_threads=threads)
        self.compute_type = self.translator.compute_type
        self.beam_size, self.batch_size = beam_size, batch_size

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        tok = self.tokenizer
        tgt = language_token(self.vocab, target)
        source_tokens = [tok.convert_ids_to_tokens(ids) for ids in self.source_ids(texts, source)]
        results = self.translator.translate_batch(
            source_tokens, target_prefix=[[tgt]] * len(texts), beam_size=self.beam_size,
            max_batch_size=self.batch_size, max_decoding_length=self.max_output_tokens)
        return self.decode([tok.convert_tokens_to_ids(r.hypotheses[0][1:]) for r in results])


class TransformersEngine(_Tokenized):
    name = "transformers"

    def __init__(self, model_dir: str | Path, device: str = "auto", compute_type: str = "auto", beam_size: int = 4,
                 batch_size: int = 32, max_output_tokens: int = 256, threads: int = 0):
        import torch
        from transformers import AutoModelForSeq2SeqLM

        super().__init__(model_dir, max_output_tokens)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if compute_type == "auto":
            compute_type = "bfloat16" if device == "cuda" else "float32"
        if compute_type not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"compute_type {compute_type!r}: the transformers engine runs float32, bfloat16 or "
                             "float16 (int8 is CTranslate2's)")
        if threads:
            torch.set_num_threads(threads)
        self.device, self.compute_type = device, compute_type
        self.model = AutoModelForSeq2SeqLM.from_pretrained(
            str(model_dir), local_files_only=True, use_safetensors=True, dtype=getattr(torch, compute_type)
        ).to(device).eval()
        self.beam_size, self.batch_size = beam_size, batch_size

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        import torch

        tgt = self.vocab[language_token(self.vocab, target)]
        ids = self.source_ids(texts, source)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: less padding
        out: list[list[int]] = [[] for _ in ids]
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            batch = [ids[i] for i in order[start:start + self.batch_size]]
            width = max(map(len, batch))
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in batch], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch], device=self.device)
            with torch.inference_mode():
                generated = self.model.generate(
                    input_ids=input_ids, attention_mask=mask, forced_bos_token_id=tgt, num_beams=self.beam_size,
                    do_sample=False, max_new_tokens=self.max_output_tokens)
            for i, row in zip(order[start:start + self.batch_size], generated.tolist()):
                out[i] = row
        return self.decode(out)


def load_engine(kind: str, model_dir: str | Path, **options) -> Engine:
    """`kind`: "ctranslate2" (a converted model directory) or "transformers" (a Hugging Face directory)."""
    if kind == "ctranslate2":
        if not is_ctranslate2_model(model_dir):
            raise ValueError(f"{model_dir} is not a CTranslate2 model (no model.bin); convert it first")
        return CTranslate2Engine(model_dir, **options)
    if kind == "transformers":
        if is_ctranslate2_model(model_dir):
            raise ValueError(f"{model_dir} is a CTranslate2 model: the transformers engine needs the HF directory")
        return TransformersEngine(model_dir, **options)
    raise ValueError(f"unknown translation engine {kind!r} (ctranslate2 or transformers)")


def language_token(vocab: dict[str, int], lang: str) -> str:
    """The model's token for `lang`: its FLORES-200 code (NLLB) or `__lang__` (M2M100); an error names both."""
    lang = canonical_language(lang)
    candidates = [c for c in (FLORES.get(lang), f"__{lang}__") if c]
    for token in candidates:
        if token in vocab:
            return token
    raise ValueError(f"the translation model has no token for language {lang!r} (looked for {', '.join(candidates)})")
