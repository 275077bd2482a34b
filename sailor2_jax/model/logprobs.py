"""The token log-prob core: log p(target | prefix) in fp32 from a Qwen2, without ever holding the [B, T, V] logits.

One function serves every consumer of token probabilities: the training objectives (masked NLL, DPO-family losses,
train/objectives.py), SFT data selection and perplexity filtering (post/select.py), evaluation scoring
(eval/score.py). They differ only in which tokens they mask and how they reduce.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sailor2_jax.model.qwen2 import Qwen2
from sailor2_jax.sharding import context_size, logical_size, shard


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


# The log-softmax runs over the vocabulary a block of columns at a time with a running log-sum-exp and a hand-written
# backward pass (`_log_softmax_at`), so neither pass writes or keeps fp32 logits for the whole vocabulary (Levanter's
# blockwise cross-entropy, for the same reason). The block is the widest divisor of each tensor shard's vocabulary up
# to this: 4,748 columns (32 blocks) at V = 151,936 = 2^7·1187. On the demo's CPU mesh the DPO stage ran 22 % faster
# than with autodiff over whole-vocabulary logits; narrower blocks (128) were faster for scoring alone in a
# micro-benchmark but slower for training (docs/performance.md, "LM head").
VOCAB_BLOCK = 8192


def hidden_logprobs(model: Qwen2, x_BTD: jax.Array, targets_BT: jax.Array, chunk: int = 1024, *,
                    with_greedy: bool = False, vocab_block: int = VOCAB_BLOCK
                    ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """`token_logprobs` from the final-normed hidden states [B, T, D] (for callers that also use the states).

    Positions go `chunk` at a time, and within a chunk the vocabulary up to `vocab_block` columns at a time; each
    tensor shard runs through its own part of the vocabulary, and the shards' partial sums meet once per chunk."""
    B, T, D = x_BTD.shape
    # Under context parallelism each of the n sequence shards takes its own part of every chunk ([B, n, C] per
    # step), so the LM head stays split over the context devices instead of being gathered onto each.
    n = context_size()
    if T % n:
        n = 1
    C = _largest_divisor(T // n, chunk)
    J = T // n // C
    head_DV = model.head().astype(x_BTD.dtype)
    V = head_DV.shape[1]
    S = logical_size("act_vocab")  # (the parameters' sharding already required V % S == 0)
    U = _largest_divisor(V // S, vocab_block)
    if U < vocab_block // 8:  # no block width near the asked one tiles the shard (a prime-ish size): one block
        U = V // S
    G = V // S // U
    # Column v = s·(V/S) + g·U + u: shard-major, so each shard's blocks are its own columns.
    head_GDSU = head_DV.reshape(D, S, G, U).transpose(2, 0, 1, 3)
    columns_GSU = jnp.arange(V, dtype=jnp.int32).reshape(S, G, U).transpose(1, 0, 2)
    x_JBcD = x_BTD.reshape(B, n, J, C, D).transpose(2, 0, 1, 3, 4).reshape(J, B, n * C, D)
    targets_JBc = targets_BT.reshape(B, n, J, C).transpose(2, 0, 1, 3).reshape(J, B, n * C)
    logsumexp_JBc, target_JBc, greedy_JBc = _log_softmax_at(x_JBcD, head_GDSU, targets_JBc, columns_GSU)
    out = (target_JBc - logsumexp_JBc, greedy_JBc) if with_greedy else target_JBc - logsumexp_JBc
    return jax.tree.map(lambda a: a.reshape(J, B, n, C).transpose(1, 2, 0, 3).reshape(B, T), out)


def _block_logits(x_BcD: jax.Array, head_DSU: jax.Array) -> jax.Array:
    logits_BcSU = jnp.einsum("bcd,dsu->bcsu", x_BcD, head_DSU, preferred_element_type=jnp.float32)
    return shard(logits_BcSU, ("batch", "seq", "act_vocab", None))


@jax.custom_vjp
def _log_softmax_at(x_JBcD: jax.Array, head_GDSU: jax.Array, targets_JBc: jax.Array, columns_GSU: jax.Array
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per position of each chunk j: the log-sum-exp of its logits, its target's logit, and whether the target's
    logit is the largest, one vocabulary block at a time. The gradient is written by hand (below): autodiff of the
    running log-sum-exp would keep every block's logits for the backward pass, the [rows, V] array this avoids."""
    def chunk(_, xs):
        x_BcD, targets_Bc = xs

        def block(carry, xs):
            max_BcS, sum_BcS, target_BcS = carry
            head_DSU, columns_SU = xs
            logits_BcSU = _block_logits(x_BcD, head_DSU)
            new_max_BcS = jnp.maximum(max_BcS, jnp.max(logits_BcSU, axis=-1))
            sum_BcS = (sum_BcS * jnp.exp(max_BcS - new_max_BcS)
                       + jnp.sum(jnp.exp(logits_BcSU - new_max_BcS[..., None]), axis=-1))
            hit_BcSU = columns_SU == targets_Bc[:, :, None, None]
            target_BcS = target_BcS + jnp.sum(jnp.where(hit_BcSU, logits_BcSU, 0.0), axis=-1)
            return (new_max_BcS, sum_BcS, target_BcS), None

        B, c = targets_Bc.shape
        S = columns_GSU.shape[1]
        init = (jnp.full((B, c, S), jnp.finfo(jnp.float32).min), jnp.zeros((B, c, S), jnp.float32),
                jnp.zeros((B, c, S), jnp.float32))
        (max_BcS, sum_BcS, target_BcS), _ = jax.lax.scan(block, init, (head_GDSU, columns_GSU))
        # each tensor shard's running sums meet here, once per chunk
        max_Bc = jnp.max(max_BcS, axis=-1)
        logsumexp_Bc = max_Bc + jnp.log(jnp.sum(sum_BcS * jnp.exp(max_BcS - max_Bc[..., None]), axis=-1))
        target_Bc = jnp.sum(target_BcS, axis=-1)
        return None, (logsumexp_Bc, target_Bc, target_Bc >= max_Bc)

    return jax.lax.scan(chunk, None, (x_JBcD, targets_JBc))[1]


def _log_softmax_at_fwd(x_JBcD, head_GDSU, targets_JBc, columns_GSU):
    out = _log_softmax_at(x_JBcD, head_GDSU, targets_JBc, columns_GSU)
    return out, (x_JBcD, head_GDSU, targets_JBc, columns_GSU, out[0])


def _log_softmax_at_bwd(residuals, cotangents):
    """d logsumexp / d logit = softmax, d target / d logit = one-hot: each block's logits are made again and turned
    into their share of dx (accumulated over blocks) and d head (one block each, summed over chunks)."""
    x_JBcD, head_GDSU, targets_JBc, columns_GSU, logsumexp_JBc = residuals
    d_logsumexp_JBc, d_target_JBc, _ = cotangents

    def chunk(d_head_GDSU, xs):
        x_BcD, targets_Bc, logsumexp_Bc, d_logsumexp_Bc, d_target_Bc = xs

        def block(dx_BcD, xs):
            head_DSU, columns_SU = xs
            p_BcSU = jnp.exp(_block_logits(x_BcD, head_DSU) - logsumexp_Bc[:, :, None, None])
            hit_BcSU = columns_SU == targets_Bc[:, :, None, None]
            d_logits_BcSU = (d_logsumexp_Bc[:, :, None, None] * p_BcSU
                             + jnp.where(hit_BcSU, d_target_Bc[:, :, None, None], 0.0)).astype(x_BcD.dtype)
            dx_BcD = dx_BcD + jnp.einsum("bcsu,dsu->bcd", d_logits_BcSU, head_DSU, preferred_element_type=jnp.float32)
            return dx_BcD, jnp.einsum("bcd,bcsu->dsu", x_BcD, d_logits_BcSU, preferred_element_type=jnp.float32)

        dx_BcD, d_head_chunk_GDSU = jax.lax.scan(block, jnp.zeros(x_BcD.shape, jnp.float32), (head_GDSU, columns_GSU))
        return d_head_GDSU + d_head_chunk_GDSU, dx_BcD

    d_head_GDSU, dx_JBcD = jax.lax.scan(chunk, jnp.zeros(head_GDSU.shape, jnp.float32),
                                        (x_JBcD, targets_JBc, logsumexp_JBc, d_logsumexp_JBc, d_target_JBc))
    return dx_JBcD.astype(x_JBcD.dtype), d_head_GDSU.astype(head_GDSU.dtype), None, None


_log_softmax_at.defvjp(_log_softmax_at_fwd, _log_softmax_at_bwd)


def _largest_divisor(size: int, at_most: int) -> int:
    """The largest divisor of `size` that is ≤ `at_most` (the widest block that tiles `size` evenly)."""
    return max(c for c in range(1, min(at_most, size) + 1) if size % c == 0)
