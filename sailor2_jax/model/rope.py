"""Rotary position embeddings with transformers' Qwen2 scaling variants (`modeling_rope_utils`), computed the way
transformers computes them so that logits agree far past the pre-training length:
- default: inv_freq = 1 / theta^(2i/H);
- `linear`: inv_freq / factor (positions interpolated);
- `dynamic` (NTK): the base grows with the longest position of the forward pass once it passes
  `max_position_embeddings`: theta · (factor·S/max − (factor − 1))^(H/(H−2)), S = max(max position + 1, max). Like
  transformers, S is the whole batch's longest position and, in decoding, the new tokens' (keys already in the cache
  keep the frequencies they were rotated with);
- `yarn`: high frequencies (more than `beta_fast` turns over the original length) kept, low ones (fewer than
  `beta_slow`) interpolated by `factor`, a linear ramp between; sin and cos scaled by `attention_factor`.
Static frequencies are computed in float32 with numpy, as torch does in float32, at trace time.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from sailor2_jax.config import ModelConfig


def _exponents(dim: int) -> np.ndarray:
    return np.arange(0, dim, 2).astype(np.float32) / np.float32(dim)


def _yarn(cfg: ModelConfig) -> tuple[np.ndarray, float]:
    rs, dim, base = cfg.rope_scaling, cfg.head_dim, cfg.rope_theta
    original = rs.original_max_position_embeddings or cfg.max_position_embeddings
    attention_factor = rs.attention_factor if rs.attention_factor is not None else (
        0.1 * math.log(rs.factor) + 1.0 if rs.factor > 1 else 1.0)
    beta_fast, beta_slow = rs.beta_fast or 32, rs.beta_slow or 1

    def correction_dim(rotations):  # the dimension whose wavelength fits `rotations` times into `original`
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rs.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    pos_freqs = np.float32(base) ** _exponents(dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (np.float32(rs.factor) * pos_freqs)
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    keep = (1 - ramp).astype(np.float32)
    return (interpolation * (1 - keep) + extrapolation * keep).astype(np.float32), attention_factor


def inv_frequencies(cfg: ModelConfig, positions_BT: jax.Array) -> tuple[jax.Array, float]:
    """inv_freq [H/2] in float32 and the sin/cos scale."""
    rs, dim = cfg.rope_scaling, cfg.head_dim
    if rs is not None and rs.type == "yarn":
        inv, scale = _yarn(cfg)
        return jnp.asarray(inv), scale
    if rs is not None and rs.type == "dynamic":
        longest = jnp.maximum(jnp.max(positions_BT).astype(jnp.int32) + 1, cfg.max_position_embeddings)
        growth = rs.factor * longest.astype(jnp.float32) / cfg.max_position_embeddings - (rs.factor - 1)
        base = cfg.rope_theta * growth ** (dim / (dim - 2))
        return 1.0 / (base ** jnp.asarray(_exponents(dim))), 1.0
    inv = (1.0 / (np.float32(cfg.rope_theta) ** _exponents(dim))).astype(np.float32)
    if rs is not None and rs.type == "linear":
        inv = (inv / np.float32(rs.factor)).astype(np.float32)
    return jnp.asarray(inv), 1.0


def rope_tables(positions_BT: jax.Array, cfg: ModelConfig) -> tuple[jax.Array, jax.Array]:
    """sin, cos [B, T, H/2] in fp32 (HF computes the angles in fp32 too), scaled as the config's RoPE asks."""
    inv_freq, scale = inv_frequencies(cfg, positions_BT)
    angles = positions_BT.astype(jnp.float32)[..., None] * inv_freq
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    return (sin * scale, cos * scale) if scale != 1.0 else (sin, cos)


def apply_rope(x_BTNH: jax.Array, sin_BTh: jax.Array, cos_BTh: jax.Array) -> jax.Array:
    """Rotate-half RoPE: x * cos + rotate_half(x) * sin, with rotate_half(x1, x2) = (-x2, x1)."""
    x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
    sin, cos = sin_BTh[:, :, None, :], cos_BTh[:, :, None, :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNH.dtype)
