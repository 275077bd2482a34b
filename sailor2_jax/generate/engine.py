"""The decode engine: a batch of prompts → prefill into a KV cache → a jitted decode loop, on the training mesh.

Layout. Prompts are left-padded to a length bucket P, so every row writes the same cache slot at each step (one
dynamic-update-slice, no scatter); per-row positions start at 0 at each row's first real token and padding carries
segment id 0, which no real token attends to. The cache holds S = P + max_new_tokens slots, stacked over layers
[L, B, S, K, H] (model/qwen2.py `KVCache`) and sharded like activations: rows over `data`×`fsdp`, kv heads over
`tensor` (sharding.RULES).

Two jitted programs per (batch bucket, length bucket, samples per prompt, sampling settings): `prefill` runs the
prompts once, repeats each row's cache `n` times (the n samples of a prompt share one prefill) and draws every
row's first token; `decode` is a `lax.while_loop` of one-token steps in which each row stops on its own (an eos id
or max_new_tokens) and the loop ends when all have, or at `stop_step` (streaming asks for a few steps at a time and
calls it again; batch generation asks for all). The state is donated, so the cache is updated in place, and the
loop reads per-layer copies of the layer weights (see `Generator`).

Chunked prefill (`prefill_chunk`): a long prompt is fed Q tokens at a time (a `lax.scan` over its chunks, each
attending over the cache written so far), so the prefill never holds the [T, S] attention scores of the whole prompt;
the result equals the one-pass prefill.

Randomness: row r of prompt i draws with key fold_in(key(seed), i·n + r), folded again with the step, so a
sample depends on (seed, prompt index, sample index) only, never on batch size, bucket or order.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sailor2_jax.compiled import Recent, shared_jit
from sailor2_jax.generate.sampling import SamplingConfig, next_tokens
from sailor2_jax.model.qwen2 import KVCache, Qwen2
from sailor2_jax.sharding import RULES, logical_size, logical_to_spec, state_shardings
from sailor2_jax.tokenizer import DEFAULT_EOS_IDS

MIN_LENGTH_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class Completion:
    token_ids: list[int]  # the generated ids only; the stop token included when one was hit
    finish_reason: str    # "stop" (an eos id) or "length" (max_new_tokens)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeState:
    cache: KVCache
    tokens: jax.Array     # [B, N] int32: generated ids (0 after a row stopped)
    last: jax.Array       # [B] int32: the latest token, the next step's input
    positions: jax.Array  # [B] int32: its position
    length: jax.Array     # [B] int32: tokens generated per row
    done: jax.Array       # [B] bool
    stopped: jax.Array    # [B] bool: ended on an eos id
    keys: jax.Array       # [B] typed PRNG keys, one per row
    seen: jax.Array | None  # [B, V] bool: tokens seen per row (repetition penalty only)
    step: jax.Array       # int32 []: the step that produces tokens[:, step]


def prefill_prompt(model: Qwen2, tokens_BT: jax.Array, cache: KVCache, positions_BT: jax.Array,
                   segment_ids_BT: jax.Array, chunk: int | None) -> tuple[jax.Array, KVCache]:
    """Write a prompt into the cache, in one pass or `chunk` tokens at a time; returns the final-normed hidden state
    of its last slot [B, 1, D] and the cache."""
    B, T = tokens_BT.shape
    if chunk is None or chunk >= T:
        x_BTD, cache = model.extend(tokens_BT, cache, positions_BT=positions_BT, segment_ids_BT=segment_ids_BT)
        return x_BTD[:, -1:], cache

    def one(cache, chunk_inputs):
        tokens_BQ, positions_BQ, segments_BQ = chunk_inputs
        x_BQD, cache = model.extend(tokens_BQ, cache, positions_BT=positions_BQ, segment_ids_BT=segments_BQ)
        return cache, x_BQD[:, -1]

    by_chunk = lambda a: a.reshape(B, T // chunk, chunk).swapaxes(0, 1)  # [T/Q, B, Q]
    cache, last_nBD = jax.lax.scan(one, cache, tuple(map(by_chunk, (tokens_BT, positions_BT, segment_ids_BT))))
    return last_nBD[-1][:, None], cache


def length_bucket(n: int) -> int:
    """Prompt slots: the next power of two (at least 16), so a few programs cover every prompt length."""
    return max(MIN_LENGTH_BUCKET, 1 << max(0, n - 1).bit_length())


def batch_bucket(n: int, batch_size: int, data_parallel: int) -> int:
    """Prompt rows of a batch of n prompts: the next power of two below batch_size (else batch_size), rounded up to
    a multiple of the data-parallel devices (the prefill splits prompt rows over them)."""
    rows = next((b for b in (1 << i for i in range(batch_size.bit_length())) if b >= n), batch_size)
    return -(-rows // data_parallel) * data_parallel


def kept(maxsize: int = 32) -> Callable[[Callable], Callable]:
    """A method's results kept per argument tuple (the last `maxsize`), in a cache that lives on the instance.
    `functools.lru_cache` on a method would hold every instance it has seen, and so its weights, alive until evicted:
    an `eval` of three models in one process kept all three."""
    def wrap(method: Callable) -> Callable:
        attr = f"_kept_{method.__qualname__}"  # an override and the method it calls keep apart

        @functools.wraps(method)
        def cached(self, *args):
            cache = self.__dict__.get(attr)
            if cache is None:
                cache = self.__dict__[attr] = Recent(maxsize)
            return cache.get_or_make(args, lambda: method(self, *args))
        return cached
    return wrap


class Generator:
    """Generation from one model on one mesh; compiled programs are kept per bucket and sampling setting, and their
    executables are shared with every generator of a model of the same shapes (`compiled.shared_jit`: evaluating
    or sampling from a second checkpoint compiles nothing again).

    `unstack` (default) runs the decode loop from per-layer copies of the layer weights, cut once per decode call
    (`Qwen2.unstacked_layers`: the loop then reads each weight once per step instead of copying its slice out of
    the stacked array first); it holds a second copy of the layer weights while a decode call runs. Turn it off
    when that does not fit (the loop then scans the stacked weights, as training does).

    `gather` (default) gathers the weights' FSDP split once per decode call, keeping only their tensor split: the
    loop reads every weight at every one-token step, and FSDP-sharded weights would be all-gathered again each time
    (the decode loop of Sailor2-8B on v5p-128 is then bound by the interconnect; docs/performance.md). It needs the
    weights whole on each device, divided by the tensor axis; turn it off where they do not fit (or give the mesh a
    tensor axis). Prefill reads each weight once for all prompt tokens and keeps the training layout."""

    def __init__(self, model: Qwen2, mesh: Mesh, *, unstack: bool = True, gather: bool = True,
                 prefill_chunk: int | None = None):
        if prefill_chunk is not None and (prefill_chunk < 1 or prefill_chunk & (prefill_chunk - 1)):
            raise ValueError(f"prefill_chunk must be a power of two (prompt buckets are), got {prefill_chunk}")
        self.cfg, self.mesh, self.unstack, self.prefill_chunk = model.cfg, mesh, unstack, prefill_chunk
        self.graphdef, self.params = nnx.split(model)
        self.param_shardings = state_shardings(self.params, mesh)  # by the rules: `model` may be abstract (aot)
        # the same rules with the parameters' FSDP axis ("embed") whole
        self.gathered = state_shardings(self.params, mesh, {**RULES, "embed": None}) if gather else None
        self.dtype = jnp.dtype(model.compute.dtype)
        self.data_parallel = logical_size("batch", mesh)  # the devices rows are split over (sharding.RULES)

    def set_params(self, params) -> None:
        """Decode with other values of the same parameters — e.g. the live parameters of a training run (online
        preference tuning): no copy, no export, the compiled programs reused. `params` is a pure dict or an
        `nnx.State` of the model's parameters, sharded as they were."""
        self.params = nnx.state(nnx.merge(self.graphdef, params))

    # --- the two programs ---------------------------------------------------------------------------------------
    def _state_shardings(self, repetition_penalty: bool) -> DecodeState:
        def named(*names):
            return NamedSharding(self.mesh, logical_to_spec(names))
        rows = named("batch")
        slots = named(*KVCache.SLOT_AXES)
        cache = KVCache(k=named(*KVCache.KV_AXES), v=named(*KVCache.KV_AXES), segment_ids=slots, positions=slots,
                        index=NamedSharding(self.mesh, P()))
        seen = named("batch", None) if repetition_penalty else None
        return DecodeState(cache=cache, tokens=named("batch", None), last=rows, positions=rows, length=rows,
                           done=rows, stopped=rows, keys=rows, seen=seen, step=NamedSharding(self.mesh, P()))

    @kept()
    def programs(self, rows: int, prompt_len: int, samples: int, max_new: int, sampling: SamplingConfig,
                 eos_ids: tuple[int, ...]) -> tuple[Callable, Callable]:
        """(prefill, decode), jitted with explicit shardings for `rows` prompts of `prompt_len` slots."""
        graphdef, cfg, dtype = self.graphdef, self.cfg, self.dtype
        eos = jnp.asarray(eos_ids, jnp.int32)
        penalty = sampling.repetition_penalty != 1.0

        def record(state: DecodeState, token_B: jax.Array, cache: KVCache) -> DecodeState:
            token_B = jnp.where(state.done, 0, token_B)
            live = ~state.done
            hit = live & jnp.isin(token_B, eos)
            length = state.length + live
            seen = state.seen
            if penalty:
                rows_B = jnp.arange(seen.shape[0])
                seen = seen.at[rows_B, token_B].set(seen[rows_B, token_B] | live)
            return DecodeState(cache=cache, tokens=jax.lax.dynamic_update_index_in_dim(state.tokens, token_B,
                                                                                        state.step, axis=1),
                               last=token_B, positions=state.positions + 1, length=length,
                               done=state.done | hit | (length >= max_new), stopped=state.stopped | hit,
                               keys=state.keys, seen=seen, step=state.step + 1)

        def prefill(params, tokens_BP, lengths_B, sample_ids, seed):
            model = nnx.merge(graphdef, params)
            B, T = tokens_BP.shape
            pad_B = T - lengths_B
            slot_T = jnp.arange(T, dtype=jnp.int32)
            real_BT = slot_T[None, :] >= pad_B[:, None]
            positions_BT = jnp.where(real_BT, slot_T[None, :] - pad_B[:, None], 0)
            cache = KVCache.empty(cfg, B, T + max_new, dtype)
            x_B1D, cache = prefill_prompt(model, tokens_BP, cache, positions_BT, real_BT.astype(jnp.int32),
                                          self.prefill_chunk)
            logits_BV = model.logits(x_B1D)[:, 0]  # left padding: every row's last prompt token is slot T-1

            def repeat(a, axis=0):  # prompt rows → samples × prompt rows (row i·n + r is sample r of prompt i)
                return jnp.repeat(a, samples, axis=axis)
            cache = KVCache(k=repeat(cache.k, 1), v=repeat(cache.v, 1), segment_ids=repeat(cache.segment_ids),
                            positions=repeat(cache.positions), index=cache.index)
            R = B * samples
            seen = None
            if penalty:
                counts = jnp.zeros((R, logits_BV.shape[-1]), jnp.int32)  # counts: a pad id may also be a real id
                seen = counts.at[jnp.arange(R)[:, None], repeat(tokens_BP)].add(repeat(real_BT).astype(jnp.int32)) > 0
            keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(sample_ids)
            state = DecodeState(cache=cache, tokens=jnp.zeros((R, max_new), jnp.int32), last=jnp.zeros(R, jnp.int32),
                                positions=repeat(lengths_B) - 1, length=jnp.zeros(R, jnp.int32),
                                done=repeat(lengths_B) == 0, stopped=jnp.zeros(R, bool), keys=keys, seen=seen,
                                step=jnp.zeros((), jnp.int32))
            first = next_tokens(repeat(logits_BV), seen, keys, state.step, sampling)
            return record(state, first, cache)

        def decode(params, state: DecodeState, stop_step):
            params, gather_layer = self._gathered(params)
            model = nnx.merge(graphdef, params)
            layers = model.unstacked_layers() if self.unstack else None  # once per call, outside the loop
            if layers is not None:
                layers = [{name: gather_layer(name, w) for name, w in layer.items()} for layer in layers]

            def step(s: DecodeState) -> DecodeState:
                tokens_B1, positions_B1 = s.last[:, None], s.positions[:, None]
                x_B1D, cache = model.extend(tokens_B1, s.cache, positions_BT=positions_B1,
                                            segment_ids_BT=jnp.ones_like(tokens_B1), layers=layers)
                logits_BV = model.logits(x_B1D)[:, 0]
                return record(s, next_tokens(logits_BV, s.seen, s.keys, s.step, sampling), cache)

            return jax.lax.while_loop(lambda s: (s.step < stop_step) & ~jnp.all(s.done), step, state)

        rows_sharding = NamedSharding(self.mesh, logical_to_spec(("batch",)))
        prompt_sharding = NamedSharding(self.mesh, logical_to_spec(("batch", None)))
        scalar = NamedSharding(self.mesh, P())
        states = self._state_shardings(penalty)
        prefill = shared_jit(prefill, self.mesh, in_shardings=(self.param_shardings, prompt_sharding, rows_sharding,
                                                               rows_sharding, scalar), out_shardings=states)
        decode = shared_jit(decode, self.mesh, in_shardings=(self.param_shardings, states, scalar),
                            out_shardings=states, donate_argnums=1)
        return prefill, decode

    def _gathered(self, params: nnx.State) -> tuple[nnx.State, Callable]:
        """`params` with their FSDP split gathered (see class), and how to gather one per-layer copy. With per-layer
        copies, the stacked layer weights stay split and each copy is gathered on its own (never a second stacked
        whole copy)."""
        if self.gathered is None:
            return params, lambda name, w: w
        constrain = jax.lax.with_sharding_constraint
        params = nnx.State({k: v if k == "layers" and self.unstack else jax.tree.map(constrain, v, self.gathered[k])
                            for k, v in params.items()})
        layer_spec = {name: P(*var.get_value().spec[1:]) for name, var in self.gathered["layers"].items()}
        return params, lambda name, w: constrain(w, NamedSharding(self.mesh, layer_spec[name]))

    # --- host side ----------------------------------------------------------------------------------------------
    def start(self, prompts: Sequence[Sequence[int]], prompt_ids: Sequence[int], *, rows: int, samples: int,
              max_new: int, sampling: SamplingConfig, seed: int, eos_ids: tuple[int, ...]
              ) -> tuple[DecodeState, Callable]:
        """Prefill a batch (at most `rows` prompts; the rest of the bucket is empty rows, done from the start);
        `prompt_ids` name the prompts for their random keys. Returns the decode state and
        `advance(state, stop_step) -> state`."""
        prompt_len = length_bucket(max(len(p) for p in prompts))
        prefill, decode = self.programs(rows, prompt_len, samples, max_new, sampling, tuple(eos_ids))
        tokens = np.zeros((rows, prompt_len), np.int32)
        lengths = np.zeros(rows, np.int32)
        for i, p in enumerate(prompts):
            if len(p):
                tokens[i, prompt_len - len(p):] = p
            lengths[i] = len(p)
        ids = np.zeros(rows, np.int64)
        ids[:len(prompt_ids)] = prompt_ids
        sample_ids = (ids[:, None] * samples + np.arange(samples)).reshape(-1).astype(np.uint32)
        with jax.set_mesh(self.mesh):
            state = prefill(self.params, tokens, lengths, sample_ids, np.uint32(seed))

        def advance(state: DecodeState, stop_step: int) -> DecodeState:
            with jax.set_mesh(self.mesh):
                return decode(self.params, state, np.int32(stop_step))
        return state, advance

    def generate(self, prompts: Sequence[Sequence[int]], *, sampling: SamplingConfig = SamplingConfig(),
                 max_new_tokens: int = 256, num_samples: int = 1, seed: int = 0,
                 eos_ids: Sequence[int] = DEFAULT_EOS_IDS, batch_size: int = 32,
                 on_batch: Callable[[int], None] | None = None) -> list[list[Completion]]:
        """`num_samples` completions per prompt (token-id lists), in prompt order. Prompts are decoded in batches of
        up to `batch_size`, longest first (less padding); `on_batch(k)` reports k more prompts done."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty: generation needs at least one prompt token")
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[list[Completion]] = [[] for _ in prompts]
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            rows = batch_bucket(len(chunk), batch_size, self.data_parallel)
            state, advance = self.start([prompts[i] for i in chunk], chunk, rows=rows, samples=num_samples,
                                        max_new=max_new_tokens, sampling=sampling, seed=seed, eos_ids=tuple(eos_ids))
            if not bool(jax.device_get(state.done).all()):  # e.g. max_new_tokens 1: nothing left to decode
                state = advance(state, max_new_tokens)
            self.count(state, len(chunk) * num_samples)
            for j, completions in enumerate(self.completions(state, len(chunk) * num_samples, num_samples)):
                out[chunk[j]] = completions
            if on_batch:
                on_batch(len(chunk))
        return out

    def stream(self, prompt: Sequence[int], *, sampling: SamplingConfig = SamplingConfig(),
               max_new_tokens: int = 256, seed: int = 0, eos_ids: Sequence[int] = DEFAULT_EOS_IDS,
               every: int = 1) -> Iterator[int]:
        """Yield one prompt's tokens as they are produced (the stop token included), `every` steps per call."""
        rows = batch_bucket(1, 1, self.data_parallel)
        state, advance = self.start([prompt], [0], rows=rows, samples=1, max_new=max_new_tokens, sampling=sampling,
                                    seed=seed, eos_ids=tuple(eos_ids))
        emitted = 0
        try:
            while True:
                length, done = int(state.length[0]), bool(state.done[0])
                if length > emitted:
                    yield from (int(t) for t in np.asarray(state.tokens[0, emitted:length]))
                    emitted = length
                if done:
                    return
                state = advance(state, int(state.step) + every)
        finally:  # also when the caller stops early (chat: at the eos id)
            self.count(state, rows)

    def count(self, state: DecodeState, rows: int) -> None:
        """What a subclass records of a decoded batch (the speculative generator: its draft's acceptance)."""

    @staticmethod
    def completions(state: DecodeState, rows: int, samples: int) -> list[list[Completion]]:
        tokens, length, stopped = (np.asarray(jax.device_get(a)) for a in (state.tokens, state.length, state.stopped))
        flat = [Completion(tokens[r, :length[r]].tolist(), "stop" if stopped[r] else "length") for r in range(rows)]
        return [flat[i:i + samples] for i in range(0, rows, samples)]
