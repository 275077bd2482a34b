"""The small things the demo, the tests and the benchmarks all build: a random tiny Qwen2.5-architecture base
checkpoint with the real tokenizer, a tiny random NLLB-architecture translator, the planted-trouble corpus the
cleaning runs on, documents of real UDHR sentences, and the texts and transformers logits of the parity checks."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np

from sailor2_jax.config import DATA_DIR, load_model_config
from sailor2_jax.languages import LANGUAGES
from sailor2_jax.languages import FLORES
from sailor2_jax.data.translate.segment import sentences
from sailor2_jax.embedded.synthetic import near_duplicate, synthetic_document, udhr_lines

DEMO_LANGUAGES = ("en", "zh", "vi", "id", "th", "ms", "my", "km", "lo", "jv")  # the parity checks' texts


# --- models -------------------------------------------------------------------------------------------------------

def make_base_checkpoint(out: Path, seed: int = 0) -> Path:
    """A random Qwen2.5-0.5B-like base (tied embeddings, real vocabulary rows) at a tiny width, as a HF directory."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sailor2_jax.tokenizer import save_hf_tokenizer

    cfg = load_model_config("tiny")
    hf_cfg = Qwen2Config(**{k: v for k, v in cfg.to_hf("float32").items() if k not in ("architectures", "model_type")})
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # trained models have non-trivial biases and norms: so should the demo's
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(out)
    save_hf_tokenizer(out)
    return out


def demo_texts(per_language_tokens: int = 128) -> tuple[list[str], np.ndarray, np.ndarray]:
    """First UDHR document of each demo language, tokenised and cut to a fixed length (rows of one batch)."""
    from sailor2_jax.tokenizer import EOS_ID, load_tokenizer

    tok = load_tokenizer()
    langs, rows, segs = [], [], []
    for lang in DEMO_LANGUAGES:
        first_line = (DATA_DIR / "udhr" / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines()[0]
        text = json.loads(first_line)["text"]
        ids = tok.encode(text).ids[:per_language_tokens]
        pad = per_language_tokens - len(ids)
        langs.append(lang)
        rows.append(ids + [EOS_ID] * pad)
        segs.append([1] * len(ids) + [0] * pad)
    return langs, np.asarray(rows, np.int32), np.asarray(segs, np.int32)


def torch_logits(hf_dir: Path, tokens: np.ndarray) -> np.ndarray:
    """The logits `transformers` computes for `tokens` from the HF directory (fp32, CPU): the parity reference."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()


def make_tiny_translator(out_dir: str | Path, vocab_size: int = 1000, width: int = 32, seed: int = 0) -> Path:
    """A tiny random NLLB-architecture translator (M2M100ForConditionalGeneration, a BPE tokenizer trained on the
    embedded UDHR text, the FLORES-200 codes of the 15 languages). Random weights: its "translations" are noise, but
    every part of the path (tokens, language codes, segmentation, batching, both engines, conversion to
    CTranslate2) is the one a real NLLB model takes."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import M2M100Config, M2M100ForConditionalGeneration, PreTrainedTokenizerFast

    out = Path(out_dir)
    specials = ["<s>", "<pad>", "</s>", "<unk>", *(FLORES[lang] for lang in LANGUAGES)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator([line for lang in LANGUAGES for line in udhr_lines(lang)],
                            trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>")
    tokenizer.save_pretrained(out)
    config = M2M100Config(vocab_size=len(tokenizer), d_model=width, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=2 * width,
                          decoder_ffn_dim=2 * width, max_position_embeddings=512, pad_token_id=1, bos_token_id=0,
                          eos_token_id=2, decoder_start_token_id=2, init_std=0.3)
    torch.manual_seed(seed)
    M2M100ForConditionalGeneration(config).eval().save_pretrained(out)
    return out


# --- text ---------------------------------------------------------------------------------------------------------

BOILERPLATE = "Subscribe to our newsletter | Privacy policy | All rights reserved"
# a notice of more than 100 bytes that sites paste into their pages: substring dedup cuts every copy
NOTICE = ("This site uses cookies to deliver its services and to analyse traffic. By using this site, you agree to "
          "its use of cookies.")
NOTICE_LANGUAGES = ("en", "id", "vi", "tl", "ceb", "jv")


def build_demo_corpus(folder: Path, docs_per_language: int = 6, seed: int = 0) -> dict[str, int]:
    """Write two JSONL files (one gzipped) under `folder`; returns how many planted items of each kind it holds."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records: list[dict | str | bytes] = []
    planted = {"exact_duplicates": 0, "near_duplicates": 0, "url_duplicates": 0, "wrong_language": 0,
               "bad_lines": 0, "boilerplate_lines": 0, "repeated_notices": 0}
    for lang in LANGUAGES:
        for k in range(docs_per_language):
            text = synthetic_document(lang, rng, 400)
            if k % 2 == 0:  # boilerplate that frequent-line removal must take out
                text += "\n" + BOILERPLATE
                planted["boilerplate_lines"] += 1
            if k == 3 and lang in NOTICE_LANGUAGES:  # a repeated span that substring dedup must cut
                lines = text.split("\n")
                text = "\n".join([*lines[:1], NOTICE, *lines[1:]])
                planted["repeated_notices"] += 1
            url = f"https://example.{lang}/article/{k}"
            records.append({"id": f"{lang}-{k}", "text": text, "url": url, "language": lang})
            if k == 0:
                records.append({"id": f"{lang}-{k}-copy", "text": text, "language": lang})
                planted["exact_duplicates"] += 1
            if k == 1:
                near = near_duplicate(text, lang, rng, edits=2)
                records.append({"id": f"{lang}-{k}-near", "text": near, "language": lang})
                planted["near_duplicates"] += 1
            if k == 2:  # the same page crawled again, truncated: the longer one must survive
                short = "\n".join(text.split("\n")[:2])
                records.append({"id": f"{lang}-{k}-short", "text": short, "url": url + "/#top", "language": lang})
                planted["url_duplicates"] += 1
        # a document labelled `lang` but written in `other`
        other = LANGUAGES[(LANGUAGES.index(lang) + 5) % len(LANGUAGES)]
        records.append({"id": f"{lang}-wrong", "text": synthetic_document(other, rng, 400), "language": lang})
        planted["wrong_language"] += 1
    bad: list[str | bytes] = [
        '{"id": "broken", "text": "unterminated',  # malformed JSON
        b'{"id": "latin1", "text": "caf\xe9"}',  # invalid UTF-8
        '{"id": "no-text", "url": "https://example.com/x"}',
        '{"id": "number", "text": 42}',
        '{"id": "empty", "text": "   "}',
        '["not", "an", "object"]',
        json.dumps({"id": "huge", "text": "word " * 500_000, "language": "en"}),
    ]
    planted["bad_lines"] = len(bad)
    rng.shuffle(records)
    half = len(records) // 2
    with open(folder / "part-0.jsonl", "wb") as f:
        f.writelines(_line(r) for r in records[:half] + bad[:4])
    with gzip.open(folder / "part-1.jsonl.gz", "wb") as f:
        f.writelines(_line(r) for r in records[half:] + bad[4:])
    planted["documents"] = len(records) + len(bad)
    return planted


def _line(r: dict | str | bytes) -> bytes:
    """A JSONL line: a record as JSON, a planted bad line as it is."""
    if isinstance(r, dict):
        r = json.dumps(r, ensure_ascii=False)
    return (r if isinstance(r, bytes) else r.encode("utf-8")) + b"\n"


def prose(lang: str, rng: random.Random, n_sentences: int = 6) -> str:
    """A document of real sentences: UDHR sentences of `lang` in a random order."""
    pool = [s for line in udhr_lines(lang) for s in sentences(line, lang)]
    return "\n".join(rng.choice(pool) for _ in range(n_sentences))
