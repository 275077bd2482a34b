"""Attention behind one function; every backend takes segment ids and positions, so packed documents never mix.

Mask semantics (shared by all backends): query i may attend to key j iff they belong to the same segment and
`kv_positions[j] <= q_positions[i]`. Segment id 0 marks padding (padding attends only to padding, so nothing
becomes NaN). Positions restart at 0 in each packed document, which makes this the causal mask of each document.

Backends:
- `xla`: the reference, plain einsums with an fp32 softmax; runs everywhere.
- `cudnn`: `jax.nn.dot_product_attention(implementation="cudnn")` for the unpacked causal case on NVIDIA GPUs; packed
  batches fall back to `xla` (cuDNN's mask API has no segment ids, and a fused kernel that ignores segments mixes
  documents).
- `auto`: `cudnn` on GPU, `xla` elsewhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite: fully masked rows stay NaN-free


def attention_mask(q_segment_ids_BT: jax.Array, kv_segment_ids_BS: jax.Array, q_positions_BT: jax.Array,
                   kv_positions_BS: jax.Array) -> jax.Array:
    """[B, T, S] boolean: same segment and key position not after query position."""
    same_segment = q_segment_ids_BT[:, :, None] == kv_segment_ids_BS[:, None, :]
    causal = kv_positions_BS[:, None, :] <= q_positions_BT[:, :, None]
    return same_segment & causal


def xla_attention(q_BTNH, k_BSKH, v_BSKH, mask_BTS):
    B, T, N, H = q_BTNH.shape
    K = k_BSKH.shape[2]
    q_BTKGH = q_BTNH.reshape(B, T, K, N // K, H)
    scores_BKGTS = jnp.einsum("btkgh,bskh->bkgts", q_BTKGH, k_BSKH, preferred_element_type=jnp.float32)
    scores_BKGTS = scores_BKGTS * (H ** -0.5)
    scores_BKGTS = jnp.where(mask_BTS[:, None, None], scores_BKGTS, NEG_INF)
    probs_BKGTS = jax.nn.softmax(scores_BKGTS, axis=-1).astype(v_BSKH.dtype)
    out_BTKGH = jnp.einsum("bkgts,bskh->btkgh", probs_BKGTS, v_BSKH)
    return out_BTKGH.reshape(B, T, N, H)


def _cudnn_causal(q_BTNH, k_BSKH, v_BSKH):
    return jax.nn.dot_product_attention(q_BTNH, k_BSKH, v_BSKH, is_causal=True, implementation="cudnn")


def resolve_impl(impl: str) -> str:
    if impl == "auto":
        return "cudnn" if jax.default_backend() == "gpu" else "xla"
    if impl == "splash":
        raise ValueError("attention 'splash' (TPU) is not available in this build yet; use 'xla' or 'auto'")
    return impl


def attention(q_BTNH: jax.Array, k_BSKH: jax.Array, v_BSKH: jax.Array, *, q_segment_ids: jax.Array,
              kv_segment_ids: jax.Array, q_positions: jax.Array, kv_positions: jax.Array,
              impl: str = "xla", packed: bool = True) -> jax.Array:
    """Grouped-query attention [B, T, N, H] x [B, S, K, H] -> [B, T, N, H].

    `packed=False` promises one document per row starting at position 0 with no padding before its end (the case
    where a plain causal kernel is exact); it lets `cudnn` run. With `packed=True` every backend applies the mask.
    """
    impl = resolve_impl(impl)
    if impl == "cudnn" and not packed and q_BTNH.shape[1] == k_BSKH.shape[1]:
        return _cudnn_causal(q_BTNH, k_BSKH, v_BSKH)
    mask = attention_mask(q_segment_ids, kv_segment_ids, q_positions, kv_positions)
    return xla_attention(q_BTNH, k_BSKH, v_BSKH, mask)
