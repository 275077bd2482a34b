"""Speculative decoding in the server (`sailor2-jax serve --draft-model DIR|self`): the slot programs of
serve/programs.py with a draft, built from generate/speculative.py's pieces (`propose`, `verify`, `emit_block`).

A decode dispatch runs up to `rounds` rounds per live slot: the draft proposes γ tokens, the target scores the γ + 1
positions in one forward over the slot's cache, the acceptance rule (min(1, p/q), residual redraw, bonus token) keeps
a prefix, and the slot emits 1..γ+1 tokens, cut at an eos id of its request and at its max_tokens on the device:
[b, rounds · (γ + 1)] tokens and a count per row, the host interface of the plain multi-step decode.

The draft's KV cache is a second `RaggedKVCache` in the slot state with the target's columns (column = position);
both advance by the tokens a row kept. Rolling back is not advancing past them: a rejected token's columns lie in
the next round's write window. Each round re-feeds `prev` (the token before `last`) to the draft, as the offline
speculative generator does. The draft is a separate model on the same mesh, or `self`: the target's layers other
than those block expansion inserted, reading the target's own per-layer weights (no second copy).

Per-slot sampling: greedy rows verify by argmax, sampled rows by the stochastic rule, both on logits scaled and
filtered as the plain decode does (`programs.scale`); an all-greedy batch skips the sampled path. A row's draws in
a round use fold_in(its key, its token index), so a sample depends on its seed and its tokens only, not on the
dispatch. The repetition penalty is refused with a draft (the tokens a block has seen change inside the block).
Logprobs are the target's raw log-softmax at each emitted position, as without a draft.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from sailor2_jax.generate.engine import Generator
from sailor2_jax.generate.speculative import (RaggedKVCache, emit_block, fit_vocab, forward, plan_draft, propose,
                                              verify)
from sailor2_jax.model.qwen2 import KVCache, Qwen2
from sailor2_jax.serve.programs import (TOP, Drawn, SlotPrograms, SlotState, copy_row, first_argmax, log_probs,
                                       per_layer_shardings, scale)


class DraftPrograms(SlotPrograms):
    """`SlotPrograms` whose decode is speculative: `draft` a `Qwen2` on the same mesh, or None for the self draft.
    A dispatch runs max(1, decode_steps // (γ + 1)) rounds."""

    def __init__(self, model: Qwen2, mesh, draft: Qwen2 | None, *, draft_tokens: int, slots: int, max_len: int,
                 decode_steps: int = 1, place: bool = True, tokenizer_size: int | None = None):
        plan = plan_draft(model.cfg, None if draft is None else draft.cfg, draft_tokens, tokenizer_size)
        self.gamma, self.draft_layers, self.draft_cfg, self.description = (plan.gamma, plan.layers, plan.cfg,
                                                                           plan.description)
        self.rounds = max(1, decode_steps // (draft_tokens + 1))
        self.draft_gen = None if draft is None else Generator(draft, mesh)
        super().__init__(model, mesh, slots=slots, max_len=max_len, decode_steps=decode_steps, place=place)
        self.draft_params, self.draft_weights = {}, []  # the self draft reads the target's
        if place and self.draft_gen is not None:
            g = self.draft_gen
            shardings = g.gathered or g.param_shardings
            self.draft_params = jax.device_put(g.params, shardings)
            with jax.set_mesh(mesh):
                self.draft_weights = jax.jit(self.unstack_draft, in_shardings=(shardings,),
                                             out_shardings=self._draft_layer_shardings())(self.draft_params)

    @property
    def tokens_per_dispatch(self) -> int:
        return self.rounds * (self.gamma + 1)

    # --- the draft's weights ------------------------------------------------------------------------------------
    def unstack_draft(self, params) -> list[dict[str, jax.Array]]:
        return nnx.merge(self.draft_gen.graphdef, params).unstacked_layers()

    def _draft_layer_shardings(self) -> list:
        if self.draft_gen is None:
            return []
        g = self.draft_gen
        return per_layer_shardings(self.mesh, g.gathered or g.param_shardings, self.draft_cfg.num_layers)

    @property
    def weights(self) -> tuple:
        return self.params, self.layers, self.draft_params, self.draft_weights

    def weight_shardings(self) -> tuple:
        draft = {} if self.draft_gen is None else (self.draft_gen.gathered or self.draft_gen.param_shardings)
        return self.param_shardings, self.layer_shardings, draft, self._draft_layer_shardings()

    def _draft(self, params, layers, draft_params, draft_layers) -> tuple[nnx.GraphDef, object, Qwen2, list]:
        """(graphdef, params, module, per-layer weights) of the draft."""
        if self.draft_gen is None:
            return self.graphdef, params, nnx.merge(self.graphdef, params), [layers[i] for i in self.draft_layers]
        return (self.draft_gen.graphdef, draft_params, nnx.merge(self.draft_gen.graphdef, draft_params),
                draft_layers)

    # --- the state ------------------------------------------------------------------------------------------------
    def state_shardings(self) -> SlotState:
        s = super().state_shardings()
        return dataclasses.replace(s, draft=s.cache, prev=s.last)

    def make_state(self) -> SlotState:
        s = super().make_state()
        c = KVCache.empty(self.draft_cfg, self.slots, self.max_len, self.dtype)
        return dataclasses.replace(s, draft=RaggedKVCache(k=c.k, v=c.v, segment_ids=c.segment_ids,
                                                          positions=c.positions, index=s.cache.index),
                                   prev=jnp.zeros_like(s.last))

    # --- the programs ---------------------------------------------------------------------------------------------
    def prefix_shardings(self):
        one = super().prefix_shardings()
        return one, one

    def prefill_fn(self, params, layers, draft_params, draft_layers, tokens_RP, lengths_R):
        prefix, logits_RV = super().prefill_fn(params, layers, tokens_RP, lengths_R)
        graphdef, d_params, _, d_layers = self._draft(params, layers, draft_params, draft_layers)
        _, draft_prefix = self.prefill_cache(graphdef, d_params, d_layers, self.draft_cfg, tokens_RP, lengths_R)
        return (prefix, draft_prefix), logits_RV

    def insert_fn(self, state: SlotState, prefix, logits_RV, tokens_RP, lengths_R, row, slot, *rest):
        target_prefix, draft_prefix = prefix
        state, drawn = super().insert_fn(state, target_prefix, logits_RV, tokens_RP, lengths_R, row, slot, *rest)
        length = jax.lax.dynamic_index_in_dim(lengths_R, row, keepdims=False)
        prompt_P = jax.lax.dynamic_index_in_dim(tokens_RP, row, keepdims=False)
        prev = jax.lax.dynamic_index_in_dim(prompt_P, length - 1, keepdims=True)  # the last prompt token
        return dataclasses.replace(state, draft=copy_row(state.draft, draft_prefix, row, slot, length),
                                   prev=jax.lax.dynamic_update_slice_in_dim(state.prev, prev, slot, 0)), drawn

    def decode_fn(self, params, layers, draft_params, draft_layers, state: SlotState, slots_b, live_b, want_top):
        target = nnx.merge(self.graphdef, params)
        _, _, draft, d_layers = self._draft(params, layers, draft_params, draft_layers)
        return self.on_slots(state, slots_b, live_b,
                             lambda s: self.speculate(target, layers, draft, d_layers, s, want_top))

    def speculate(self, target, layers, draft, draft_layers, s: SlotState, want_top) -> tuple[SlotState, Drawn]:
        """Up to `rounds` rounds of the rows of `s` in a device loop; [b, rounds·(γ+1)] tokens out."""
        b, gamma, V = s.last.shape[0], self.gamma, self.vocab
        W = self.tokens_per_dispatch
        j_G1 = jnp.arange(gamma + 1, dtype=jnp.int32)
        zeros = jnp.zeros(b, jnp.int32)
        out = Drawn(token=jnp.zeros((b, W), jnp.int32), logprob=jnp.zeros((b, W), jnp.float32),
                    top_ids=jnp.zeros((b, W, TOP), jnp.int32), top_logprobs=jnp.zeros((b, W, TOP), jnp.float32),
                    count=zeros, drafted=zeros, accepted=zeros)
        greedy_b = s.temperature == 0.0
        all_greedy = jnp.all(greedy_b)

        def round_(carry):
            r, s, out = carry
            live_b = s.left > 0
            key_b = jax.vmap(jax.random.fold_in)(s.keys, s.steps)  # (seed, token index): not the dispatch

            def choose(i, logits_bV):
                q_bV = scale(fit_vocab(logits_bV.astype(jnp.float32), V), s.temperature, s.top_k, s.top_p)
                greedy_token_b = first_argmax(q_bV)

                def sampled(q_bV):
                    d_b = jax.vmap(lambda k, row: jax.random.categorical(jax.random.fold_in(k, i), row))(key_b, q_bV)
                    return jnp.where(greedy_b, greedy_token_b, d_b.astype(jnp.int32)), jax.nn.softmax(q_bV, axis=-1)
                return jax.lax.cond(all_greedy, lambda q: (greedy_token_b, jnp.zeros_like(q)), sampled, q_bV)

            draft_cache = dataclasses.replace(s.draft, index=s.cache.index)
            drafts_bG, q_probs, draft_cache = propose(draft, draft_layers, draft_cache, s.prev, s.last, s.cache.index,
                                                      gamma, choose)
            block_bG1 = jnp.concatenate([s.last[:, None], drafts_bG], 1)
            raw_bGV, cache = forward(target, layers, s.cache, block_bG1, s.cache.index[:, None] + j_G1)
            raw_bGV = raw_bGV.astype(jnp.float32)
            repeat = lambda a: jnp.repeat(a, gamma + 1)  # noqa: E731  (per row → per row and position)
            p_bGV = scale(raw_bGV.reshape(b * (gamma + 1), -1), repeat(s.temperature), repeat(s.top_k),
                          repeat(s.top_p)).reshape(b, gamma + 1, -1)
            a_g, next_g = verify(p_bGV, None, drafts_bG, key_b, True)

            def mixed(p_bGV):
                a_s, next_s = verify(p_bGV, jnp.stack(q_probs, 1), drafts_bG, key_b, False)
                return jnp.where(greedy_b, a_g, a_s), jnp.where(greedy_b, next_g, next_s)
            a_b, next_b = jax.lax.cond(all_greedy, lambda p: (a_g, next_g), mixed, p_bGV)
            emitted_bG1, count_b, hit_b, last, prev = emit_block(
                drafts_bG, a_b, next_b, lambda t: jnp.any(t[..., None] == s.eos[:, None, :], axis=-1), s.left,
                s.last, s.prev)
            logprob_bG1, top_ids, top_lp = log_probs(raw_bGV, emitted_bG1, want_top)
            rows_b1 = jnp.arange(b)[:, None]
            columns_bG1 = jnp.where(j_G1 < count_b[:, None], out.count[:, None] + j_G1, W)  # W: dropped

            def put(a, x):
                return a.at[rows_b1, columns_bG1].set(x, mode="drop")
            out = Drawn(token=put(out.token, emitted_bG1), logprob=put(out.logprob, logprob_bG1),
                        top_ids=put(out.top_ids, top_ids), top_logprobs=put(out.top_logprobs, top_lp),
                        count=out.count + count_b, drafted=out.drafted + gamma * live_b,
                        accepted=out.accepted + jnp.where(live_b, a_b, 0))
            index = s.cache.index + count_b  # each row moves past its kept tokens only
            s = dataclasses.replace(s, cache=dataclasses.replace(cache, index=index),
                                    draft=dataclasses.replace(draft_cache, index=index), last=last, prev=prev,
                                    steps=s.steps + count_b, left=jnp.where(hit_b, 0, s.left - count_b))
            return r + 1, s, out

        _, s, out = jax.lax.while_loop(lambda c: (c[0] < self.rounds) & jnp.any(c[1].left > 0), round_,
                                       (jnp.int32(0), s, out))
        return s, out
