"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a draft proposes γ tokens, the target scores all
γ + 1 positions in one forward over its KV cache, and each draft token is kept with probability min(1, p/q); the
first rejected one is replaced by a draw from norm(max(0, p − q)), and when all γ pass a bonus token is drawn from
the target's last position. The output is distributed exactly as the target's (greedy: token for token the
target's argmax chain), whatever the draft; the draft decides only how many tokens a target step yields.

Two kinds of draft, both on the target's mesh:
- a separate model (Sailor2-1B for 8B/20B): its own weights and KV cache; its vocabulary may have other padding
  rows (its logits are cut or padded with -inf to the target's V: a token the draft cannot propose is still reached
  through the residual, so the output stays exact), but the ids the tokenizer produces must agree (`check_vocab`).
- `self`: the target itself with the layers block expansion inserted skipped (`ModelConfig.inserted_layers`): at
  step 0 of continual pre-training that is exactly the base model. No second copy of any weight: the draft runs a
  subset of the target's per-layer weights; its KV cache holds only those layers (its keys differ from the
  target's at the same layer once the inserted layers have trained, so it cannot share the target's cache).

Layout. Prompts are prefilled as `Generator` does (left-padded; its target prefill program is reused, the draft's
prompt is prefilled alongside). After that, rows advance by different counts per round, so each row has its own
cache slot (`RaggedKVCache`: writes are per-row scatters). Rolling a row back is not advancing its index past its
accepted tokens: the slots of rejected tokens lie inside the next round's write window and are overwritten before
any query reads them. Both caches share the per-row index: the draft's first step of a round re-feeds the token
before `last` (after a fully accepted block the draft never saw its last draft token; re-feeding it every round
keeps the step's shape fixed, and a draft's numerics never change the output).

One round per loop step: γ draft steps (the first over two tokens), one target forward over γ + 1 tokens, the
acceptance, then each row emits 1..γ+1 tokens, cut at its first eos id and at max_new_tokens — the row then ends at
exactly that token, whatever follows it in the block. Rows never wait for each other beyond the round.
Randomness per row and round: fold_in(row key, round), folded again per use (draft draws 0..γ-1, the uniforms γ,
the residual draw γ+1), so a sample depends on (seed, prompt, sample index) only, as in `Generator`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sailor2_jax.compiled import shared_jit
from sailor2_jax.config import ModelConfig
from sailor2_jax.generate.engine import DecodeState, Generator, kept
from sailor2_jax.generate.sampling import SamplingConfig, process_logits
from sailor2_jax.model.qwen2 import KVCache, Qwen2
from sailor2_jax.sharding import logical_to_spec, shard

DEFAULT_DRAFT_TOKENS = 4


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RaggedKVCache(KVCache):
    """A `KVCache` whose `index` is per row, int32 [B]: row b writes its next T tokens at slots [index[b],
    index[b] + T) (a scatter; the shared-index cache writes one slice for all rows)."""

    def _slots(self, T: int) -> tuple[jax.Array, jax.Array]:
        rows_B1 = jnp.arange(self.index.shape[0])[:, None]
        return rows_B1, self.index[:, None] + jnp.arange(T, dtype=jnp.int32)

    def place(self, segment_ids_BT: jax.Array, positions_BT: jax.Array) -> "RaggedKVCache":
        rows_B1, slots_BT = self._slots(segment_ids_BT.shape[1])
        return dataclasses.replace(
            self, segment_ids=self.segment_ids.at[rows_B1, slots_BT].set(segment_ids_BT.astype(jnp.int32)),
            positions=self.positions.at[rows_B1, slots_BT].set(positions_BT.astype(jnp.int32)))

    def write(self, layer, k_BTKH: jax.Array, v_BTKH: jax.Array) -> "RaggedKVCache":
        rows_B1, slots_BT = self._slots(k_BTKH.shape[1])

        def put(c_LBSKH, x_BTKH):
            return shard(c_LBSKH.at[layer, rows_B1, slots_BT].set(x_BTKH.astype(c_LBSKH.dtype)), self.KV_AXES)
        return dataclasses.replace(self, k=put(self.k, k_BTKH), v=put(self.v, v_BTKH))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SpecState:
    target: RaggedKVCache
    draft: RaggedKVCache
    tokens: jax.Array     # [B, N'] int32: generated ids (N' = max_new + γ + 1: room for a block's overhang)
    last: jax.Array       # [B] int32: the latest token (not yet in either cache), the next round's first input
    prev: jax.Array       # [B] int32: the token before it (re-fed to the draft, see the module docstring)
    positions: jax.Array  # [B] int32: `last`'s position
    length: jax.Array     # [B] int32: tokens generated per row
    done: jax.Array       # [B] bool
    stopped: jax.Array    # [B] bool: ended on an eos id
    keys: jax.Array       # [B] typed PRNG keys
    drafted: jax.Array    # [B] int32: draft tokens the target checked (γ per round the row was live)
    accepted: jax.Array   # [B] int32: of which accepted
    rounds: jax.Array     # [B] int32: target forwards (rounds) the row was live for
    step: jax.Array       # int32 []: the next round (1 after the prefill, like `DecodeState.step`)


def accept_probability(p_d: jax.Array, q_d: jax.Array) -> jax.Array:
    """The chance a drafted token is kept: min(1, p/q) (q > 0: the draft drew it). The test of the sampled output
    distribution replaces this with a wrong rule and checks that the test fails."""
    return jnp.minimum(1.0, p_d / jnp.maximum(q_d, jnp.finfo(jnp.float32).tiny))


def verify(p_logits_BGV: jax.Array, q_probs_BGV: jax.Array | None, drafts_BG: jax.Array, key_B: jax.Array,
           greedy: bool) -> tuple[jax.Array, jax.Array]:
    """(accepted drafts a [B], the token after them [B]). `p_logits_BGV` [B, γ+1, V]: the target's processed
    logits at the γ+1 positions; `q_probs_BGV` [B, γ, V]: the draft's processed distributions its tokens were drawn
    from (None when greedy). Greedy: drafts count while they equal the target's argmax, then the argmax follows."""
    gamma = drafts_BG.shape[1]
    if greedy:
        target_BG = jnp.argmax(p_logits_BGV, axis=-1).astype(jnp.int32)
        a_B = jnp.sum(jnp.cumprod(drafts_BG == target_BG[:, :gamma], axis=1), axis=1)
        return a_B, jnp.take_along_axis(target_BG, a_B[:, None], axis=1)[:, 0]
    p_BGV = jax.nn.softmax(p_logits_BGV, axis=-1)
    p_d_BG = jnp.take_along_axis(p_BGV[:, :gamma], drafts_BG[..., None], axis=-1)[..., 0]
    q_d_BG = jnp.take_along_axis(q_probs_BGV, drafts_BG[..., None], axis=-1)[..., 0]
    u_BG = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, gamma), (gamma,)))(key_B)
    a_B = jnp.sum(jnp.cumprod(u_BG < accept_probability(p_d_BG, q_d_BG), axis=1), axis=1)
    p_BV = jnp.take_along_axis(p_BGV, a_B[:, None, None], axis=1)[:, 0]
    q_BV = jnp.take_along_axis(q_probs_BGV, jnp.minimum(a_B, gamma - 1)[:, None, None], axis=1)[:, 0]
    residual_BV = jnp.maximum(p_BV - jnp.where((a_B < gamma)[:, None], q_BV, 0.0), 0.0)
    # p == q exactly leaves no residual mass, but then nothing is ever rejected: p stands in for rounding's sake
    residual_BV = jnp.where(jnp.sum(residual_BV, -1, keepdims=True) > 0, residual_BV, p_BV)
    draw = jax.vmap(lambda k, r: jax.random.categorical(jax.random.fold_in(k, gamma + 1), jnp.log(r)))
    return a_B, draw(key_B, residual_BV).astype(jnp.int32)


def forward(model: Qwen2, layers, cache: KVCache, tokens_BT: jax.Array, positions_BT: jax.Array,
            last_only: bool = False) -> tuple[jax.Array, KVCache]:
    """Logits of T new tokens per row written into `cache` (the LM head only where read: `last_only`)."""
    x_BTD, cache = model.extend(tokens_BT, cache, positions_BT=positions_BT, segment_ids_BT=jnp.ones_like(tokens_BT),
                                layers=layers)
    return model.logits(x_BTD[:, -1:] if last_only else x_BTD), cache


def fit_vocab(logits_BV: jax.Array, V: int) -> jax.Array:
    """A draft's logits over the target's V rows (see the module docstring)."""
    Vd = logits_BV.shape[-1]
    if Vd >= V:
        return logits_BV[:, :V]
    return jnp.pad(logits_BV, ((0, 0), (0, V - Vd)), constant_values=-jnp.inf)


def propose(draft: Qwen2, layers, cache: RaggedKVCache, prev_B: jax.Array, last_B: jax.Array,
            positions_B: jax.Array, gamma: int, choose: Callable) -> tuple[jax.Array, list, RaggedKVCache]:
    """γ draft tokens per row after `last` (at `positions_B`, cache slot `cache.index`): the first step feeds (prev,
    last) at the slots before and at the index, each next one the token just drafted. `choose(i, logits_BV)` picks
    the i-th draft token from the draft's raw logits: (tokens [B], the distribution drawn from [B, V] or None when
    greedy). Returns (drafts [B, γ], their distributions, the draft's cache)."""
    cache = dataclasses.replace(cache, index=cache.index - 1)
    logits_BTV, cache = forward(draft, layers, cache, jnp.stack([prev_B, last_B], 1),
                                jnp.stack([positions_B - 1, positions_B], 1), last_only=True)
    logits_BV = logits_BTV[:, -1]
    drafts, q_probs = [], []
    for i in range(gamma):
        d_B, q_BV = choose(i, logits_BV)
        drafts.append(d_B)
        if q_BV is not None:
            q_probs.append(q_BV)
        if i + 1 < gamma:
            logits_BTV, cache = forward(draft, layers, cache, d_B[:, None], (positions_B + 1 + i)[:, None])
            logits_BV = logits_BTV[:, 0]
    return jnp.stack(drafts, 1), q_probs, cache


def emit_block(drafts_BG: jax.Array, a_B: jax.Array, next_B: jax.Array, is_eos: Callable, budget_B: jax.Array,
               last_B: jax.Array, prev_B: jax.Array) -> tuple[jax.Array, ...]:
    """What a verified round yields per row: its `a` accepted drafts then the target's token, cut after the first
    eos id (`is_eos(tokens_BG1)`) and at `budget_B` tokens (0: a row that is done). Returns (tokens [B, γ+1],
    count [B], hit an eos [B], the new last and prev tokens [B])."""
    j_G1 = jnp.arange(drafts_BG.shape[1] + 1, dtype=jnp.int32)
    emitted_BG1 = jnp.where(j_G1 < a_B[:, None], jnp.pad(drafts_BG, ((0, 0), (0, 1))), next_B[:, None])
    is_eos_BG1 = is_eos(emitted_BG1) & (j_G1 <= a_B[:, None])
    first_eos_B = jnp.argmax(is_eos_BG1, axis=1)
    has_eos = jnp.any(is_eos_BG1, axis=1)
    count_B = jnp.minimum(jnp.where(has_eos, first_eos_B + 1, a_B + 1), budget_B)
    hit = has_eos & (first_eos_B < count_B)
    take = lambda i_B: jnp.take_along_axis(emitted_BG1, jnp.maximum(i_B, 0)[:, None], 1)[:, 0]  # noqa: E731
    last = jnp.where(count_B > 0, take(count_B - 1), last_B)
    prev = jnp.where(count_B > 1, take(count_B - 2), jnp.where(count_B > 0, last_B, prev_B))
    return emitted_BG1, count_B, hit, last, prev


def self_draft_layers(cfg: ModelConfig) -> list[int]:
    """The layers the self draft runs: all but those block expansion inserted. A model without an expansion
    record is refused (there is no draft inside it)."""
    if not cfg.inserted_layers:
        raise ValueError("--draft-model self needs a block-expanded model: its config records which layers the "
                         "expansion inserted (`sailor2-jax expand` writes `sailor2_inserted_layers` into "
                         "config.json, and training runs and exports keep it); this model has no such record")
    inserted = set(cfg.inserted_layers)
    return [i for i in range(cfg.num_layers) if i not in inserted]


def check_vocab(target: ModelConfig, draft: ModelConfig, tokenizer_size: int) -> None:
    """The draft must have a row for every id the tokenizer produces (beyond them both models only have padding
    rows, which may differ). Whether the ids mean the same tokens is the tokenizers' check (`check_tokenizers`)."""
    if min(target.vocab_size, draft.vocab_size) < tokenizer_size:
        raise ValueError(f"vocabulary mismatch: the draft has {draft.vocab_size} embedding rows and the target "
                         f"{target.vocab_size}, but the tokenizer produces {tokenizer_size} ids; a draft must share "
                         "the target's tokenizer (Sailor2-1B/8B/20B all have 151,936 rows)")


@dataclasses.dataclass(frozen=True)
class DraftPlan:
    """What a draft is, checked: γ, the target's layers it runs (the self draft; None for a separate model), its
    config and a description for the log."""
    gamma: int
    layers: list[int] | None
    cfg: ModelConfig
    description: str


def plan_draft(target: ModelConfig, draft: ModelConfig | None, draft_tokens: int,
               tokenizer_size: int | None = None) -> DraftPlan:
    """The draft of `target` (`draft` None: the self draft) with γ = `draft_tokens`, or a clear error."""
    if draft_tokens < 1:
        raise ValueError(f"draft tokens (γ) must be at least 1, got {draft_tokens}")
    if draft is None:
        layers = self_draft_layers(target)
        return DraftPlan(draft_tokens, layers, target.replace(num_layers=len(layers), inserted_layers=None),
                         f"self ({len(layers)} of {target.num_layers} layers: those block expansion did not insert)")
    check_vocab(target, draft, tokenizer_size or min(target.vocab_size, draft.vocab_size))
    return DraftPlan(draft_tokens, None, draft, f"a {draft.num_layers}-layer draft model")


def check_tokenizers(target, draft) -> None:
    """Both `tokenizers.Tokenizer`s map every token to the same id, or a clear error (a draft from another
    tokenizer proposes the wrong tokens: never wrong output, but nothing would be accepted)."""
    a, b = target.get_vocab(with_added_tokens=True), draft.get_vocab(with_added_tokens=True)
    if a != b:
        diff = sorted(set(a.items()) ^ set(b.items()))[:3]
        raise ValueError(f"vocabulary mismatch: the draft's tokenizer ({len(b)} tokens) differs from the target's "
                         f"({len(a)} tokens), e.g. {diff}; the draft must use the target's tokenizer")


class SpeculativeGenerator(Generator):
    """`Generator` with a draft: `draft` a `Qwen2` on the same mesh, or None for the self draft (the target's
    layers other than `cfg.inserted_layers`). `generate` and `stream` as `Generator`'s; `stats` sums what the
    batches decoded since `reset_stats` (acceptance, tokens per target step). The repetition penalty is not
    supported (the seen set changes inside a block). The decode loop always runs per-layer weight copies
    (`Generator`'s `unstack`): the self draft is a subset of them."""

    def __init__(self, model: Qwen2, mesh: Mesh, draft: Qwen2 | None = None, *,
                 draft_tokens: int = DEFAULT_DRAFT_TOKENS, gather: bool = True, tokenizer_size: int | None = None):
        super().__init__(model, mesh, unstack=True, gather=gather)
        plan = plan_draft(model.cfg, None if draft is None else draft.cfg, draft_tokens, tokenizer_size)
        self.gamma, self.draft_layers, self.draft_cfg, self.description = (plan.gamma, plan.layers, plan.cfg,
                                                                           plan.description)
        self.draft_gen = None if draft is None else Generator(draft, mesh, unstack=True, gather=gather)
        self.reset_stats()

    def reset_stats(self) -> None:
        self._stats = {"drafted": 0, "accepted": 0, "rounds": 0, "tokens": 0}

    @property
    def stats(self) -> dict[str, float]:
        """acceptance: accepted / drafted tokens; tokens_per_step: tokens per target forward after the prefill
        (1 + accepted per round, before eos/length cuts); plus the raw counts."""
        s = dict(self._stats)
        s["acceptance"] = s["accepted"] / max(s["drafted"], 1)
        s["tokens_per_step"] = s["tokens"] / max(s["rounds"], 1)
        return s

    # --- the programs -------------------------------------------------------------------------------------------
    def _spec_shardings(self) -> SpecState:
        def named(*names):
            return NamedSharding(self.mesh, logical_to_spec(names))
        rows = named("batch")
        slots = named(*KVCache.SLOT_AXES)
        cache = RaggedKVCache(k=named(*KVCache.KV_AXES), v=named(*KVCache.KV_AXES), segment_ids=slots,
                              positions=slots, index=rows)
        return SpecState(target=cache, draft=cache, tokens=named("batch", None), last=rows, prev=rows,
                         positions=rows, length=rows, done=rows, stopped=rows, keys=rows, drafted=rows,
                         accepted=rows, rounds=rows, step=NamedSharding(self.mesh, P()))

    def _draft_params(self, params):
        return params if self.draft_gen is None else self.draft_gen.params

    def _draft_model(self, draft_params, target_model: Qwen2, target_layers) -> tuple[Qwen2, list]:
        """(module, per-layer weights) the draft runs: the target's own subset, or the draft model's."""
        if self.draft_gen is None:
            return target_model, [target_layers[i] for i in self.draft_layers]
        draft_params, gather_layer = self.draft_gen._gathered(draft_params)
        model = nnx.merge(self.draft_gen.graphdef, draft_params)
        return model, [{n: gather_layer(n, w) for n, w in layer.items()} for layer in model.unstacked_layers()]

    @kept()
    def programs(self, rows: int, prompt_len: int, samples: int, max_new: int, sampling: SamplingConfig,
                 eos_ids: tuple[int, ...]) -> tuple[Callable, Callable]:
        """(prefill, decode) with `Generator`'s signatures: prefill(params, tokens, lengths, sample_ids, seed) →
        state, decode(params, state, stop_step) → state."""
        if sampling.repetition_penalty != 1.0:
            raise ValueError("speculative decoding does not support the repetition penalty (the tokens a drafted "
                             "block has seen change inside the block); decode without a draft to use it")
        gamma, cfg, dtype, graphdef = self.gamma, self.cfg, self.dtype, self.graphdef
        V = cfg.vocab_size
        eos = jnp.asarray(eos_ids, jnp.int32)
        overhang = max_new + gamma + 1  # cache slots and token columns: a round may write γ+1 past a row's end
        target_prefill, _ = Generator.programs(self, rows, prompt_len, samples, overhang, sampling, eos_ids)
        draft_graphdef = graphdef if self.draft_gen is None else self.draft_gen.graphdef

        def ragged(cache: KVCache) -> RaggedKVCache:
            index = jnp.full(cache.segment_ids.shape[:1], cache.index, jnp.int32)
            return RaggedKVCache(k=cache.k, v=cache.v, segment_ids=cache.segment_ids, positions=cache.positions,
                                 index=index)

        def draft_prefill(draft_params, state: DecodeState, tokens_BP, lengths_B) -> SpecState:
            """The draft's prompt cache beside the target's prefill `state` (whose first token stands)."""
            model = nnx.merge(draft_graphdef, draft_params)
            B, T = tokens_BP.shape
            slot_T = jnp.arange(T, dtype=jnp.int32)
            real_BT = slot_T[None, :] >= (T - lengths_B)[:, None]
            positions_BT = jnp.where(real_BT, slot_T[None, :] - (T - lengths_B)[:, None], 0)
            layers = None
            if self.draft_gen is None:  # the kept layers' weights: cut from the stacked ones (transient)
                layers = [{n: w[i] for n, w in model.layers.stacked().items()} for i in self.draft_layers]
            cache = KVCache.empty(self.draft_cfg, B, T + overhang, dtype)
            _, cache = model.extend(tokens_BP, cache, positions_BT=positions_BT,
                                    segment_ids_BT=real_BT.astype(jnp.int32), layers=layers)

            def repeat(a, axis=0):
                return jnp.repeat(a, samples, axis=axis)
            cache = RaggedKVCache(k=repeat(cache.k, 1), v=repeat(cache.v, 1), segment_ids=repeat(cache.segment_ids),
                                  positions=repeat(cache.positions),
                                  index=jnp.full((B * samples,), T, jnp.int32))
            zeros = jnp.zeros_like(state.length)
            return SpecState(target=ragged(state.cache), draft=cache, tokens=state.tokens, last=state.last,
                             prev=repeat(tokens_BP[:, -1]), positions=state.positions, length=state.length,
                             done=state.done | (state.length >= max_new), stopped=state.stopped, keys=state.keys,
                             drafted=zeros, accepted=zeros, rounds=zeros, step=state.step)

        def decode(params, draft_params, state: SpecState, stop_step) -> SpecState:
            params, gather_layer = self._gathered(params)
            target = nnx.merge(graphdef, params)
            target_layers = [{n: gather_layer(n, w) for n, w in layer.items()} for layer in target.unstacked_layers()]
            draft, draft_layers = self._draft_model(draft_params, target, target_layers)
            j_G1 = jnp.arange(gamma + 1, dtype=jnp.int32)

            def round_(s: SpecState) -> SpecState:
                B = s.last.shape[0]
                key_B = jax.vmap(lambda k: jax.random.fold_in(k, s.step))(s.keys)

                def choose(i, logits_BV):
                    q_logits_BV = process_logits(fit_vocab(logits_BV, V), None, sampling)
                    if sampling.greedy:
                        return jnp.argmax(q_logits_BV, axis=-1).astype(jnp.int32), None
                    d_B = jax.vmap(lambda k, row: jax.random.categorical(jax.random.fold_in(k, i), row))(
                        key_B, q_logits_BV).astype(jnp.int32)
                    return d_B, jax.nn.softmax(q_logits_BV, axis=-1)
                cache = dataclasses.replace(s.draft, index=s.target.index)
                drafts_BG, q_probs, cache = propose(draft, draft_layers, cache, s.prev, s.last, s.positions, gamma,
                                                    choose)
                # the target scores last and the γ drafts in one forward
                block_BG1 = jnp.concatenate([s.last[:, None], drafts_BG], 1)
                p_logits_BGV, target_cache = forward(target, target_layers, s.target, block_BG1,
                                                     s.positions[:, None] + j_G1)
                p_logits_BGV = process_logits(p_logits_BGV.reshape(B * (gamma + 1), -1), None,
                                              sampling).reshape(B, gamma + 1, -1)
                a_B, next_B = verify(p_logits_BGV, jnp.stack(q_probs, 1) if q_probs else None, drafts_BG, key_B,
                                     sampling.greedy)
                # the row's new tokens: a drafts, then the target's; cut at the first eos and at max_new
                live = ~s.done
                emitted_BG1, count_B, hit, last, prev = emit_block(
                    drafts_BG, a_B, next_B, lambda t: jnp.isin(t, eos), jnp.where(live, max_new - s.length, 0),
                    s.last, s.prev)
                rows_B1 = jnp.arange(B)[:, None]
                columns_BG1 = jnp.where(j_G1 < count_B[:, None], s.length[:, None] + j_G1, s.tokens.shape[1])
                tokens = s.tokens.at[rows_B1, columns_BG1].set(emitted_BG1, mode="drop")
                length = s.length + count_B
                # roll back: each row's index moves past its kept tokens only (both caches share it)
                index = s.target.index + count_B
                return SpecState(target=dataclasses.replace(target_cache, index=index),
                                 draft=dataclasses.replace(cache, index=index), tokens=tokens, last=last, prev=prev,
                                 positions=s.positions + count_B, length=length,
                                 done=s.done | hit | (length >= max_new), stopped=s.stopped | hit, keys=s.keys,
                                 drafted=s.drafted + gamma * live, accepted=s.accepted + jnp.where(live, a_B, 0),
                                 rounds=s.rounds + live, step=s.step + 1)

            return jax.lax.while_loop(lambda s: (s.step < stop_step) & ~jnp.all(s.done), round_, state)

        rows_sharding = NamedSharding(self.mesh, logical_to_spec(("batch",)))
        prompt_sharding = NamedSharding(self.mesh, logical_to_spec(("batch", None)))
        scalar = NamedSharding(self.mesh, P())
        draft_shardings = self.param_shardings if self.draft_gen is None else self.draft_gen.param_shardings
        states = self._spec_shardings()
        draft_prefill = shared_jit(draft_prefill, self.mesh, in_shardings=(draft_shardings,
                                                                           self._state_shardings(False),
                                                                           prompt_sharding, rows_sharding),
                                   out_shardings=states, donate_argnums=1)
        decode = shared_jit(decode, self.mesh, in_shardings=(self.param_shardings, draft_shardings, states, scalar),
                            out_shardings=states, donate_argnums=2)

        def prefill(params, tokens, lengths, sample_ids, seed):
            state = target_prefill(params, tokens, lengths, sample_ids, seed)
            with warnings.catch_warnings():  # the prefill's scalar cache index has no place in the ragged state
                warnings.filterwarnings("ignore", "Some donated buffers were not usable")
                return draft_prefill(self._draft_params(params), state, tokens, lengths)

        def advance(params, state, stop_step):
            return decode(params, self._draft_params(params), state, stop_step)
        advance.jitted = decode  # (params, draft params, state, stop_step): what `compile --decode` lowers
        return prefill, advance

    def count(self, state: SpecState, rows: int) -> None:
        drafted, accepted, rounds = (np.asarray(jax.device_get(a))[:rows] for a in
                                     (state.drafted, state.accepted, state.rounds))
        self._stats["drafted"] += int(drafted.sum())
        self._stats["accepted"] += int(accepted.sum())
        self._stats["rounds"] += int(rounds.sum())
        self._stats["tokens"] += int(accepted.sum() + rounds.sum())


def open_draft(opened, draft: str, source=None) -> tuple[Qwen2 | None, str | None]:
    """The draft `--draft-model` names for an opened model (`model.source.OpenModel`): (None, None) for "self"
    (the model's own kept layers: checked to have an expansion record), else (that model opened on the same mesh,
    its description), from an HF directory or a training run (`source`: the `ModelSource` whose dtype and mesh it
    shares), its tokenizer checked against the target's."""
    if draft == "self":
        self_draft_layers(opened.model.cfg)
        return None, None
    from sailor2_jax.model.source import ModelSource, open_model

    fields = {} if source is None else {"dtype": source.dtype, "mesh": source.mesh}
    drafted = open_model(ModelSource(path=str(draft), **fields), mesh=opened.mesh)
    check_tokenizers(opened.tokenizer, drafted.tokenizer)
    return drafted.model, f"{drafted.description} ({drafted.model.cfg.num_layers} layers)"


def make_generator(opened, draft: str | None = None, draft_tokens: int = DEFAULT_DRAFT_TOKENS, *,
                   source=None, prefill_chunk: int | None = None) -> Generator:
    """The generator of an opened model (`model.source.OpenModel`): plain without `draft`, else speculative with the
    draft `open_draft` gives. `prefill_chunk`: chunked prefill of long prompts (plain decoding only: the draft's
    prefill is not chunked)."""
    if draft is None:
        return Generator(opened.model, opened.mesh, prefill_chunk=prefill_chunk)
    if prefill_chunk is not None:
        raise ValueError("chunked prefill (--prefill-chunk) is not combined with a draft model (--draft-model) yet")
    model, description = open_draft(opened, draft, source)
    gen = SpeculativeGenerator(opened.model, opened.mesh, model, draft_tokens=draft_tokens,
                               tokenizer_size=opened.tokenizer.get_vocab_size(with_added_tokens=True))
    gen.description = description or gen.description
    return gen


def stats_line(generator: Generator) -> str:
    """One line on what the draft did (empty for a plain generator)."""
    if not isinstance(generator, SpeculativeGenerator):
        return ""
    s = generator.stats
    return (f"speculative decoding with draft {generator.description}, γ = {generator.gamma}: acceptance "
            f"{s['acceptance']:.3f} ({s['accepted']} of {s['drafted']} draft tokens), {s['tokens_per_step']:.2f} "
            f"tokens per target step")
