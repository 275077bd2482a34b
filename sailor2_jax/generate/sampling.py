"""From next-token logits to tokens: repetition penalty, temperature, top-k, top-p, then argmax or a draw.

The order and the arithmetic are those of `transformers`' logits processors, so a setting means the same in both:
repetition penalty on the raw logits (`RepetitionPenaltyLogitsProcessor`: a seen token's logit is divided by the
penalty when positive, multiplied when negative), then temperature, then top-k (keep logits ≥ the k-th largest),
then top-p (keep the smallest set of most likely tokens whose probability reaches p; the most likely token always
stays). Removed tokens get -inf. Temperature 0 is greedy: the argmax of the penalised logits.

"Seen" tokens are the row's real prompt tokens and what it has generated (transformers also counts the padding
of a left-padded batch; we do not). Draws are Gumbel-max with one key per row and step, folded from the row's key,
so a sample depends on the seed and its row's identity only — not on the batch it was decoded in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pydantic

from sailor2_jax.config import Config


class SamplingConfig(Config):
    temperature: float = pydantic.Field(0.0, ge=0.0, description="0: greedy (argmax)")
    top_k: int = pydantic.Field(0, ge=0, description="keep the k most likely tokens (0: all)")
    top_p: float = pydantic.Field(1.0, gt=0.0, le=1.0, description="nucleus: smallest set with probability ≥ p")
    repetition_penalty: float = pydantic.Field(1.0, gt=0.0, description="1: off; >1 discourages seen tokens")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def penalize_repetition(logits_BV: jax.Array, seen_BV: jax.Array, penalty: float) -> jax.Array:
    penalized = jnp.where(logits_BV < 0, logits_BV * penalty, logits_BV / penalty)
    return jnp.where(seen_BV, penalized, logits_BV)


def filter_top_k_top_p(logits_BV: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """-inf outside the top-k and the top-p nucleus (of the temperature-scaled logits).

    Both are cut-off values on one descending sort of the k candidates (all V when top_k is 0, so set top_k to keep
    top-p cheap at V = 151,936): a token stays iff its logit is at least the cut-off."""
    V = logits_BV.shape[-1]
    k = V if top_k == 0 else min(top_k, V)
    values_BK, _ = jax.lax.top_k(logits_BV, k)
    cutoff_B = values_BK[:, -1]
    if top_p < 1.0:
        probs_BK = jax.nn.softmax(values_BK, axis=-1)  # the distribution after top-k: mass on these k alone
        before_BK = jnp.cumsum(probs_BK, axis=-1) - probs_BK  # mass of the strictly more likely candidates
        keep_BK = before_BK < top_p  # the first candidate always stays (mass 0 before it)
        cutoff_B = jnp.min(jnp.where(keep_BK, values_BK, jnp.inf), axis=-1)
    return jnp.where(logits_BV >= cutoff_B[:, None], logits_BV, -jnp.inf)


def process_logits(logits_BV: jax.Array, seen_BV: jax.Array | None, cfg: SamplingConfig) -> jax.Array:
    """The logits a token is drawn from (fp32): penalty, temperature, top-k, top-p, in transformers' order."""
    logits_BV = logits_BV.astype(jnp.float32)
    if cfg.repetition_penalty != 1.0:
        logits_BV = penalize_repetition(logits_BV, seen_BV, cfg.repetition_penalty)
    if cfg.greedy:
        return logits_BV
    logits_BV = logits_BV / cfg.temperature
    if cfg.top_k or cfg.top_p < 1.0:
        logits_BV = filter_top_k_top_p(logits_BV, cfg.top_k, cfg.top_p)
    return logits_BV


def next_tokens(logits_BV: jax.Array, seen_BV: jax.Array | None, keys_B: jax.Array, step: jax.Array,
                cfg: SamplingConfig) -> jax.Array:
    """One token per row, int32 [B]; `keys_B` are the rows' typed PRNG keys, `step` the index of this token."""
    logits_BV = process_logits(logits_BV, seen_BV, cfg)
    if cfg.greedy:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    draw = jax.vmap(lambda key, row: jax.random.categorical(jax.random.fold_in(key, step), row))
    return draw(keys_B, logits_BV).astype(jnp.int32)
