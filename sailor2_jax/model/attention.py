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
- `splash`: Pallas Splash attention on TPU (`splash_attention`), segment ids native to the kernel, so packed rows
  cost nothing extra; under a mesh it runs per shard (`shard_map`: rows over the data axes, heads over `tensor`).
  On CPU it runs the same kernel in Pallas's interpreter (how the tests check it); on GPU it is an error.
- `auto`: `splash` on TPU (`xla` for lengths it cannot tile), `cudnn` on GPU, `xla` elsewhere.
With a `context` mesh axis above 1 (training a split sequence) every backend runs per shard in `context_attention`,
against keys and values all-gathered over that axis or passed round it (`compute.context_attention`, `model/ring.py`).
"On TPU" means the platform of the mesh being traced for (`sharding.target_platform`), not the local backend: a
step lowered for a TPU slice on a CPU machine (`sailor2-jax compile`) gets the compiled Mosaic kernel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash_kernel

from sailor2_jax.model.kernels import NEG_INF, attention_mask, make_splash_kernel, splash_block
from sailor2_jax.model.ring import ring_attention
from sailor2_jax.sharding import balanced_order, context_size, logical_to_spec, target_platform


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


def _splash_run(kernel, q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT=None, kv_segment_ids_BS=None):
    """A Splash kernel over a batch in our [B, T, N, H] layout (the kernel takes [N, T, H] and does not scale)."""
    H = q_BTNH.shape[-1]
    q_BNTH = (q_BTNH * H ** -0.5).astype(q_BTNH.dtype).transpose(0, 2, 1, 3)
    k_BKSH, v_BKSH = k_BSKH.transpose(0, 2, 1, 3), v_BSKH.transpose(0, 2, 1, 3)
    if q_segment_ids_BT is None:
        o_BNTH = jax.vmap(kernel)(q_BNTH, k_BKSH, v_BKSH)
    else:
        segments = jax.vmap(splash_kernel.SegmentIds)(q_segment_ids_BT, kv_segment_ids_BS)
        o_BNTH = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=s))(q_BNTH, k_BKSH, v_BKSH, segments)
    return o_BNTH.transpose(0, 2, 1, 3)


def splash_attention(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT=None):
    """Splash attention with a causal mask and (packed rows) the kernel's own segment ids.

    Same-segment-and-earlier-index equals the reference mask for what the packers emit (contiguous segments whose
    positions rise by one), as for `cudnn_attention`; padding (segment 0) attends to earlier padding only."""
    backend = target_platform()
    if backend == "gpu":
        raise ValueError("attention 'splash' is a TPU kernel; use 'cudnn' or 'auto' on GPUs")
    # Pallas's interpreter everywhere but TPU. Compile-only TPU devices hold no arrays: the kernel's mask tables
    # (built at compile time) must then be made outside `jax.set_mesh` of those devices, e.g. lowering under
    # `jax.sharding.use_abstract_mesh` as `aot.compile` does.

    def per_shard(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT):
        kernel = make_splash_kernel(q_BTNH.shape[2], q_BTNH.shape[1], interpret=backend != "tpu")
        return _splash_run(kernel, q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, segment_ids_BT)

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return per_shard(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT)
    # A Pallas kernel cannot be partitioned by the compiler: run it on each device's rows and heads.
    q_spec = logical_to_spec(("batch", "seq", "act_heads", None))
    kv_spec = logical_to_spec(("batch", "seq", "act_kv_heads", None))
    seg_spec = None if segment_ids_BT is None else logical_to_spec(("batch", "seq"))
    return jax.shard_map(per_shard, in_specs=(q_spec, kv_spec, kv_spec, seg_spec), out_specs=q_spec,
                         check_vma=False)(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT)


def context_attention(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, positions_BT, impl: str,
                      strategy: str = "all_gather") -> jax.Array:
    """Attention with the sequence split over the mesh's `context` axis, rows in `balanced_order` (each shard holds
    chunks i and 2n−1−i of 2n). `all_gather`: every shard all-gathers the keys, values, segment ids and positions of
    its rows and attends its own queries to all of them (Llama 3's all-gather context parallelism). The backends per
    shard: `xla` and `cudnn` take the exact segment-and-position mask; `splash` restores the keys' natural order and
    runs each query chunk c as a causal kernel over the keys with offset c·C (its block-sparse mask skips the keys
    past the chunk), so a shard computes only its unmasked blocks and the balanced order gives every shard the same
    work. `ring`: the keys and values pass round the shards instead (`model/ring.py`)."""
    n = context_size()
    T = q_BTNH.shape[1]
    platform = target_platform()
    if impl == "splash" and platform == "gpu":
        raise ValueError("attention 'splash' is a TPU kernel; use 'cudnn' or 'auto' on GPUs")

    def per_shard(q_BtNH, k_BtKH, v_BtKH, seg_Bt, pos_Bt):
        if strategy == "ring":
            return ring_attention(q_BtNH, k_BtKH, v_BtKH, seg_Bt, pos_Bt, n, impl, interpret=platform != "tpu")
        k_BTKH, v_BTKH, seg_BT, pos_BT = (jax.lax.all_gather(x, "context", axis=1, tiled=True)
                                          for x in (k_BtKH, v_BtKH, seg_Bt, pos_Bt))
        if impl == "splash":
            return _splash_context(q_BtNH, k_BTKH, v_BTKH, seg_Bt, seg_BT, n, interpret=platform != "tpu")
        mask_BtT = attention_mask(seg_Bt, seg_BT, pos_Bt, pos_BT)
        if impl == "cudnn":
            # (the fused kernel on GPUs; elsewhere the same call's XLA path, which is how the tests check the route)
            return jax.nn.dot_product_attention(q_BtNH, k_BTKH, v_BTKH, mask=mask_BtT[:, None],
                                                implementation="cudnn" if platform == "gpu" else "xla")
        return xla_attention(q_BtNH, k_BTKH, v_BTKH, mask_BtT)

    balanced_order(T, n)  # a clear error for a length the split cannot take
    q_spec = logical_to_spec(("batch", "seq", "act_heads", None))
    kv_spec = logical_to_spec(("batch", "seq", "act_kv_heads", None))
    tok_spec = logical_to_spec(("batch", "seq"))
    return jax.shard_map(per_shard, in_specs=(q_spec, kv_spec, kv_spec, tok_spec, tok_spec), out_specs=q_spec,
                         check_vma=False)(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, positions_BT)


def _splash_context(q_BtNH, k_BTKH, v_BTKH, seg_Bt, seg_BT, n: int, interpret: bool) -> jax.Array:
    """Splash on one context shard: its two query chunks i and 2n−1−i against the gathered keys in natural order.
    The chunk indices depend on the shard, the kernels' masks must be static: one branch per shard (`lax.switch`)."""
    T = k_BTKH.shape[1]
    C = T // (2 * n)
    natural = np.argsort(balanced_order(T, n))
    k_BTKH, v_BTKH, seg_BT = k_BTKH[:, natural], v_BTKH[:, natural], seg_BT[:, natural]
    N = q_BtNH.shape[2]

    def shard_branch(i: int, q_BtNH, k_BTKH, v_BTKH, seg_Bt, seg_BT):
        outs = []
        for half, c in enumerate((i, 2 * n - 1 - i)):
            # All T keys with the causal mask at offset c·C: the kernel skips the masked blocks (keys past the
            # chunk), and every branch takes the same key arrays, so differentiating the switch keeps no per-branch
            # copies of them (slicing the keys per branch kept n copies: 217 GiB per chip at 128K on v5p).
            kernel = make_splash_kernel(N, C, interpret, kv_len=T, offset=c * C)
            q = slice(half * C, (half + 1) * C)
            outs.append(_splash_run(kernel, q_BtNH[:, q], k_BTKH, v_BTKH, seg_Bt[:, q], seg_BT))
        return jnp.concatenate(outs, axis=1)

    branches = [functools.partial(shard_branch, i) for i in range(n)]
    return jax.lax.switch(jax.lax.axis_index("context"), branches, q_BtNH, k_BTKH, v_BTKH, seg_Bt, seg_BT)


def resolve_impl(impl: str, seq_len: int) -> str:
    """`auto`: the fused kernel of this backend where it can tile the sequence (a prompt of any length still
    runs); an explicit `splash` with an untileable length is an error instead."""
    if impl != "auto":
        return impl
    backend = target_platform()
    if backend == "tpu":
        return "splash" if splash_block(seq_len) else "xla"
    return "cudnn" if backend == "gpu" else "xla"


def attention(q_BTNH: jax.Array, k_BSKH: jax.Array, v_BSKH: jax.Array, *, q_segment_ids: jax.Array,
              kv_segment_ids: jax.Array, q_positions: jax.Array, kv_positions: jax.Array,
              impl: str = "xla", packed: bool = True, context: str = "all_gather") -> jax.Array:
    """Grouped-query attention [B, T, N, H] x [B, S, K, H] -> [B, T, N, H].

    `packed=False` promises one document per row starting at position 0 with no padding before its end (the case
    where a plain causal kernel is exact); `cudnn` and `splash` then run their causal kernels alone. With
    `packed=True` every backend applies the segment mask (`cudnn` through a same-segment mask, `splash` through its
    kernel's segment ids). Decoding (T != S) takes the reference path. `context` (`all_gather` or `ring`,
    `compute.context_attention`) is how a sequence split over the `context` mesh axis attends (`context_attention`).
    """
    n = context_size()
    if n > 1 and q_BTNH.shape[1] == k_BSKH.shape[1]:  # a split sequence (training): the kernel sees chunks of T/2n
        impl = resolve_impl(impl, q_BTNH.shape[1] // (2 * n))
        return context_attention(q_BTNH, k_BSKH, v_BSKH, q_segment_ids, q_positions, impl, context)
    impl = resolve_impl(impl, q_BTNH.shape[1])
    if impl in ("cudnn", "splash") and q_BTNH.shape[1] == k_BSKH.shape[1]:
        route = cudnn_attention if impl == "cudnn" else splash_attention
        return route(q_BTNH, k_BSKH, v_BSKH, q_segment_ids if packed else None)
    mask = attention_mask(q_segment_ids, kv_segment_ids, q_positions, kv_positions)
    return xla_attention(q_BTNH, k_BSKH, v_BSKH, mask)

