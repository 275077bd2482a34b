"""From next-token logits to tokens: repetition penalty, temperature, top-k, top-p, then argmax or a draw.

The order and the arithmetic are those of `transformers`' logits processors, so a setting means the same in both:
repetition penalty on the raw logits (`RepetitionPenaltyLogitsProcessor`: a seen token's logit is divided by the
penalty when positive, multiplied when negative), then temperature, then top-k (keep the k largest logits), then
top-p (keep the smallest set of most likely tokens whose probability reaches p; the most likely token always stays).
Removed tokens get -inf; a draw chooses among the remaining candidates only. Temperature 0 is greedy: the argmax of
the penalised logits.

"Seen" tokens are the row's real prompt tokens and what it has generated (transformers also counts the padding
of a left-padded batch; we do not). Draws are Gumbel-max with one key per row and step, folded from the row's key,
so a sample depends on the seed and its row's identity only — not on the batch it was decoded in.
"""

from __future__ import annotations

from collections.abc import Callable

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


def _scaled(logits_BV: jax.Array, seen_BV: jax.Array | None, cfg: SamplingConfig) -> jax.Array:
    logits_BV = logits_BV.astype(jnp.float32)
    if cfg.repetition_penalty != 1.0:
        logits_BV = penalize_repetition(logits_BV, seen_BV, cfg.repetition_penalty)
    return logits_BV if cfg.greedy else logits_BV / cfg.temperature


def _order_keys(x: jax.Array) -> jax.Array:
    """uint32 keys in the order of the float32 values (IEEE-754's order for every non-NaN, -inf first)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))


def _bisect(lo_B: jax.Array, hi_B: jax.Array, below: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """The smallest key s in (lo, hi] with `below(s)`, given below(lo) false and below(hi) true per row and `below`
    monotone: 32 halvings of the uint32 interval, each one pass over the row, instead of sorting it."""
    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        ok = below(mid)
        return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)
    return jax.lax.fori_loop(0, 32, halve, (lo_B, hi_B))[1]


def top_k_mask(logits_BV: jax.Array, top_k_B: jax.Array) -> jax.Array:
    """The k largest logits per row (k ≤ 0: all), tokens tied with the k-th kept as transformers keeps them."""
    V = logits_BV.shape[-1]
    keys_BV = _order_keys(logits_BV)
    k_B = jnp.where(top_k_B > 0, jnp.minimum(top_k_B, V), V)
    # the k-th largest key is the smallest s with fewer than k keys above it
    kth_B = _bisect(jnp.min(keys_BV, axis=-1) - 1, jnp.max(keys_BV, axis=-1),
                    lambda s: jnp.sum(keys_BV > s[:, None], axis=-1) < k_B)
    return keys_BV >= kth_B[:, None]


def top_p_mask(logits_BV: jax.Array, top_p_B: jax.Array, allowed_BV: jax.Array | None = None) -> jax.Array:
    """The nucleus per row among `allowed` tokens (default all): every token whose strictly more likely tokens hold
    less than p of the probability (the most likely always stays; p ≥ 1 keeps all). Found without a sort: the
    smallest logit key s whose mass above it is below p, by bisection (a sort of V = 151,936 logits is 35 ms a
    row on a CPU; 32 passes are 7)."""
    if allowed_BV is not None:
        logits_BV = jnp.where(allowed_BV, logits_BV, -jnp.inf)
    probs_BV = jax.nn.softmax(logits_BV.astype(jnp.float32), axis=-1)
    keys_BV = _order_keys(logits_BV)
    s_B = _bisect(jnp.min(keys_BV, axis=-1) - 1, jnp.max(keys_BV, axis=-1),
                  lambda s: jnp.sum(jnp.where(keys_BV > s[:, None], probs_BV, 0.0), axis=-1) < top_p_B)
    kept_BV = (keys_BV >= s_B[:, None]) | (top_p_B[:, None] >= 1.0)
    return kept_BV if allowed_BV is None else kept_BV & allowed_BV


def candidates(logits_BV: jax.Array, top_k: int, top_p: float) -> tuple[jax.Array, jax.Array | None]:
    """(logits, token ids) [B, K] of the top-k tokens, most likely first, -inf where top-p removes them; with top-p
    alone (top_k 0), the [B, V] logits with -inf outside the nucleus and no ids (no sort of the vocabulary).

    Ties at the k-th logit keep the lower ids (transformers keeps every tied token); with real-valued logits that
    never matters. Drawing among K candidates also needs K random numbers per row instead of V."""
    values_BK, ids_BK = (logits_BV, None) if top_k == 0 else jax.lax.top_k(logits_BV, min(top_k, logits_BV.shape[-1]))
    if top_p < 1.0:  # the distribution after top-k: the nucleus of these K alone
        kept_BK = top_p_mask(values_BK, jnp.full(values_BK.shape[:1], top_p, jnp.float32))
        values_BK = jnp.where(kept_BK, values_BK, -jnp.inf)
    return values_BK, ids_BK


def process_logits(logits_BV: jax.Array, seen_BV: jax.Array | None, cfg: SamplingConfig) -> jax.Array:
    """The [B, V] logits a token is drawn from (fp32): penalty, temperature, then -inf outside top-k/top-p."""
    logits_BV = _scaled(logits_BV, seen_BV, cfg)
    if cfg.greedy or not (cfg.top_k or cfg.top_p < 1.0):
        return logits_BV
    values_BK, ids_BK = candidates(logits_BV, cfg.top_k, cfg.top_p)
    if ids_BK is None:
        return values_BK
    rows_B1 = jnp.arange(logits_BV.shape[0])[:, None]
    return jnp.full_like(logits_BV, -jnp.inf).at[rows_B1, ids_BK].set(values_BK)


def next_tokens(logits_BV: jax.Array, seen_BV: jax.Array | None, keys_B: jax.Array, step: jax.Array,
                cfg: SamplingConfig) -> jax.Array:
    """One token per row, int32 [B]; `keys_B` are the rows' typed PRNG keys, `step` the index of this token."""
    logits_BV = _scaled(logits_BV, seen_BV, cfg)
    if cfg.greedy:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    draw = jax.vmap(lambda key, row: jax.random.categorical(jax.random.fold_in(key, step), row))
    if not (cfg.top_k or cfg.top_p < 1.0):
        return draw(keys_B, logits_BV).astype(jnp.int32)
    values_BK, ids_BK = candidates(logits_BV, cfg.top_k, cfg.top_p)
    pick_B = draw(keys_B, values_BK)
    if ids_BK is None:
        return pick_B.astype(jnp.int32)
    return jnp.take_along_axis(ids_BK, pick_B[:, None], axis=-1)[:, 0].astype(jnp.int32)
