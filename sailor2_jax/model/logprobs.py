"""The token log-prob core: log p(target | prefix) in fp32 from a Qwen2, without ever holding the [B, T, V] logits.

One function serves every consumer of token probabilities: the training objectives (masked NLL, DPO-family losses,
train/objectives.py), SFT data selection and perplexity filtering (post/select.py), evaluation scoring
(eval/score.py). They differ only in which tokens they mask and how they reduce.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sailor2_jax.model.qwen2 import Qwen2


def token_logprobs(model: Qwen2, tokens_BT: jax.Array, targets_BT: jax.Array, *, segment_ids_BT: jax.Array | None,
                   positions_BT: jax.Array | None, chunk: int = 1024, with_greedy: bool = False
                   ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """log p(target_t | tokens_≤t) in fp32, [B, T]; with `with_greedy`, also whether each target is the most likely
    token (bool [B, T]: its logit is the largest, what lm-eval's `is_greedy` asks).

    The LM head runs over T in chunks under `jax.checkpoint`, so neither the forward nor the backward pass holds
    the fp32 [B, T, V] logits (at V = 151,936 they would dwarf the rest of the activations).
    """
    x_BTD = model.hidden(tokens_BT, positions_BT=positions_BT, segment_ids_BT=segment_ids_BT)
    return hidden_logprobs(model, x_BTD, targets_BT, chunk, with_greedy=with_greedy)


def hidden_logprobs(model: Qwen2, x_BTD: jax.Array, targets_BT: jax.Array, chunk: int = 1024, *,
                    with_greedy: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """`token_logprobs` from the final-normed hidden states [B, T, D] (for callers that also use the states)."""
    B, T, D = x_BTD.shape
    C = max(c for c in range(1, min(chunk, T) + 1) if T % c == 0)  # the longest chunk ≤ `chunk` that tiles T

    @jax.checkpoint
    def chunk_logprobs(x_BCD, targets_BC):
        logits_BCV = model.logits(x_BCD)  # fp32
        target_BC = jnp.take_along_axis(logits_BCV, targets_BC[..., None], axis=-1)[..., 0]
        logp_BC = target_BC - jax.nn.logsumexp(logits_BCV, axis=-1)
        return (logp_BC, target_BC >= jnp.max(logits_BCV, axis=-1)) if with_greedy else logp_BC

    x_nBCD = x_BTD.reshape(B, T // C, C, D).swapaxes(0, 1)
    targets_nBC = targets_BT.reshape(B, T // C, C).swapaxes(0, 1)
    _, out_nBC = jax.lax.scan(lambda _, xs: (None, chunk_logprobs(*xs)), None, (x_nBCD, targets_nBC))
    return jax.tree.map(lambda a: a.swapaxes(0, 1).reshape(B, T), out_nBC)
