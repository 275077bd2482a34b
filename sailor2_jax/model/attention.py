"""Attention behind one function; every backend takes segment ids and positions, so packed documents never mix.

Mask semantics (shared by all backends): query i may attend to key j iff they belong to the same segment and
`kv_positions[j] <= q_positions[i]`. Segment id 0 marks padding (padding attends only to padding, so nothing
becomes NaN). Positions restart at 0 in each packed document, which makes this the causal mask of each document.

Backends:
- `xla`: the reference, plain einsums with an fp32 softmax; runs everywhere.
- `cudnn`: `jax.nn.dot_product_attention(implementation="cudnn")` on NVIDIA GPUs. Unpacked causal rows use its
  causal kernel alone. Packed rows use the segment-aware route of `cudnn_attention`: the kernel's causal mask
  plus a same-segment mask (cuDNN's mask API has no segment ids, and a fused kernel that ignores segments mixes
  documents; the mask closes that gap, tested equal to `xla` on packed batches).
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


def cudnn_attention(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT=None, *, implementation: str = "cudnn"):
    """The fused kernel's causal mask, AND (for packed rows) a same-segment mask [B, 1, T, T].

    Equal to the reference mask when every segment is contiguous in its row and its positions rise by one along it
    (what the packers emit, whatever position a continued document starts at): inside one segment, key position ≤
    query position is then the same as key index ≤ query index. Padding (segment 0) queries see only earlier
    padding instead of all of it; no real token attends to padding, so real outputs and the loss are unchanged.
    `implementation="xla"` runs the same masks without a GPU (tests)."""
    same_segment_B1TT = None
    if segment_ids_BT is not None:
        same_segment_B1TT = (segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :])[:, None]
    return jax.nn.dot_product_attention(q_BTNH, k_BTKH, v_BTKH, mask=same_segment_B1TT, is_causal=True,
                                        implementation=implementation)


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
    where a plain causal kernel is exact); `cudnn` then runs its causal kernel alone. With `packed=True` every
    backend applies the segment mask (`cudnn` through `cudnn_attention`'s same-segment mask).
    """
    impl = resolve_impl(impl)
    if impl == "cudnn" and q_BTNH.shape[1] == k_BSKH.shape[1]:
        return cudnn_attention(q_BTNH, k_BSKH, v_BSKH, q_segment_ids if packed else None)
    mask = attention_mask(q_segment_ids, kv_segment_ids, q_positions, kv_positions)
    return xla_attention(q_BTNH, k_BSKH, v_BSKH, mask)
