"""Tiny random models with the real Qwen2.5 vocabulary and tokenizer (Hugging Face directories) for the reward and
on-policy tests: a `Qwen2ForSequenceClassification` reward model and a `Qwen2ForCausalLM` policy."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

from sailor2_jax.config import DATA_DIR
from sailor2_jax.tokenizer import EOS_ID, save_hf_tokenizer

VOCAB = 151_936


def config(**kwargs) -> Qwen2Config:
    return Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6,
                       rms_norm_eps=1e-6, max_position_embeddings=1024, bos_token_id=EOS_ID, eos_token_id=EOS_ID,
                       pad_token_id=EOS_ID, **kwargs)


def reward_dir(path: Path, seed: int = 0) -> Path:
    """A random one-label classifier (non-trivial norms, biases and head) with the Qwen2.5 tokenizer."""
    torch.manual_seed(seed)
    model = Qwen2ForSequenceClassification(config(num_labels=1)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or name.startswith("score"):
                p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(path)
    save_hf_tokenizer(path)
    return path


def policy_dir(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config(initializer_range=0.2)).eval().save_pretrained(path)
    save_hf_tokenizer(path)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, EOS_ID]}))
    return path


def udhr(language: str, i: int = 0) -> str:
    lines = (DATA_DIR / "udhr" / f"{language}.jsonl").read_text(encoding="utf-8").splitlines()
    return json.loads(lines[i])["text"]
