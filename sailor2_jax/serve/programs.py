"""The serving programs on the mesh: prefill (per prompt-length bucket) → insert (into a slot) → decode (k steps of
the live slots), in the prefill / insert / generate split of JetStream's engine API.

Slots. The decode state holds a fixed number of rows B (slots), each with its own KV-cache row of S columns and its
own write index: row b's token at position p lives in column p, so a row's keys sit in the same columns whatever
else is in the batch, and attention (model/attention.py: same segment, key position ≤ query position) reads them
the same way. Columns a row has not written carry segment 0 and are never attended, so a freed slot needs no
clearing beyond what insert writes. The cache is speculative decoding's `RaggedKVCache` (a per-row index; writes
past the last column are dropped), which a draft's blocks of γ + 1 tokens need too (serve/drafting.py).

Prefill runs R prompts (R = the data-parallel devices, so rows split evenly; empty rows are all padding) right-
padded to a bucket P, into a fresh cache of S columns (so insert is one program, whatever the bucket), and returns
each row's last-prompt-token logits. Insert copies one prefilled row into one slot and draws the slot's first token:
n > 1 samples of a prompt are n inserts of the same prefill.

Decode runs up to k steps (`decode_steps`) in a device `while_loop` and returns [b, k] tokens with a count per row,
so the host pays one round trip per k tokens. Each slot stops on the device at an eos id of its request or its
max_tokens (`SlotState.left`: draws it may still make; `eos`: its ids): after that it draws nothing, writes nothing
that is ever read and does not advance, so a row's tokens are the first `count` of its k. Stop strings are the
host's (text); a row it ends is freed, and whatever the device drew for it meanwhile is dropped. The loop ends early
once no row is live. A dispatch runs a batch bucket b (powers of two times the prefill rows, up to the slots) of the
live slots, gathered from the state by index and scattered back, so one client does not pay a 16-row step; at
b = slots it runs the state in place.

Sampling settings are per slot (arrays, not compiled constants), so one decode program serves every request; the
order and arithmetic are those of generate/sampling.py (penalty, temperature, top-k, top-p). Top-k/top-p cost 64
passes over [b, V] (bisection, no sort): they run under `lax.cond` only when some slot asks for them. A slot's
draws use key fold_in(fold_in(key(seed), sample), step) with step its token index: a sample depends on its
request's seed, its index and its tokens only — not on k, the bucket or the other slots.
Logprobs are of the model's own distribution (log-softmax of the raw logits, what a forward pass gives), with the
TOP most likely tokens computed when some slot asks for them.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sailor2_jax.generate.engine import Generator
from sailor2_jax.generate.sampling import penalize_repetition, top_k_mask, top_p_mask
from sailor2_jax.generate.speculative import RaggedKVCache
from sailor2_jax.model.qwen2 import KVCache
from sailor2_jax.sharding import logical_to_spec, shard

TOP = 20  # OpenAI's largest top_logprobs
EOS_IDS = 8  # eos ids a request may have (E)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SlotState:
    cache: RaggedKVCache  # index [B]: the next column of each row = the position of `last`
    last: jax.Array       # [B] int32: each slot's latest token, the next step's input
    seen: jax.Array       # [B, V] bool: prompt and generated tokens (repetition penalty)
    keys: jax.Array       # [B] typed PRNG keys
    steps: jax.Array      # [B] int32: tokens drawn so far (the next draw's step)
    temperature: jax.Array  # [B] f32 (0: greedy)
    top_k: jax.Array      # [B] int32 (0: all)
    top_p: jax.Array      # [B] f32
    penalty: jax.Array    # [B] f32 (1: off)
    left: jax.Array       # [B] int32: draws the slot may still make (0: stopped, on eos, max_tokens or by the host)
    eos: jax.Array        # [B, E] int32: the request's eos ids (-1: none)
    draft: RaggedKVCache | None = None  # with a draft model (serve/drafting.py): its cache, columns as `cache`'s
    prev: jax.Array | None = None       # [B] int32: the token before `last` (re-fed to the draft)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Drawn:
    token: jax.Array      # [B] int32 (decode: [b, k])
    logprob: jax.Array    # [B] f32: log p(token) under the model (decode: [b, k])
    top_ids: jax.Array    # [B, TOP] int32 (zeros when no slot asked; decode: [b, k, TOP])
    top_logprobs: jax.Array  # [B, TOP] f32 (decode: [b, k, TOP])
    count: jax.Array | None = None  # decode: [b] int32, the tokens each row drew (the first `count` of its k)
    drafted: jax.Array | None = None  # speculative decode: [b] int32, draft tokens the target checked
    accepted: jax.Array | None = None  # of which it accepted


def filter_top(scaled_BV: jax.Array, top_k_B: jax.Array, top_p_B: jax.Array) -> jax.Array:
    """Per-row top-k then top-p (generate/sampling.py's masks, with the settings as arrays): -inf outside."""
    kept_BV = top_p_mask(scaled_BV, top_p_B, top_k_mask(scaled_BV, top_k_B))
    return jnp.where(kept_BV, scaled_BV, -jnp.inf)


def first_argmax(x_BV: jax.Array) -> jax.Array:
    """`jnp.argmax` over the last axis (the first index of the maximum) as two plain reductions: XLA:CPU lowers
    argmax's pair-valued reduction 5× slower at V = 151,936 (22 ms against 4.4 ms for 16 rows)."""
    V = x_BV.shape[-1]
    is_max_BV = x_BV == jnp.max(x_BV, axis=-1, keepdims=True)
    return jnp.min(jnp.where(is_max_BV, jnp.arange(V, dtype=jnp.int32), V), axis=-1)


def scale(logits_BV: jax.Array, temperature_B: jax.Array, top_k_B: jax.Array, top_p_B: jax.Array) -> jax.Array:
    """The logits a row samples from: ÷ its temperature (greedy rows: 1), then its top-k/top-p (the filter only
    when some sampled row asks)."""
    greedy_B = temperature_B == 0.0
    scaled_BV = logits_BV / jnp.where(greedy_B, 1.0, temperature_B)[:, None]
    needs_filter = jnp.any(~greedy_B & ((top_k_B > 0) | (top_p_B < 1.0)))
    return jax.lax.cond(needs_filter, filter_top, lambda x, k, p: x, scaled_BV, top_k_B, top_p_B)


def log_probs(raw_BTV: jax.Array, token_BT: jax.Array, want_top: jax.Array) -> tuple[jax.Array, ...]:
    """(log p(token) [B, T], the TOP most likely ids [B, T, TOP] and their log-probs) under the raw logits; the top
    ones only when `want_top` (zeros otherwise)."""
    lse_BT = jax.nn.logsumexp(raw_BTV, axis=-1)
    logprob_BT = jnp.take_along_axis(raw_BTV, token_BT[..., None], axis=-1)[..., 0] - lse_BT
    B, T = token_BT.shape

    def rows(*arrays):  # both branches laid out alike (the TPU partitioner refuses a conditional whose don't)
        return tuple(shard(a, ("batch", None, None)) for a in arrays)
    top_lp, top_ids = jax.lax.cond(
        want_top, lambda x: rows(*jax.lax.top_k(x - lse_BT[..., None], TOP)),
        lambda x: rows(jnp.zeros((B, T, TOP), jnp.float32), jnp.zeros((B, T, TOP), jnp.int32)), raw_BTV)
    return logprob_BT, top_ids.astype(jnp.int32), top_lp


def draw(logits_BV: jax.Array, s: SlotState, want_top: jax.Array) -> Drawn:
    """One token per row with each row's own settings, and its log-probs."""
    raw_BV = logits_BV.astype(jnp.float32)
    # always applied (× or ÷ 1.0 is exact): under a `lax.cond`, XLA:CPU copies the [B, V] logits into the next one
    logits_BV = penalize_repetition(raw_BV, s.seen, s.penalty[:, None])
    greedy_B = s.temperature == 0.0

    def sampled(logits_BV):
        return jax.vmap(lambda key, step, row: jax.random.categorical(jax.random.fold_in(key, step), row))(
            s.keys, s.steps, scale(logits_BV, s.temperature, s.top_k, s.top_p)).astype(jnp.int32)

    # an all-greedy batch skips the V random numbers per row
    drawn_B = jax.lax.cond(jnp.all(greedy_B), lambda x: shard(jnp.zeros(x.shape[0], jnp.int32), ("batch",)),
                           lambda x: shard(sampled(x), ("batch",)), logits_BV)
    token_B = jnp.where(greedy_B, first_argmax(logits_BV), drawn_B).astype(jnp.int32)
    logprob_B1, top_ids_B1T, top_lp_B1T = log_probs(raw_BV[:, None], token_B[:, None], want_top)
    return Drawn(token_B, logprob_B1[:, 0], top_ids_B1T[:, 0], top_lp_B1T[:, 0])


def _mark_seen(seen_BV: jax.Array, token_B: jax.Array, live_B: jax.Array) -> jax.Array:
    rows_B = jnp.arange(seen_BV.shape[0])
    return seen_BV.at[rows_B, token_B].set(seen_BV[rows_B, token_B] | live_B)


def decode_buckets(slots: int, rows: int) -> list[int]:
    """Decode batch sizes compiled: `rows` (the data-parallel devices) times powers of two, and `slots`."""
    return sorted({min(rows << i, slots) for i in range(max(slots // rows, 1).bit_length())} | {slots})


def _rows_axis(path) -> int:  # the slot axis of a state leaf: 1 in the [L, B, S, K, H] cache, 0 elsewhere
    return 1 if path[-1].name in ("k", "v") else 0


def take_slots(state: SlotState, slots_b: jax.Array) -> SlotState:
    return jax.tree_util.tree_map_with_path(lambda path, a: jnp.take(a, slots_b, axis=_rows_axis(path)), state)


def put_slots(state: SlotState, slots_b: jax.Array, sub: SlotState) -> SlotState:
    def put(path, a, x):
        return a.at[slots_b].set(x) if _rows_axis(path) == 0 else a.at[:, slots_b].set(x)
    return jax.tree_util.tree_map_with_path(put, state, sub)


class SlotPrograms:
    """The jitted programs of one model on one mesh for `slots` rows of `max_len` columns. Weights: the generation
    engine's layout (`Generator`: FSDP split gathered, tensor split kept), placed once; the layers also as per-layer
    copies, which the decode step reads in place (`Qwen2.unstacked_layers`)."""

    def __init__(self, model, mesh, *, slots: int, max_len: int, decode_steps: int = 1, place: bool = True):
        gen = Generator(model, mesh)  # the shardings of the weights, whole along FSDP (gather once)
        self.cfg, self.mesh, self.graphdef, self.dtype = gen.cfg, mesh, gen.graphdef, gen.dtype
        self.rows = gen.data_parallel  # prompts per prefill: one per data-parallel device
        if slots % self.rows:
            raise ValueError(f"max_slots {slots} must be a multiple of the mesh's data-parallel size {self.rows}")
        if decode_steps < 1:
            raise ValueError(f"decode steps per dispatch must be at least 1, got {decode_steps}")
        self.slots, self.max_len, self.decode_steps = slots, max_len, decode_steps
        self.batch_buckets = decode_buckets(slots, self.rows)
        self.vocab = model.cfg.vocab_size
        shardings = gen.gathered or gen.param_shardings
        self.param_shardings = shardings
        self.layer_shardings = per_layer_shardings(mesh, shardings, self.cfg.num_layers)
        self.abstract_params = gen.params  # (abstract when `model` is: `sailor2-jax compile --serve` lowers only)
        self._build()
        if place:  # the weights placed once, and the per-layer copies cut once
            self.params = jax.device_put(gen.params, shardings)
            with jax.set_mesh(mesh):
                self.layers = jax.jit(self.unstack, in_shardings=(shardings,),
                                      out_shardings=self.layer_shardings)(self.params)

    def unstack(self, params) -> list[dict[str, jax.Array]]:
        return nnx.merge(self.graphdef, params).unstacked_layers()

    def _named(self, *names) -> NamedSharding:
        return NamedSharding(self.mesh, logical_to_spec(names))

    def state_shardings(self) -> SlotState:
        rows, slots = self._named("batch"), self._named(*KVCache.SLOT_AXES)
        kv = self._named(*KVCache.KV_AXES)
        return SlotState(cache=RaggedKVCache(k=kv, v=kv, segment_ids=slots, positions=slots, index=rows), last=rows,
                         seen=self._named("batch", None), keys=rows, steps=rows, temperature=rows, top_k=rows,
                         top_p=rows, penalty=rows, left=rows, eos=self._named("batch", None))

    def make_state(self) -> SlotState:
        B, S = self.slots, self.max_len
        cache = KVCache.empty(self.cfg, B, S, self.dtype)
        return SlotState(cache=RaggedKVCache(k=cache.k, v=cache.v, segment_ids=cache.segment_ids,
                                         positions=cache.positions, index=jnp.zeros(B, jnp.int32)),
                         last=jnp.zeros(B, jnp.int32), seen=jnp.zeros((B, self.vocab), bool),
                         keys=jax.vmap(jax.random.key)(jnp.zeros(B, jnp.uint32)), steps=jnp.zeros(B, jnp.int32),
                         temperature=jnp.zeros(B, jnp.float32), top_k=jnp.zeros(B, jnp.int32),
                         top_p=jnp.ones(B, jnp.float32), penalty=jnp.ones(B, jnp.float32),
                         left=jnp.zeros(B, jnp.int32), eos=jnp.full((B, EOS_IDS), -1, jnp.int32))

    def empty_state(self) -> SlotState:
        with jax.set_mesh(self.mesh):
            return jax.jit(self.make_state, out_shardings=self.state_shardings())()

    @property
    def tokens_per_dispatch(self) -> int:
        """The most tokens a decode dispatch yields per slot."""
        return self.decode_steps

    # --- the programs (methods, jitted in `_build`; serve/drafting.py overrides prefill, insert and decode) -------
    @property
    def weights(self) -> tuple:
        """The weight arguments every program after `_build` takes first (the draft's are added by drafting.py)."""
        return self.params, self.layers

    def weight_shardings(self) -> tuple:
        return self.param_shardings, self.layer_shardings

    def prefix_shardings(self):
        kv, slots = self._named(*KVCache.KV_AXES), self._named(*KVCache.SLOT_AXES)
        return KVCache(k=kv, v=kv, segment_ids=slots, positions=slots, index=NamedSharding(self.mesh, P()))

    def prefill_cache(self, graphdef, params, layers, cfg, tokens_RP, lengths_R) -> tuple[jax.Array, KVCache]:
        """R right-padded prompts (column = position) into a fresh cache of S columns: (hidden states, cache)."""
        model = nnx.merge(graphdef, params)
        R, T = tokens_RP.shape
        real_RT = jnp.arange(T)[None, :] < lengths_R[:, None]
        positions_RT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (R, T))
        cache = KVCache.empty(cfg, R, self.max_len, self.dtype)
        return model.extend(tokens_RP, cache, positions_BT=positions_RT, segment_ids_BT=real_RT.astype(jnp.int32),
                            layers=layers)

    def prefill_fn(self, params, layers, tokens_RP, lengths_R):
        x_RTD, cache = self.prefill_cache(self.graphdef, params, layers, self.cfg, tokens_RP, lengths_R)
        last_RD = jnp.take_along_axis(x_RTD, jnp.maximum(lengths_R - 1, 0)[:, None, None], axis=1)
        return cache, nnx.merge(self.graphdef, params).logits(last_RD)[:, 0]

    def insert_fn(self, state: SlotState, prefix: KVCache, logits_RV, tokens_RP, lengths_R, row, slot, seed, sample,
                  temperature, top_k, top_p, penalty, want_top, max_tokens, eos_E):
        one = partial(jax.lax.dynamic_slice_in_dim, start_index=row, slice_size=1, axis=0)
        length = one(lengths_R)[0]
        tokens_P = one(tokens_RP)[0]
        seen_V = jnp.zeros(self.vocab, jnp.int32).at[tokens_P].add(
            (jnp.arange(tokens_P.shape[0]) < length).astype(jnp.int32)) > 0
        key = jax.random.fold_in(jax.random.key(seed), sample)
        row_state = SlotState(cache=None, last=None, seen=seen_V[None], keys=key[None], steps=jnp.zeros(1, jnp.int32),
                              temperature=temperature[None], top_k=top_k[None], top_p=top_p[None],
                              penalty=penalty[None], left=None, eos=None)
        drawn = draw(one(logits_RV), row_state, want_top)
        seen_V = seen_V.at[drawn.token[0]].set(True)
        left = jnp.where(jnp.any(drawn.token[0] == eos_E), 0, max_tokens - 1)
        put = partial(put_row, slot=slot)
        state = dataclasses.replace(
            state, cache=copy_row(state.cache, prefix, row, slot, length), last=put(state.last, drawn.token),
            seen=put(state.seen, seen_V[None]), keys=put(state.keys, key[None]),
            steps=put(state.steps, jnp.ones(1, jnp.int32)), temperature=put(state.temperature, temperature[None]),
            top_k=put(state.top_k, top_k[None]), top_p=put(state.top_p, top_p[None]),
            penalty=put(state.penalty, penalty[None]), left=put(state.left, left[None]), eos=put(state.eos, eos_E[None]))
        return state, drawn

    def steps(self, model, layers, s: SlotState, want_top) -> tuple[SlotState, Drawn]:
        """Up to k steps of the rows of `s` (each until its `left` runs out), in a device loop."""
        b, k = s.last.shape[0], self.decode_steps
        out = Drawn(token=jnp.zeros((b, k), jnp.int32), logprob=jnp.zeros((b, k), jnp.float32),
                    top_ids=jnp.zeros((b, k, TOP), jnp.int32), top_logprobs=jnp.zeros((b, k, TOP), jnp.float32),
                    count=jnp.zeros(b, jnp.int32))

        def step(carry):
            i, s, out = carry
            live_b = s.left > 0
            c = s.cache
            x_b1D, cache = model.extend(s.last[:, None], c, positions_BT=c.index[:, None],
                                        segment_ids_BT=live_b[:, None].astype(jnp.int32), layers=layers)
            cache = dataclasses.replace(cache, index=c.index + live_b)  # extend advanced every row: keep dead rows
            drawn = draw(model.logits(x_b1D)[:, 0], s, want_top)
            token_b = jnp.where(live_b, drawn.token, s.last)
            eos_b = jnp.any(token_b[:, None] == s.eos, axis=-1)
            s = dataclasses.replace(s, cache=cache, last=token_b, seen=_mark_seen(s.seen, token_b, live_b),
                                    steps=s.steps + live_b,
                                    left=jnp.where(live_b, jnp.where(eos_b, 0, s.left - 1), s.left))
            column = partial(jax.lax.dynamic_update_index_in_dim, index=i, axis=1)
            out = Drawn(token=column(out.token, token_b), logprob=column(out.logprob, drawn.logprob),
                        top_ids=column(out.top_ids, drawn.top_ids),
                        top_logprobs=column(out.top_logprobs, drawn.top_logprobs), count=out.count + live_b)
            return i + 1, s, out

        _, s, out = jax.lax.while_loop(lambda c: (c[0] < k) & jnp.any(c[1].left > 0), step, (jnp.int32(0), s, out))
        return s, out

    def on_slots(self, state: SlotState, slots_b, live_b, run) -> tuple[SlotState, Drawn]:
        """`run(sub state)` on the slots `slots_b` [b] (b = all slots: `arange`, run in place); rows not `live_b`
        stop."""
        whole = slots_b.shape[0] == state.last.shape[0]
        sub = state if whole else take_slots(state, slots_b)
        sub, out = run(dataclasses.replace(sub, left=jnp.where(live_b, sub.left, 0)))
        return (sub if whole else put_slots(state, slots_b, sub)), out

    def decode_fn(self, params, layers, state: SlotState, slots_b, live_b, want_top):
        model = nnx.merge(self.graphdef, params)
        return self.on_slots(state, slots_b, live_b, lambda s: self.steps(model, layers, s, want_top))

    def _build(self) -> None:
        states, rows, scalar = self.state_shardings(), self._named("batch"), NamedSharding(self.mesh, P())
        weights = self.weight_shardings()
        # one jitted function each; a prefill program is compiled per prompt bucket (the shape of `tokens_RP`), a
        # decode program per decode batch bucket (the shape of `slots_b`)
        self.prefill = jax.jit(self.prefill_fn, in_shardings=(*weights, rows, rows),
                               out_shardings=(self.prefix_shardings(), rows))
        self.insert = jax.jit(self.insert_fn, in_shardings=(states, self.prefix_shardings(), rows, rows, rows)
                              + (scalar,) * 11, out_shardings=(states, scalar), donate_argnums=0)
        self.decode = jax.jit(self.decode_fn, in_shardings=(*weights, states, rows, rows, scalar),
                              out_shardings=(states, rows), donate_argnums=len(weights))


def per_layer_shardings(mesh, shardings, num_layers: int) -> list[dict[str, NamedSharding]]:
    """The shardings of per-layer weight copies (`Qwen2.unstacked_layers`): the stacked layers' without the layer
    axis."""
    spec = {name: NamedSharding(mesh, P(*var.get_value().spec[1:])) for name, var in shardings["layers"].items()}
    return [spec] * num_layers


def put_row(a: jax.Array, x: jax.Array, slot, axis: int = 0) -> jax.Array:
    return jax.lax.dynamic_update_slice_in_dim(a, x.astype(a.dtype), slot, axis=axis)


def copy_row(cache: RaggedKVCache, prefix: KVCache, row, slot, length) -> RaggedKVCache:
    """Prefilled row `row` of `prefix` into slot `slot` of `cache`, its next column `length`."""
    one = partial(jax.lax.dynamic_slice_in_dim, start_index=row, slice_size=1, axis=0)
    take = partial(jax.lax.dynamic_slice_in_dim, start_index=row, slice_size=1, axis=1)
    return RaggedKVCache(k=put_row(cache.k, take(prefix.k), slot, 1), v=put_row(cache.v, take(prefix.v), slot, 1),
                         segment_ids=put_row(cache.segment_ids, one(prefix.segment_ids), slot),
                         positions=put_row(cache.positions, one(prefix.positions), slot),
                         index=put_row(cache.index, length[None], slot))
