"""Continuous batching: a thread that keeps a fixed set of slots decoding and fills freed slots between steps.

The loop (one thread; JetStream's orchestrator with prefill, insert and generate in one place):
  1. admit: while the queue's head fits in the free slots, prefill it (with up to R-1 more requests that fit: one
     prefill program per bucket runs R prompts) and insert each of its n samples into a slot;
  2. dispatch k decode steps (`decode_steps`) of the slots in use, in the smallest compiled batch bucket that holds
     them (the state stays on the device, donated);
  3. read the previous dispatch's tokens (and the inserts' first tokens) and hand them to their requests.
Dispatch d+1 is sent before dispatch d's tokens are read, so the host's work overlaps the device's — unless d may
end a sample by max_tokens: then d is read at once and the loop waits briefly (`LINGER_S`) for the freed slots' next
requests (`_iteration`). Eos ids and
`max_tokens` stop a slot on the device, at its exact token; a stop string (decided by the server's text layer in
`on_token`) or `cancel()` (a client that went away) ends a sample on the host: its slot is free for the next
admission at once, and what the device drew for it meanwhile (at most one dispatch) is dropped. A new request waits
at most for the dispatch in flight before its prefill runs.

Everything about a request's text lives in its callbacks (`Request.on_token`, `on_finish`), called on the engine
thread; the engine sees token ids only.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable

import jax
import numpy as np

from sailor2_jax.generate.engine import length_bucket
from sailor2_jax.generate.sampling import SamplingConfig
from sailor2_jax.generate.speculative import DEFAULT_DRAFT_TOKENS
from sailor2_jax.serve.drafting import DraftPrograms
from sailor2_jax.serve.programs import EOS_IDS, SlotPrograms

log = logging.getLogger("sailor2_jax.serve")


class QueueFull(Exception):
    """The bounded queue of waiting requests is full (HTTP 429)."""


class Closed(Exception):
    """The engine is draining or stopped and takes no new requests (HTTP 503)."""


@dataclasses.dataclass
class Token:
    id: int
    logprob: float
    top: list[tuple[int, float]]  # the most likely tokens and their log-probs (empty unless asked)
    eos: bool                     # an eos id: it ends the sample and carries no text


@dataclasses.dataclass(eq=False)
class Request:
    prompt: list[int]
    max_tokens: int
    on_token: Callable[[int, Token], str | None]  # (sample, token) → a finish reason to end the sample, or None
    on_finish: Callable[[int, str], None]          # (sample, "stop" | "length" | "abort")
    sampling: SamplingConfig = SamplingConfig()
    n: int = 1
    seed: int | None = None                        # None: a fresh random seed
    eos_ids: tuple[int, ...] = ()
    top_logprobs: int = 0                          # > 0: `Token.top` carries that many
    cancelled: bool = False
    done: list[bool] = dataclasses.field(default_factory=list)
    counts: list[int] = dataclasses.field(default_factory=list)

    def cancel(self) -> None:
        self.cancelled = True


DEFAULT_DECODE_STEPS = 8  # tokens per slot per host round trip (docs/performance.md "Serving" measures it)
LINGER_S = 0.02  # how long a dispatch waits for the next requests of clients whose samples just ended


def prompt_buckets(max_len: int) -> list[int]:
    """Prompt lengths compiled: powers of two from 16 (generate's `length_bucket`) up to max_len, and max_len."""
    out = sorted({min(length_bucket(2 ** i), max_len) for i in range(max_len.bit_length() + 1)})
    return [b for b in out if b <= max_len]


class Engine:
    def __init__(self, model, mesh, *, max_slots: int, max_len: int, max_queue: int = 256,
                 buckets: list[int] | None = None, decode_steps: int = DEFAULT_DECODE_STEPS, draft=None,
                 draft_tokens: int = DEFAULT_DRAFT_TOKENS, tokenizer_size: int | None = None):
        """`draft`: None (plain decoding), "self" or a `Qwen2` on the same mesh (speculative decoding with γ =
        `draft_tokens`: serve/drafting.py)."""
        if draft is None:
            self.programs = SlotPrograms(model, mesh, slots=max_slots, max_len=max_len, decode_steps=decode_steps)
        else:
            self.programs = DraftPrograms(model, mesh, None if draft == "self" else draft, draft_tokens=draft_tokens,
                                          slots=max_slots, max_len=max_len, decode_steps=decode_steps,
                                          tokenizer_size=tokenizer_size)
        self.drafted = self.accepted = 0  # draft tokens the target checked, and accepted (with a draft)
        self.mesh, self.max_slots, self.max_len, self.max_queue = mesh, max_slots, max_len, max_queue
        self.buckets = sorted(set(buckets or prompt_buckets(max_len)))
        if self.buckets[-1] != max_len or self.buckets[0] < 1:
            raise ValueError(f"prefill buckets {self.buckets}: positive lengths, the largest equal to max_len {max_len}")
        self.rows = self.programs.rows
        self.state = self.programs.empty_state()
        self.owner: list[tuple[Request, int] | None] = [None] * max_slots
        self.queue: collections.deque[Request] = collections.deque()
        self.pending: list[tuple[str, object, object]] = []
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._accepting = True
        self._running = False
        self.steps = 0  # decode dispatches
        self.dispatched: collections.Counter[int] = collections.Counter()  # dispatches per decode batch bucket

    # --- what the server reads -----------------------------------------------------------------------------
    @property
    def slots_in_use(self) -> int:
        return sum(o is not None for o in self.owner)

    @property
    def queue_depth(self) -> int:
        return len(self.queue)

    @property
    def speculative(self) -> bool:
        return isinstance(self.programs, DraftPrograms)

    def check(self, prompt_len: int, max_tokens: int, n: int, sampling: SamplingConfig = SamplingConfig()) -> None:
        """A ValueError naming the field if a request cannot be served by these slots."""
        if self.speculative and sampling.repetition_penalty != 1.0:
            raise ValueError("repetition_penalty: not supported by this server's speculative decoding (--draft-model: "
                             "the tokens a drafted block has seen change inside the block)")
        if prompt_len < 1:
            raise ValueError("prompt: at least one token is needed")
        if n > self.max_slots:
            raise ValueError(f"n: {n} samples exceed the server's {self.max_slots} slots (--max-slots)")
        if max_tokens < 1:
            raise ValueError(f"max_tokens: at least 1, got {max_tokens}")
        if prompt_len + max_tokens > self.max_len:
            raise ValueError(f"max_tokens: the prompt's {prompt_len} tokens plus max_tokens {max_tokens} exceed the "
                             f"server's --max-len {self.max_len}")

    def submit(self, req: Request) -> None:
        self.check(len(req.prompt), req.max_tokens, req.n, req.sampling)
        if len(req.eos_ids) > EOS_IDS:
            raise ValueError(f"eos_ids: at most {EOS_IDS}, got {len(req.eos_ids)}")
        req.done, req.counts = [False] * req.n, [0] * req.n
        if req.seed is None:
            req.seed = secrets.randbits(31)
        with self._lock:
            if not self._accepting:
                raise Closed("the server is shutting down")
            if len(self.queue) >= self.max_queue:
                raise QueueFull(f"{len(self.queue)} requests are waiting (--max-queue {self.max_queue})")
            self.queue.append(req)
            self._lock.notify()

    def wake(self) -> None:
        with self._lock:
            self._lock.notify()

    # --- compilation -----------------------------------------------------------------------------------------
    def warm(self) -> list[str]:
        """Compile and run every program once (prefill and insert per prompt bucket — insert reads the prompt's
        tokens, so it is one program per bucket too — and decode per decode batch bucket); returns what was
        compiled."""
        done = []
        for bucket in self.buckets:
            t = time.perf_counter()
            tokens, lengths = np.ones((self.rows, bucket), np.int32), np.ones(self.rows, np.int32)
            prefix, logits = self._prefill(tokens, lengths)
            jax.block_until_ready(logits)
            done.append(f"prefill[{self.rows}x{bucket}] {time.perf_counter() - t:.1f}s")
            t = time.perf_counter()
            self.state, drawn = self._insert(prefix, logits, tokens, lengths, 0, 0, 0, 0, SamplingConfig(), True, 1,
                                             ())
            jax.block_until_ready(drawn)
            done.append(f"insert[{bucket}] {time.perf_counter() - t:.1f}s")
        p = self.programs
        k = (f"{p.rounds} rounds of γ = {p.gamma} draft tokens" if self.speculative else f"{p.decode_steps} steps")
        for b in self.programs.batch_buckets:
            t = time.perf_counter()
            self.state, drawn = self._decode(np.arange(b, dtype=np.int32), np.zeros(b, bool), True)
            jax.block_until_ready(drawn)
            done.append(f"decode[{b} of {self.max_slots} slots x {k} x {self.max_len}] "
                        f"{time.perf_counter() - t:.1f}s")
        self.state = self.programs.empty_state()
        return done

    def _prefill(self, tokens, lengths):
        p = self.programs
        with jax.set_mesh(self.mesh):
            return p.prefill(*p.weights, tokens, lengths)

    def _insert(self, prefix, logits, tokens, lengths, row, slot, seed, sample, s: SamplingConfig, want_top,
                max_tokens, eos_ids):
        f32, i32 = np.float32, np.int32
        eos = np.full(EOS_IDS, -1, np.int32)
        eos[:len(eos_ids)] = eos_ids
        with jax.set_mesh(self.mesh):
            return self.programs.insert(self.state, prefix, logits, tokens, lengths, i32(row), i32(slot),
                                        np.uint32(seed), i32(sample), f32(s.temperature), i32(s.top_k),
                                        f32(s.top_p), f32(s.repetition_penalty), np.bool_(want_top), i32(max_tokens),
                                        eos)

    def _decode(self, slots, live, want_top):
        p = self.programs
        with jax.set_mesh(self.mesh):
            return p.decode(*p.weights, self.state, slots, live, np.bool_(want_top))

    # --- the loop ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="serve-engine", daemon=True)
        self._thread.start()

    def shutdown(self, drain_seconds: float = 30.0) -> None:
        """Stop taking requests, let those admitted and queued finish (at most `drain_seconds`), cancel the rest."""
        with self._lock:
            self._accepting = False
        deadline = time.monotonic() + drain_seconds
        while (self.queue or self.slots_in_use) and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            for req in list(self.queue) + [o[0] for o in self.owner if o]:
                req.cancel()
            self._lock.notify()
        deadline = time.monotonic() + 5
        while (self.queue or self.slots_in_use) and time.monotonic() < deadline:
            time.sleep(0.02)
        self._running = False
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while self._running:
            try:
                self._iteration()
            except Exception:  # a bug must not leave clients waiting forever: end every request, keep serving
                log.exception("serve engine step failed; aborting the requests in flight")
                for req in list(self.queue) + [o[0] for o in self.owner if o]:
                    for s in range(req.n):
                        self._finish(req, s, "abort")
                self.queue.clear()
                self.pending.clear()
                self.state = self.programs.empty_state()

    def _iteration(self) -> None:
        for slot, o in enumerate(self.owner):
            if o is not None and o[0].cancelled:
                self._finish(*o, "abort")
        self._admit()
        used = [i for i, o in enumerate(self.owner) if o is not None]
        sent = bool(used)
        if sent:
            b = next(b for b in self.programs.batch_buckets if b >= len(used))
            if b == self.max_slots:  # every slot, in place
                slots = list(range(b))
            else:  # the slots in use, then free ones (not live) to fill the bucket
                slots = used + [i for i, o in enumerate(self.owner) if o is None][:b - len(used)]
            who = [self.owner[i] for i in slots]
            want_top = any(o[0].top_logprobs for o in who if o)
            self.state, drawn = self._decode(np.array(slots, np.int32), np.array([o is not None for o in who]),
                                             want_top)
            self.steps += 1
            self.dispatched[b] += 1
            self.pending.append(("step", who, drawn))
        # pipelined (the dispatch just sent is read next iteration, its host work overlapping the next dispatch)
        # unless it may end a sample by max_tokens: then it is read now, so the sample's client hears at once and
        # its next request can take the slot before the next dispatch (a closed-loop client would else leave its
        # slot idle for a whole dispatch)
        hold = sent and not self._may_end()
        ready, self.pending = (self.pending[:-1], self.pending[-1:]) if hold else (self.pending, [])
        before = self.slots_in_use
        for kind, who, drawn in ready:
            self._deliver(kind, who, jax.device_get(drawn))
        freed = before - self.slots_in_use
        with self._lock:
            if freed and self.slots_in_use and not hold:  # others decode: wait a moment for the next requests
                deadline = time.monotonic() + LINGER_S
                while len(self.queue) < freed and self._running and time.monotonic() < deadline:
                    self._lock.wait(timeout=max(deadline - time.monotonic(), 0))
            elif not sent and not ready and not self.queue and self._running:
                self._lock.wait(timeout=0.1)

    def _may_end(self) -> bool:
        """Whether the dispatches not yet read may bring some sample to its max_tokens (eos ends are unforeseen)."""
        per = self.programs.tokens_per_dispatch
        unread = sum(per if kind == "step" else 1 for kind, *_ in self.pending)
        return any(o is not None and o[0].counts[o[1]] + unread >= o[0].max_tokens for o in self.owner)

    def _admit(self) -> None:
        while True:
            with self._lock:
                while self.queue and self.queue[0].cancelled:
                    req = self.queue.popleft()
                    for s in range(req.n):
                        self._finish(req, s, "abort")
                free = [i for i, o in enumerate(self.owner) if o is None]
                group, need = [], 0
                while self.queue and len(group) < self.rows and need + self.queue[0].n <= len(free):
                    if self.queue[0].cancelled:
                        break
                    req = self.queue.popleft()
                    group.append(req)
                    need += req.n
            if not group:
                return
            bucket = next(b for b in self.buckets if b >= max(len(r.prompt) for r in group))
            tokens = np.zeros((self.rows, bucket), np.int32)
            lengths = np.zeros(self.rows, np.int32)
            for i, req in enumerate(group):
                tokens[i, :len(req.prompt)] = req.prompt
                lengths[i] = len(req.prompt)
            prefix, logits = self._prefill(tokens, lengths)
            for i, req in enumerate(group):
                for s in range(req.n):
                    slot = free.pop(0)
                    self.state, drawn = self._insert(prefix, logits, tokens, lengths, i, slot, req.seed, s,
                                                     req.sampling, req.top_logprobs > 0, req.max_tokens, req.eos_ids)
                    self.owner[slot] = (req, s)
                    self.pending.append(("one", (req, s), drawn))

    def _deliver(self, kind: str, who, drawn) -> None:
        if kind == "one":  # an insert's first token: [1] arrays
            self._tokens(*who, drawn.token.tolist(), drawn.logprob.tolist(), drawn.top_ids, drawn.top_logprobs)
            return
        counts = drawn.count.tolist()
        if drawn.drafted is not None:
            self.drafted += int(drawn.drafted.sum())
            self.accepted += int(drawn.accepted.sum())
        for row, o in enumerate(who):
            if o is not None and counts[row]:
                n = counts[row]
                self._tokens(*o, drawn.token[row, :n].tolist(), drawn.logprob[row, :n].tolist(), drawn.top_ids[row],
                             drawn.top_logprobs[row])

    def _tokens(self, req: Request, sample: int, ids: list[int], logprobs: list[float], top_ids, top_logprobs) -> None:
        """Hand a sample its next tokens (`top_*`: [≥ len(ids), TOP]) until one ends it."""
        for i, (token, logprob) in enumerate(zip(ids, logprobs)):
            if req.done[sample]:
                return  # an ended sample: what the device drew past its stop string or cancel is dropped
            if req.cancelled:
                self._finish(req, sample, "abort")
                return
            top = ([(int(t), float(lp)) for t, lp in zip(top_ids[i, :req.top_logprobs],
                                                        top_logprobs[i, :req.top_logprobs])]
                   if req.top_logprobs else [])
            eos = token in req.eos_ids
            req.counts[sample] += 1
            try:
                reason = req.on_token(sample, Token(token, logprob, top, eos))
            except Exception:
                log.exception("a request's token callback failed; aborting it")
                reason = "abort"
            if eos:
                reason = "stop"
            elif reason is None and req.counts[sample] >= req.max_tokens:
                reason = "length"
            if reason is not None:
                self._finish(req, sample, reason)

    def _finish(self, req: Request, sample: int, reason: str) -> None:
        if req.done[sample]:
            return
        req.done[sample] = True
        for slot, o in enumerate(self.owner):
            if o is not None and o[0] is req and o[1] == sample:
                self.owner[slot] = None
        try:
            req.on_finish(sample, reason)
        except Exception:
            log.exception("a request's finish callback failed")
