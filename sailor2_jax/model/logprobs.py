"""The token log-prob core: log p(target | prefix) in fp32 from a Qwen2, without ever holding the [B, T, V] logits.

One function serves every consumer of token probabilities: the training objectives (masked NLL, DPO-family losses,
train/objectives.py), SFT data selection and perplexity filtering (post/select.py), evaluation scoring
(eval/score.py). They differ only in which tokens they mask and how they reduce.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.sharding import context_size


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
    # Under context parallelism each of the n sequence shards takes its own part of every chunk ([B, n, C] per
    # step), so the LM head stays split over the context devices instead of being gathered onto each.
    n = context_size()
    if T % n:
        n = 1
    C = max(c for c in range(1, min(chunk, T // n) + 1) if (T // n) % c == 0)  # the longest ≤ `chunk` that tiles T/n
    J = T // n // C

    @jax.checkpoint
    def chunk_logprobs(x_BnCD, targets_BnC):
        logits_BcV = model.logits(x_BnCD.reshape(B, n * C, D))  # fp32
        targets_Bc = targets_BnC.reshape(B, n * C)
        target_Bc = jnp.take_along_axis(logits_BcV, targets_Bc[..., None], axis=-1)[..., 0]
        logp_Bc = target_Bc - jax.nn.logsumexp(logits_BcV, axis=-1)
        out = (logp_Bc, target_Bc >= jnp.max(logits_BcV, axis=-1)) if with_greedy else logp_Bc
        return jax.tree.map(lambda a: a.reshape(B, n, C), out)

    x_JBnCD = x_BTD.reshape(B, n, J, C, D).transpose(2, 0, 1, 3, 4)
    targets_JBnC = targets_BT.reshape(B, n, J, C).transpose(2, 0, 1, 3)
    _, out_JBnC = jax.lax.scan(lambda _, xs: (None, chunk_logprobs(*xs)), None, (x_JBnCD, targets_JBnC))
    return jax.tree.map(lambda a: a.transpose(1, 2, 0, 3).reshape(B, T), out_JBnC)
