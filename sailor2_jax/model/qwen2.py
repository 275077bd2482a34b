"""Flax NNX Qwen2.5, with exact Hugging Face `Qwen2ForCausalLM` semantics.

Architecture choices, top to bottom:
- token embedding [V, D], rows padded beyond the tokenizer's vocabulary; optional tied LM head (`x @ embed.T`);
- pre-norm decoder layers: RMSNorm (fp32 statistics) → GQA attention with bias on q/k/v only, rotate-half RoPE over
  the full head dim (theta and linear/dynamic/yarn scaling from config: model/rope.py) → residual; RMSNorm → SwiGLU
  MLP without bias → residual;
- a final RMSNorm, then logits in fp32.
Layer weights are stacked on a leading L axis and the layer function is scanned (`jax.lax.scan`) with a named remat
policy; `scan_layers=False` runs the same layer function in a Python loop (for debugging; tested equal).
The module holds the architecture (`cfg`, fixed by a checkpoint) and the run's execution policy (`compute`: dtypes,
remat, attention kernel); `model.init.with_compute` gives the same weights under another policy.
Parameters carry logical axis names (`sharding.RULES` maps them onto the mesh); activations are constrained by name.
Decoding runs the same layer function: `extend` feeds T new tokens per row against a `KVCache` (keys and values of
every layer stacked on a leading L axis like the weights; it rides in the layer scan's carry).
Dimension legend: B batch, T sequence, D model, N query heads, K kv heads, H head dim, F MLP, V vocabulary, L layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name
from flax import nnx

from sailor2_jax.config import ComputeConfig, ModelConfig
from sailor2_jax.model.attention import attention
from sailor2_jax.model.rope import apply_rope, rope_tables
from sailor2_jax.sharding import balanced_order, context_size, shard

LAYER_PARAMS = ("attn_norm", "q", "q_bias", "k", "k_bias", "v", "v_bias", "o", "mlp_norm", "gate", "up", "down")

REMAT_POLICIES: dict[str, Callable | None] = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_attention_out": jax.checkpoint_policies.save_only_these_names("attention_out"),
}


def _param(rngs: nnx.Rngs, init, shape: tuple[int, ...], names: tuple[str | None, ...], dtype) -> nnx.Param:
    # eager_sharding=False: logical names stay metadata; sharding.state_shardings resolves them once, on a mesh.
    return nnx.Param(init(rngs.params(), shape, dtype), out_sharding=names, eager_sharding=False)


def _normal(key, shape, dtype):
    return 0.02 * jax.random.normal(key, shape, dtype)


def _zeros(key, shape, dtype):
    return jnp.zeros(shape, dtype)


def _ones(key, shape, dtype):
    return jnp.ones(shape, dtype)


class DecoderLayers(nnx.Module):
    """All L decoder layers' weights, stacked on a leading layer axis."""

    def __init__(self, cfg: ModelConfig, param_dtype: str, *, rngs: nnx.Rngs):
        L, D, N, K, H, F = (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                            cfg.intermediate_size)
        p = partial(_param, rngs, dtype=jnp.dtype(param_dtype))
        self.attn_norm = p(_ones, (L, D), ("layers", "norm"))
        self.q = p(_normal, (L, D, N, H), ("layers", "embed", "q_heads", "head_dim"))
        self.q_bias = p(_zeros, (L, N, H), ("layers", "q_heads", "head_dim"))
        self.k = p(_normal, (L, D, K, H), ("layers", "embed", "kv_heads", "head_dim"))
        self.k_bias = p(_zeros, (L, K, H), ("layers", "kv_heads", "head_dim"))
        self.v = p(_normal, (L, D, K, H), ("layers", "embed", "kv_heads", "head_dim"))
        self.v_bias = p(_zeros, (L, K, H), ("layers", "kv_heads", "head_dim"))
        self.o = p(_normal, (L, N, H, D), ("layers", "q_heads", "head_dim", "embed"))
        self.mlp_norm = p(_ones, (L, D), ("layers", "norm"))
        self.gate = p(_normal, (L, D, F), ("layers", "embed", "mlp"))
        self.up = p(_normal, (L, D, F), ("layers", "embed", "mlp"))
        self.down = p(_normal, (L, F, D), ("layers", "mlp", "embed"))

    def stacked(self) -> dict[str, jax.Array]:
        return {name: getattr(self, name)[...] for name in LAYER_PARAMS}


def rms_norm(x_BTD: jax.Array, weight_D: jax.Array, eps: float) -> jax.Array:
    x = x_BTD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
    return weight_D.astype(x_BTD.dtype) * x.astype(x_BTD.dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys and values of every layer for B rows over S slots, written T slots at a time at `index` (the same slot
    for every row: prompts are left-padded, so a batch advances in step).

    `k`, `v`: [L, B, S, K, H] in compute dtype. They ride in the layer scan's carry and each layer writes its slots
    in place (as scan inputs/outputs instead, every step would copy the whole cache: 3× slower on CPU).
    `segment_ids`, `positions`: [B, S] int32, shared by the layers: a slot's segment (0: empty or padding, never
    attended by a real token, so padding never leaks) and its RoPE position (per row: a row's first real token is
    position 0 wherever its padding ends). `index`: int32 [], the next slot to write.
    """

    k: jax.Array
    v: jax.Array
    segment_ids: jax.Array
    positions: jax.Array
    index: jax.Array

    # logical axes (sharding.RULES): rows over the data axes, kv heads over `tensor`, as in training
    KV_AXES = ("layers", "batch", "cache_seq", "act_kv_heads", "head_dim")
    SLOT_AXES = ("batch", "cache_seq")

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, slots: int, dtype) -> "KVCache":
        def kv():
            return jnp.zeros((cfg.num_layers, batch, slots, cfg.num_kv_heads, cfg.head_dim), dtype)

        def slot():
            return jnp.zeros((batch, slots), jnp.int32)
        return cls(k=kv(), v=kv(), segment_ids=slot(), positions=slot(), index=jnp.zeros((), jnp.int32))

    def place(self, segment_ids_BT: jax.Array, positions_BT: jax.Array) -> "KVCache":
        """The slots' segments and positions for the next T tokens (before the layers write their keys/values)."""
        put = partial(jax.lax.dynamic_update_slice_in_dim, start_index=self.index, axis=1)
        return dataclasses.replace(self, segment_ids=put(self.segment_ids, segment_ids_BT.astype(jnp.int32)),
                                   positions=put(self.positions, positions_BT.astype(jnp.int32)))

    def write(self, layer, k_BTKH: jax.Array, v_BTKH: jax.Array) -> "KVCache":
        """Layer `layer`'s keys/values for this step written at slots [index, index + T)."""
        def put(c_LBSKH, x_BTKH):
            update = x_BTKH[None].astype(c_LBSKH.dtype)
            return shard(jax.lax.dynamic_update_slice(c_LBSKH, update, (layer, 0, self.index, 0, 0)), self.KV_AXES)
        return dataclasses.replace(self, k=put(self.k, k_BTKH), v=put(self.v, v_BTKH))

    def read(self, layer) -> tuple[jax.Array, jax.Array]:
        """Layer `layer`'s keys and values over all S slots, [B, S, K, H] each."""
        return self.k[layer], self.v[layer]


def decoder_layer(cfg: ModelConfig, x_BTD: jax.Array, w: dict[str, jax.Array], *, sin, cos, segment_ids_BT,
                  positions_BT, packed: bool, attention_impl: str, cache: KVCache | None = None, layer=0,
                  context_attention: str = "all_gather") -> tuple[jax.Array, KVCache | None]:
    """One pre-norm decoder layer; `w` holds this layer's weights (already in compute dtype).

    Training attends over the T tokens themselves. Decoding passes the `cache` and this layer's index: the new
    keys/values are written into the layer's slots and the queries attend over all S of them; the updated cache is
    returned."""
    h_BTD = rms_norm(x_BTD, w["attn_norm"], cfg.rms_norm_eps)
    q_BTNH = jnp.einsum("btd,dnh->btnh", h_BTD, w["q"]) + w["q_bias"]
    k_BTKH = jnp.einsum("btd,dkh->btkh", h_BTD, w["k"]) + w["k_bias"]
    v_BTKH = jnp.einsum("btd,dkh->btkh", h_BTD, w["v"]) + w["v_bias"]
    q_BTNH = shard(apply_rope(q_BTNH, sin, cos), ("batch", "seq", "act_heads", None))
    k_BTKH = shard(apply_rope(k_BTKH, sin, cos), ("batch", "seq", "act_kv_heads", None))
    v_BTKH = shard(v_BTKH, ("batch", "seq", "act_kv_heads", None))
    if cache is None:
        o_BTNH = attention(q_BTNH, k_BTKH, v_BTKH, q_segment_ids=segment_ids_BT, kv_segment_ids=segment_ids_BT,
                           q_positions=positions_BT, kv_positions=positions_BT, impl=attention_impl, packed=packed,
                           context=context_attention)
    else:
        # Cache slots are not the queries' own tokens: only the reference path takes separate kv segments/positions.
        cache = cache.write(layer, k_BTKH, v_BTKH)
        k_BSKH, v_BSKH = cache.read(layer)
        o_BTNH = attention(q_BTNH, k_BSKH, v_BSKH, q_segment_ids=segment_ids_BT, kv_segment_ids=cache.segment_ids,
                           q_positions=positions_BT, kv_positions=cache.positions, impl="xla")
    o_BTNH = checkpoint_name(o_BTNH, "attention_out")
    x_BTD = shard(x_BTD + jnp.einsum("btnh,nhd->btd", o_BTNH, w["o"]), ("batch", "seq", "act_embed"))

    h_BTD = rms_norm(x_BTD, w["mlp_norm"], cfg.rms_norm_eps)
    gate_BTF = jnp.einsum("btd,df->btf", h_BTD, w["gate"])
    up_BTF = jnp.einsum("btd,df->btf", h_BTD, w["up"])
    act_BTF = shard(jax.nn.silu(gate_BTF) * up_BTF, ("batch", "seq", "act_mlp"))
    return shard(x_BTD + jnp.einsum("btf,fd->btd", act_BTF, w["down"]), ("batch", "seq", "act_embed")), cache


class Qwen2(nnx.Module):
    def __init__(self, cfg: ModelConfig, compute: ComputeConfig, *, rngs: nnx.Rngs):
        self.cfg, self.compute = cfg, compute
        dtype = jnp.dtype(compute.param_dtype)
        self.embed = _param(rngs, _normal, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), dtype)
        self.layers = DecoderLayers(cfg, compute.param_dtype, rngs=rngs)
        self.final_norm = _param(rngs, _ones, (cfg.hidden_size,), ("norm",), dtype)
        self.lm_head = (None if cfg.tie_embeddings else
                        _param(rngs, _normal, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), dtype))

    def __call__(self, tokens_BT: jax.Array, *, positions_BT: jax.Array | None = None,
                 segment_ids_BT: jax.Array | None = None) -> jax.Array:
        """Logits [B, T, V] in fp32."""
        return self.logits(self.hidden(tokens_BT, positions_BT=positions_BT, segment_ids_BT=segment_ids_BT))

    def hidden(self, tokens_BT: jax.Array, *, positions_BT: jax.Array | None = None,
               segment_ids_BT: jax.Array | None = None) -> jax.Array:
        """Final-normed hidden states [B, T, D] in compute dtype (the objective turns them into log-probs)."""
        return self.decode(self.embed_tokens(tokens_BT), positions_BT=positions_BT, segment_ids_BT=segment_ids_BT)

    def embed_tokens(self, tokens_BT: jax.Array) -> jax.Array:
        # Gather from a table whole along D (the FSDP all-gather), so the lookup's output can take the batch
        # sharding directly instead of being resharded from D-split to batch-split.
        # Cast after the lookup: only the rows used are converted (decoding bf16 weights in fp32 would otherwise
        # convert the whole table at every step).
        table_VD = shard(self.embed[...], ("vocab", None))
        return table_VD[tokens_BT].astype(self.compute.dtype)

    def decode(self, x_BTD: jax.Array, *, positions_BT: jax.Array | None = None,
               segment_ids_BT: jax.Array | None = None) -> jax.Array:
        """The decoder stack and final norm on input embeddings [B, T, D]."""
        B, T = x_BTD.shape[:2]
        # Without segment ids every row is one document from position 0: a plain causal kernel is exact.
        packed = segment_ids_BT is not None
        if segment_ids_BT is None:
            segment_ids_BT = jnp.ones((B, T), jnp.int32)
        if positions_BT is None:
            positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        n = context_size()
        if n == 1:
            return self._stack(x_BTD, positions_BT, segment_ids_BT, packed, None)[0]
        # Context parallelism: the layers run the sequence in the load-balanced order (sharding.balanced_order), its
        # segment ids and positions permuted with it; the natural order is restored before the caller sees it.
        order = balanced_order(T, n)
        x_BTD, positions_BT, segment_ids_BT = (a[:, order] for a in (x_BTD, positions_BT, segment_ids_BT))
        out_BTD = self._stack(x_BTD, positions_BT, segment_ids_BT, True, None)[0]
        return shard(out_BTD[:, np.argsort(order)], ("batch", "seq", "act_embed"))

    def extend(self, tokens_BT: jax.Array, cache: KVCache, *, positions_BT: jax.Array, segment_ids_BT: jax.Array,
               layers: list[dict[str, jax.Array]] | None = None) -> tuple[jax.Array, KVCache]:
        """Decoding: T new tokens per row (a prompt, or one sampled token) attend over the cache and everything in it;
        their keys/values are written at slots [cache.index, cache.index + T). Returns the final-normed hidden
        states [B, T, D] and the cache advanced by T. `layers` (from `unstacked_layers`) runs the layers from
        separate per-layer buffers in a Python loop instead of scanning the stacked weights."""
        cache = cache.place(segment_ids_BT, positions_BT)
        return self._stack(self.embed_tokens(tokens_BT), positions_BT, segment_ids_BT, True, cache, layers)

    def unstacked_layers(self) -> list[dict[str, jax.Array]]:
        """The layer weights as L per-layer dicts (a copy). A decode loop reads these in place at every step, where
        each step's slice of the stacked weights would be copied out before its matmuls (XLA on CPU and GPU does not
        fuse a dynamic slice into a matmul operand): 2× the weight traffic, measured 2× slower per layer on CPU.
        Cut once per decode call, outside the loop, in compute dtype (so bf16 weights decoded in fp32 are converted
        once, not at every step), at the price of that copy of the layer weights meanwhile."""
        weights = self.layers.stacked()
        cdt = jnp.dtype(self.compute.dtype)
        return [{name: a[i].astype(cdt) for name, a in weights.items()} for i in range(self.cfg.num_layers)]

    def _stack(self, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array, packed: bool,
               cache: KVCache | None, layers: list[dict[str, jax.Array]] | None = None
               ) -> tuple[jax.Array, KVCache | None]:
        cfg, compute = self.cfg, self.compute
        cdt = jnp.dtype(compute.dtype)
        x_BTD = shard(x_BTD.astype(cdt), ("batch", "seq", "act_embed"))
        sin, cos = rope_tables(positions_BT, cfg)

        def body(carry, layer):
            x, cache = carry
            w, index = layer
            w = jax.tree.map(lambda a: a.astype(cdt), w)  # per layer: never a second full copy of the weights
            return decoder_layer(cfg, x, w, sin=sin, cos=cos, segment_ids_BT=segment_ids_BT, positions_BT=positions_BT,
                                 packed=packed, attention_impl=compute.attention, cache=cache, layer=index,
                                 context_attention=compute.context_attention), None

        if compute.remat != "none" and cache is None:  # decoding takes no gradients
            body = jax.checkpoint(body, policy=REMAT_POLICIES[compute.remat], prevent_cse=not compute.scan_layers)
        if layers is not None:
            for i, w in enumerate(layers):
                (x_BTD, cache), _ = body((x_BTD, cache), (w, i))
        elif compute.scan_layers:
            (x_BTD, cache), _ = jax.lax.scan(body, (x_BTD, cache), (self.layers.stacked(), jnp.arange(cfg.num_layers)))
        else:
            weights = self.layers.stacked()
            for i in range(cfg.num_layers):
                (x_BTD, cache), _ = body((x_BTD, cache), (jax.tree.map(lambda a: a[i], weights), i))
        if cache is not None:
            cache = dataclasses.replace(cache, index=cache.index + x_BTD.shape[1])
        return rms_norm(x_BTD, self.final_norm[...], cfg.rms_norm_eps), cache

    def head(self) -> jax.Array:
        """The LM head [D, V] (the embedding's transpose when they are tied)."""
        return self.embed[...].T if self.lm_head is None else self.lm_head[...]

    def logits(self, x_BTD: jax.Array) -> jax.Array:
        logits_BTV = jnp.einsum("btd,dv->btv", x_BTD, self.head().astype(x_BTD.dtype),
                                preferred_element_type=jnp.float32)
        return shard(logits_BTV, ("batch", "seq", "act_vocab"))
