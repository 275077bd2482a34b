"""Continuous batching: a thread that keeps a fixed set of slots decoding and fills freed slots between steps.

The loop (one thread; JetStream's orchestrator with prefill, insert and generate in one place):
  1. admit: while the queue's head fits in the free slots, prefill it (with up to R-1 more requests that fit: one
     prefill program per bucket runs R prompts) and insert each of its n samples into a slot;
  2. dispatch one decode step for every slot (the state stays on the device, donated);
  3. read the previous step's tokens (and the inserts' first tokens) and hand them to their requests.
Step t+1 is dispatched before step t's tokens are read, so the host's work overlaps the device's; the price is
that a slot that finished at step t runs one more step whose token is dropped (JetStream accepts the same).
A request ends a sample by an eos id, its `max_tokens`, its own `on_token` (stop strings, decided by the server's
text layer) or `cancel()` (a client that went away): the slot is free for the next admission at once.

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
from sailor2_jax.serve.programs import SlotPrograms

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


def prompt_buckets(max_len: int) -> list[int]:
    """Prompt lengths compiled: powers of two from 16 (generate's `length_bucket`) up to max_len, and max_len."""
    out = sorted({min(length_bucket(2 ** i), max_len) for i in range(max_len.bit_length() + 1)})
    return [b for b in out if b <= max_len]


class Engine:
    def __init__(self, model, mesh, *, max_slots: int, max_len: int, max_queue: int = 256,
                 buckets: list[int] | None = None):
        self.programs = SlotPrograms(model, mesh, slots=max_slots, max_len=max_len)
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
        self.steps = 0

    # --- what the server reads -----------------------------------------------------------------------------
    @property
    def slots_in_use(self) -> int:
        return sum(o is not None for o in self.owner)

    @property
    def queue_depth(self) -> int:
        return len(self.queue)

    def check(self, prompt_len: int, max_tokens: int, n: int) -> None:
        """A ValueError naming the field if a request cannot be served by these slots."""
        if prompt_len < 1:
            raise ValueError("prompt: at least one token is needed")
        if n > self.max_slots:
            raise ValueError(f"n: {n} samples exceed the server's {self.max_slots} slots (--max-slots)")
        if prompt_len + max_tokens > self.max_len:
            raise ValueError(f"max_tokens: the prompt's {prompt_len} tokens plus max_tokens {max_tokens} exceed the "
                             f"server's --max-len {self.max_len}")

    def submit(self, req: Request) -> None:
        self.check(len(req.prompt), req.max_tokens, req.n)
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
        """Compile and run every program once (each prefill bucket, insert, decode); returns what was compiled."""
        done = []
        for bucket in self.buckets:
            t = time.perf_counter()
            prefix, logits = self._prefill(np.ones((self.rows, bucket), np.int32), np.ones(self.rows, np.int32))
            jax.block_until_ready(logits)
            done.append(f"prefill[{self.rows}x{bucket}] {time.perf_counter() - t:.1f}s")
        t = time.perf_counter()
        self.state, drawn = self._insert(prefix, logits, np.ones((self.rows, bucket), np.int32),
                                         np.ones(self.rows, np.int32), 0, 0, 0, 0, SamplingConfig(), True)
        jax.block_until_ready(drawn)
        done.append(f"insert {time.perf_counter() - t:.1f}s")
        t = time.perf_counter()
        self.state, drawn = self._decode(np.zeros(self.max_slots, bool), True)
        jax.block_until_ready(drawn)
        done.append(f"decode[{self.max_slots} slots x {self.max_len}] {time.perf_counter() - t:.1f}s")
        self.state = self.programs.empty_state()
        return done

    def _prefill(self, tokens, lengths):
        p = self.programs
        with jax.set_mesh(self.mesh):
            return p.prefill(p.params, p.layers, tokens, lengths)

    def _insert(self, prefix, logits, tokens, lengths, row, slot, seed, sample, s: SamplingConfig, want_top):
        f32, i32 = np.float32, np.int32
        with jax.set_mesh(self.mesh):
            return self.programs.insert(self.state, prefix, logits, tokens, lengths, i32(row), i32(slot),
                                        np.uint32(seed), i32(sample), f32(s.temperature), i32(s.top_k),
                                        f32(s.top_p), f32(s.repetition_penalty), np.bool_(want_top))

    def _decode(self, live, want_top):
        p = self.programs
        with jax.set_mesh(self.mesh):
            return p.decode(p.params, p.layers, self.state, live, np.bool_(want_top))

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
        live = np.array([o is not None for o in self.owner])
        dispatched = bool(live.any())
        if dispatched:
            want_top = any(o[0].top_logprobs for o in self.owner if o)
            self.state, drawn = self._decode(live, want_top)
            self.steps += 1
            self.pending.append(("step", list(self.owner), drawn))
        ready, self.pending = (self.pending[:-1], self.pending[-1:]) if dispatched else (self.pending, [])
        for kind, who, drawn in ready:
            self._deliver(kind, who, jax.device_get(drawn))
        if not dispatched and not ready:
            with self._lock:
                if not self.queue and self._running:
                    self._lock.wait(timeout=0.1)

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
                                                     req.sampling, req.top_logprobs > 0)
                    self.owner[slot] = (req, s)
                    self.pending.append(("one", (req, s), drawn))

    def _deliver(self, kind: str, who, drawn) -> None:
        if kind == "one":
            self._token(*who, drawn, 0)
            return
        for slot, o in enumerate(who):
            if o is not None:
                self._token(*o, drawn, slot)

    def _token(self, req: Request, sample: int, drawn, row: int) -> None:
        if req.done[sample]:
            return  # the step after a finish, or a cancelled sample
        token = int(drawn.token[row])
        top = ([(int(i), float(lp)) for i, lp in zip(drawn.top_ids[row, :req.top_logprobs],
                                                    drawn.top_logprobs[row, :req.top_logprobs])]
               if req.top_logprobs else [])
        eos = token in req.eos_ids
        req.counts[sample] += 1
        try:
            reason = req.on_token(sample, Token(token, float(drawn.logprob[row]), top, eos))
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
