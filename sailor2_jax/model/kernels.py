"""What both ways of attending a split sequence build on (`attention.py`, `ring.py`): the mask semantics and the
Splash kernels, whose tiles and static masks are chosen here."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash_kernel
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask

NEG_INF = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite: fully masked rows stay NaN-free


def attention_mask(q_segment_ids_BT: jax.Array, kv_segment_ids_BS: jax.Array, q_positions_BT: jax.Array,
                   kv_positions_BS: jax.Array) -> jax.Array:
    """[B, T, S] boolean: same segment and key position not after query position."""
    same_segment = q_segment_ids_BT[:, :, None] == kv_segment_ids_BS[:, None, :]
    causal = kv_positions_BS[:, None, :] <= q_positions_BT[:, :, None]
    return same_segment & causal


SPLASH_BLOCKS = (512, 256, 128)  # the largest that divides T; 512 is the usual best on v4/v5 (MaxText's default)


def splash_block(seq_len: int) -> int | None:
    """Splash's query and key block for this length (None: no block tiles it)."""
    return next((b for b in SPLASH_BLOCKS if seq_len % b == 0), None)


@functools.cache
def make_splash_kernel(num_heads: int, seq_len: int, interpret: bool, kv_len: int | None = None, offset: int = 0,
                   causal: bool = True, residuals: bool = False, block: int | None = None):
    """The multi-head Splash kernel for [N, T, H] queries and [K, S, H] keys/values (grouped natively); S = T
    unless a context shard's query chunk, starting `offset` tokens into the keys, attends to keys [0, S). Causal, or
    (`causal=False`, ring attention's blocks of earlier keys) unmasked but for segment ids; `residuals` also
    returns the log-sum-exp (forward only: ring attention merges blocks with it and runs its own backward); `block`
    overrides the tile (default: the largest that divides T).

    Its residuals carry the `attention_out` name, so the `save_attention_out` remat policy keeps what the backward
    pass needs instead of re-running the forward kernel."""
    block = block or splash_block(seq_len)
    if block is None:
        raise ValueError(f"attention 'splash' needs a sequence length divisible by 128, got {seq_len}")
    shape = (seq_len, kv_len or seq_len)
    head_mask = splash_mask.CausalMask(shape, offset=offset) if causal else splash_mask.FullMask(shape)
    mask = splash_mask.MultiHeadMask([head_mask] * num_heads)
    sizes = dict.fromkeys(("block_q", "block_kv", "block_kv_compute", "block_q_dkv", "block_kv_dkv",
                           "block_kv_dkv_compute", "block_q_dq", "block_kv_dq"), block)
    with jax.ensure_compile_time_eval():  # its mask tables are cached constants, never tracers of the first caller
        return splash_kernel.make_splash_mha(mask, block_sizes=splash_kernel.BlockSizes(**sizes), head_shards=1,
                                             q_seq_shards=1, residual_checkpoint_name="attention_out",
                                             save_residuals=residuals, interpret=interpret)
