"""Tiny random `transformers` Qwen2 models for decoding tests: weights large enough that the next token depends on
the context (at the usual 0.02 init every row greedily repeats one token), and a model with the real vocabulary."""

from __future__ import annotations

import jax
import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from sailor2_jax.config import ComputeConfig
from sailor2_jax.model.hf import import_hf

VOCAB = 160
FP32 = ComputeConfig(param_dtype="float32", dtype="float32", remat="none", attention="xla")


def hf_model(*, vocab: int = VOCAB, layers: int = 2, hidden: int = 64, tied: bool = False,
             seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=96, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied, rope_theta=1e4,
                      rms_norm_eps=1e-6, max_position_embeddings=512, bos_token_id=0, eos_token_id=1,
                      pad_token_id=0, initializer_range=0.2)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial biases and norms, so a mis-mapped tensor cannot hide
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model


def real_vocab_hf_dir(path, seed: int):
    """A tiny random model with the real Qwen2.5 vocabulary and tokenizer saved as an HF directory (our tokenizer and
    transformers' then agree), stopping on <|endoftext|>."""
    from sailor2_jax.tokenizer import EOS_ID, save_hf_tokenizer

    model = hf_model(vocab=151936, hidden=32, seed=seed)
    model.generation_config.eos_token_id = EOS_ID
    model.save_pretrained(path)
    save_hf_tokenizer(path)
    return path


def ours(ref: Qwen2ForCausalLM, path, mesh, compute: ComputeConfig = FP32):
    ref.save_pretrained(path)
    return import_hf(path, mesh, compute)


def prompts(lengths=(5, 11, 3, 8), vocab: int = VOCAB, seed: int = 0) -> list[list[int]]:
    rng = np.random.RandomState(seed)
    return [rng.randint(2, vocab, n).tolist() for n in lengths]


def hf_generate(ref: Qwen2ForCausalLM, prompts: list[list[int]], max_new_tokens: int, eos_ids, pad: int = 0,
                **kwargs) -> list[list[int]]:
    """transformers' generate on a left-padded batch; each row's new ids up to and including its stop token."""
    P = max(map(len, prompts))
    ids = torch.tensor([[pad] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                           eos_token_id=list(eos_ids), pad_token_id=pad, **kwargs)[:, P:].tolist()
    rows = []
    for row in out:
        stop = next((i for i, t in enumerate(row) if t in eos_ids), None)
        rows.append(row if stop is None else row[:stop + 1])
    return rows


def one_device_mesh():
    from sailor2_jax.config import MeshConfig
    from sailor2_jax.sharding import make_mesh
    return make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])


def expanded_target(base: Qwen2ForCausalLM, tmp, noise: float, seed: int = 0) -> tuple[Qwen2ForCausalLM, str]:
    """`base` block-expanded to twice its layers (saved under tmp), its inserted layers then perturbed as continual
    pre-training would: its self draft (the inserted layers skipped) is exactly `base`, and agrees with it often but
    not always. (HF target, its directory)."""
    import json

    from sailor2_jax.model.expand import expand_hf_dir

    base.save_pretrained(tmp / "base")
    expand_hf_dir(tmp / "base", tmp / "expanded", 2 * base.config.num_hidden_layers)
    target = Qwen2ForCausalLM.from_pretrained(tmp / "expanded", dtype=torch.float32).eval()
    inserted = json.loads((tmp / "expanded" / "config.json").read_text())["sailor2_inserted_layers"]
    torch.manual_seed(seed)
    with torch.no_grad():  # what training does to the inserted layers: their outputs are no longer zero
        for i in inserted:
            layer = target.model.layers[i]
            for w in (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight):
                w.add_(torch.randn_like(w) * noise)
    target.save_pretrained(tmp / "target")
    return target, str(tmp / "target")
