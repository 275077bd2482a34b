"""A tiny random NLLB-architecture translator (M2M100ForConditionalGeneration with a BPE tokenizer trained on the
embedded UDHR text and the FLORES-200 codes of the 15 languages), for the demo and the tests. Random weights: its
"translations" are noise, but every part of the path — tokens, language codes, segmentation, batching, both
engines, conversion to CTranslate2 — is the one a real NLLB model takes."""

from __future__ import annotations

from pathlib import Path

from sailor2_jax.data.clean.udhr import udhr_lines
from sailor2_jax.data.config import LANGUAGES
from sailor2_jax.data.translate.languages import FLORES


def make_tiny_translator(out_dir: str | Path, vocab_size: int = 1000, width: int = 32, seed: int = 0) -> Path:
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
