"""Ring attention: the other way to attend a sequence split over the mesh's `context` axis (`compute.context_attention:
ring`; the default all-gather is `attention.context_attention`'s). Runs on one context shard, inside its shard_map.

Each shard keeps its queries and passes its keys, values, segment ids and positions round the ring (`lax.ppermute`
to the next shard), n steps for n shards: at step s it attends its queries to the block that started on shard
i − s, and merges the block's normalised output into its own with the blocks' log-sum-exps (online softmax). No
shard ever holds more than two K/V blocks (the one in use and the one arriving), against the all-gather's n.
The backward pass (`jax.custom_vjp`) runs the ring again: each block's gradient comes from the merged output and
log-sum-exp (flash attention's backward), dQ stays home, dK/dV travel with their block and one last step takes
them home; nothing per step is kept between the passes.

Rows are in the load-balanced order (shard i holds chunks i and 2n−1−i of 2n, `sharding.balanced_order`), so every
step has the same work on every shard. Block backends:
- `xla` (and `cudnn`, whose `jax.nn.dot_product_attention` returns no log-sum-exp): the whole [2C, 2C] block with the
  exact segment-and-position mask, so packed documents never attend to each other.
- `splash`: Splash kernels with static masks chosen by where the block came from. Step 0 (the shard's own chunks,
  in natural order within the shard): causal. A block from an earlier shard j < i: its first chunk (j) precedes both
  query chunks, its second (2n−1−j) follows both: all queries against the first chunk, no causal mask. From a later
  shard j > i: both its chunks precede the second query chunk (2n−1−i) and follow the first: the second query chunk
  against all its keys. Either way C × 2C of work; segment ids do the rest (as for Splash without context: segments
  contiguous, positions rising).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash_kernel

from sailor2_jax.model.kernels import NEG_INF, attention_mask, make_splash_kernel, splash_block

AXIS = "context"


def ring_attention(q_BtNH, k_BtKH, v_BtKH, seg_Bt, pos_Bt, n: int, impl: str, interpret: bool) -> jax.Array:
    """This shard's attention output [B, t, N, H] (t = T/n local tokens) over all n shards' keys."""
    H = q_BtNH.shape[-1]
    q_BtNH = (q_BtNH * H ** -0.5).astype(q_BtNH.dtype)  # scaled here: the blocks and their backward never scale
    return _ring(q_BtNH, k_BtKH, v_BtKH, seg_Bt, pos_Bt, n, "splash" if impl == "splash" else "xla", interpret)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _ring(q_BtNH, k_BtKH, v_BtKH, seg_Bt, pos_Bt, n, impl, interpret):
    return _ring_fwd(q_BtNH, k_BtKH, v_BtKH, seg_Bt, pos_Bt, n, impl, interpret)[0]


def _next(x, n: int):
    """Pass to the next shard of the ring."""
    return jax.lax.ppermute(x, AXIS, [(j, (j + 1) % n) for j in range(n)])


def _ring_fwd(q_BtNH, k_BtKH, v_BtKH, seg_Bt, pos_Bt, n, impl, interpret):
    i = jax.lax.axis_index(AXIS)
    B, t, N, _ = q_BtNH.shape
    o_BtNH = jnp.zeros(q_BtNH.shape, jnp.float32)
    lse_BtN = jnp.full((B, t, N), NEG_INF, jnp.float32)
    block = (k_BtKH, v_BtKH, seg_Bt, pos_Bt)
    for s in range(n):
        arriving = _next(block, n) if s < n - 1 else None  # sent before the block's work, so the two overlap
        ob_BtNH, lseb_BtN = _block_fwd(impl, s, i, (i - s) % n, q_BtNH, seg_Bt, pos_Bt, *block, interpret)
        new_BtN = jnp.logaddexp(lse_BtN, lseb_BtN)
        o_BtNH = (o_BtNH * jnp.exp(lse_BtN - new_BtN)[..., None]
                  + ob_BtNH * jnp.exp(lseb_BtN - new_BtN)[..., None])
        lse_BtN, block = new_BtN, arriving
    out_BtNH = o_BtNH.astype(q_BtNH.dtype)
    # named like Splash's residuals, so the `save_attention_out` remat policy keeps them instead of re-running the ring
    out_BtNH, lse_BtN = (jax.ad_checkpoint.checkpoint_name(x, "attention_out") for x in (out_BtNH, lse_BtN))
    return out_BtNH, (q_BtNH, k_BtKH, v_BtKH, seg_Bt, pos_Bt, out_BtNH, lse_BtN)


def _ring_bwd(n, impl, interpret, res, do_BtNH):
    q_BtNH, k_BtKH, v_BtKH, seg_Bt, pos_Bt, out_BtNH, lse_BtN = res
    i = jax.lax.axis_index(AXIS)
    dq_BtNH = jnp.zeros(q_BtNH.shape, jnp.float32)
    dk_BtKH, dv_BtKH = jnp.zeros(k_BtKH.shape, jnp.float32), jnp.zeros(v_BtKH.shape, jnp.float32)
    block = (k_BtKH, v_BtKH, seg_Bt, pos_Bt)
    for s in range(n):
        arriving = _next(block, n) if s < n - 1 else None
        dqb, dkb, dvb = _block_bwd(impl, s, i, (i - s) % n, q_BtNH, seg_Bt, pos_Bt, *block, out_BtNH, lse_BtN,
                                   do_BtNH, interpret)
        dq_BtNH = dq_BtNH + dqb
        # the block's gradients go where the block goes; after the last step that is home
        dk_BtKH, dv_BtKH = _next((dk_BtKH + dkb, dv_BtKH + dvb), n)
        block = arriving
    return (dq_BtNH.astype(q_BtNH.dtype), dk_BtKH.astype(k_BtKH.dtype), dv_BtKH.astype(v_BtKH.dtype), None, None)


_ring.defvjp(_ring_fwd, _ring_bwd)


# --- blocks: (normalised output fp32, log-sum-exp) forward; (dq, dk, dv) fp32 from the merged output backward ---

def _block_fwd(impl, s, i, src, q_BtNH, segq_Bt, posq_Bt, k_BsKH, v_BsKH, segk_Bs, posk_Bs, interpret):
    if impl == "splash":
        return _splash_fwd(s, i, src, q_BtNH, segq_Bt, k_BsKH, v_BsKH, segk_Bs, interpret)
    return _xla_fwd(q_BtNH, k_BsKH, v_BsKH, attention_mask(segq_Bt, segk_Bs, posq_Bt, posk_Bs))


def _block_bwd(impl, s, i, src, q_BtNH, segq_Bt, posq_Bt, k_BsKH, v_BsKH, segk_Bs, posk_Bs, out_BtNH, lse_BtN,
               do_BtNH, interpret):
    if impl == "splash":
        return _splash_bwd(s, i, src, q_BtNH, segq_Bt, k_BsKH, v_BsKH, segk_Bs, out_BtNH, lse_BtN, do_BtNH,
                           interpret)
    return _xla_bwd(q_BtNH, k_BsKH, v_BsKH, attention_mask(segq_Bt, segk_Bs, posq_Bt, posk_Bs), out_BtNH, lse_BtN,
                    do_BtNH)


def _grouped(x_BtNH, K: int):
    B, t, N, H = x_BtNH.shape
    return x_BtNH.reshape(B, t, K, N // K, H).astype(jnp.float32)


def _xla_scores(q_BtNH, k_BsKH, mask_Bts):
    s_BKGts = jnp.einsum("btkgh,bskh->bkgts", _grouped(q_BtNH, k_BsKH.shape[2]), k_BsKH.astype(jnp.float32))
    return jnp.where(mask_Bts[:, None, None], s_BKGts, NEG_INF)


def _xla_fwd(q_BtNH, k_BsKH, v_BsKH, mask_Bts):
    B, t, N, H = q_BtNH.shape
    s_BKGts = _xla_scores(q_BtNH, k_BsKH, mask_Bts)
    lse_BKGt = jax.nn.logsumexp(s_BKGts, axis=-1)
    p_BKGts = jnp.exp(s_BKGts - lse_BKGt[..., None])
    o_BtKGH = jnp.einsum("bkgts,bskh->btkgh", p_BKGts, v_BsKH.astype(jnp.float32))
    return o_BtKGH.reshape(B, t, N, H), lse_BKGt.transpose(0, 3, 1, 2).reshape(B, t, N)


def _xla_bwd(q_BtNH, k_BsKH, v_BsKH, mask_Bts, out_BtNH, lse_BtN, do_BtNH):
    B, t, N, H = q_BtNH.shape
    K = k_BsKH.shape[2]
    lse_BKGt = lse_BtN.reshape(B, t, K, N // K).transpose(0, 2, 3, 1)
    p_BKGts = jnp.where(mask_Bts[:, None, None],
                        jnp.exp(_xla_scores(q_BtNH, k_BsKH, mask_Bts) - lse_BKGt[..., None]), 0.0)
    do_BtKGH = _grouped(do_BtNH, K)
    dv_BsKH = jnp.einsum("bkgts,btkgh->bskh", p_BKGts, do_BtKGH)
    dp_BKGts = jnp.einsum("btkgh,bskh->bkgts", do_BtKGH, v_BsKH.astype(jnp.float32))
    delta_BKGt = jnp.einsum("btkgh,btkgh->bkgt", do_BtKGH, _grouped(out_BtNH, K))
    ds_BKGts = p_BKGts * (dp_BKGts - delta_BKGt[..., None])
    dq_BtNH = jnp.einsum("bkgts,bskh->btkgh", ds_BKGts, k_BsKH.astype(jnp.float32)).reshape(B, t, N, H)
    dk_BsKH = jnp.einsum("bkgts,btkgh->bskh", ds_BKGts, _grouped(q_BtNH, K))
    return dq_BtNH, dk_BsKH, dv_BsKH


# Splash: the kernels of one step, as (kernel, query rows, key rows) over the shard's 2C local rows. Step 0 runs
# `own`; later steps `below` (the block came from an earlier shard) or `above` (a later one), picked by lax.cond.

def _splash_plans(t: int, N: int, interpret: bool):
    C = t // 2
    if splash_block(C) is None:
        raise ValueError(f"ring attention with 'splash' needs chunks of a multiple of 128 tokens, got {C}")
    kernel = functools.partial(make_splash_kernel, N, interpret=interpret, residuals=True, block=splash_block(C))
    whole, first, second = slice(0, t), slice(0, C), slice(C, t)
    return {"own": (kernel(t), whole, whole),
            "below": (kernel(t, kv_len=C, causal=False), whole, first),
            "above": (kernel(C, kv_len=t, causal=False), second, whole)}


def _splash_which(s, i, src, plans, run):
    if s == 0:
        return run(*plans["own"])
    return jax.lax.cond(src < i, lambda: run(*plans["below"]), lambda: run(*plans["above"]))


def _to_kernel(x_BtXH):
    return x_BtXH.transpose(0, 2, 1, 3)  # [B, t, N, H] -> the kernel's [B, N, t, H]


def _splash_fwd(s, i, src, q_BtNH, segq_Bt, k_BsKH, v_BsKH, segk_Bs, interpret):
    B, t, N, H = q_BtNH.shape

    def run(kernel, rows, cols):
        segments = jax.vmap(splash_kernel.SegmentIds)(segq_Bt[:, rows], segk_Bs[:, cols])
        o_BNrH, (lse_BNr,) = jax.vmap(lambda q, k, v, seg: kernel(q, k, v, segment_ids=seg))(
            _to_kernel(q_BtNH[:, rows]), _to_kernel(k_BsKH[:, cols]), _to_kernel(v_BsKH[:, cols]), segments)
        o_BtNH = jnp.zeros((B, t, N, H), jnp.float32).at[:, rows].set(o_BNrH.transpose(0, 2, 1, 3))
        lse_BtN = jnp.full((B, t, N), NEG_INF, jnp.float32).at[:, rows].set(lse_BNr.transpose(0, 2, 1))
        return o_BtNH, lse_BtN

    return _splash_which(s, i, src, _splash_plans(t, N, interpret), run)


def _splash_bwd(s, i, src, q_BtNH, segq_Bt, k_BsKH, v_BsKH, segk_Bs, out_BtNH, lse_BtN, do_BtNH, interpret):
    B, t, N, H = q_BtNH.shape

    def run(kernel, rows, cols):
        def one(q, k, v, seg, o, lse, do):
            res = (q, k, v, seg, None, o, lse, kernel.dq_mask_info, kernel.dkv_mask_info)
            # Splash's own backward kernels, given the merged output and log-sum-exp instead of the block's: the
            # block's share of the gradient (its public API has no backward for an output merged outside it)
            grads = splash_kernel._splash_attention_bwd(**kernel.kwargs, res=res, do=do)
            return grads[3:6]

        segments = jax.vmap(splash_kernel.SegmentIds)(segq_Bt[:, rows], segk_Bs[:, cols])
        dq, dk, dv = jax.vmap(one)(_to_kernel(q_BtNH[:, rows]), _to_kernel(k_BsKH[:, cols]),
                                   _to_kernel(v_BsKH[:, cols]), segments, _to_kernel(out_BtNH[:, rows]),
                                   lse_BtN[:, rows].transpose(0, 2, 1), _to_kernel(do_BtNH[:, rows]))
        dq_BtNH = jnp.zeros(q_BtNH.shape, jnp.float32).at[:, rows].set(dq.transpose(0, 2, 1, 3))
        dk_BsKH = jnp.zeros(k_BsKH.shape, jnp.float32).at[:, cols].set(dk.transpose(0, 2, 1, 3))
        dv_BsKH = jnp.zeros(v_BsKH.shape, jnp.float32).at[:, cols].set(dv.transpose(0, 2, 1, 3))
        return dq_BtNH, dk_BsKH, dv_BsKH

    return _splash_which(s, i, src, _splash_plans(t, N, interpret), run)
