"""Random tiny `transformers` Qwen2 models and small helpers: the reference every model test measures against."""

from __future__ import annotations

import jax
import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

VOCAB = 320


def hf_model(*, tied: bool, layers: int = 3, vocab: int = VOCAB, seed: int = 0, **config) -> Qwen2ForCausalLM:
    """`config`: Qwen2Config fields over the defaults below (e.g. rope_scaling, max_position_embeddings)."""
    torch.manual_seed(seed)
    cfg = Qwen2Config(**{**dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                                num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied, rope_theta=1e6,
                                rms_norm_eps=1e-6, max_position_embeddings=256, bos_token_id=0, eos_token_id=1),
                         **config})
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial biases and norms, so a mis-mapped tensor cannot hide
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model


def hf_logits(model: Qwen2ForCausalLM, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()


def tokens(batch: int = 4, length: int = 16, vocab: int = VOCAB, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, vocab, (batch, length)).astype(np.int32)


def run_model(model, mesh, tokens_BT, **kwargs) -> np.ndarray:
    """Jitted forward under the mesh (the way training calls it)."""
    from flax import nnx

    graphdef, state = nnx.split(model)

    @jax.jit
    def fwd(state, tokens_BT, kwargs):
        return nnx.merge(graphdef, state)(tokens_BT, **kwargs)

    with jax.set_mesh(mesh):
        return np.asarray(fwd(state, jax.numpy.asarray(tokens_BT), kwargs))
