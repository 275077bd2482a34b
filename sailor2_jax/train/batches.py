"""The batch-source protocol of the loop, and the synthetic demo/test source.

The loop takes any iterator of host (numpy) batches that also has `get_state() -> dict` (JSON-serialisable) and
`set_state(dict)` — grain's `DatasetIterator` has both — and saves that state in every checkpoint. This module sits
below the checkpoint module: it imports nothing of the training engine.

A source whose batches depend on the policy being trained (online preference tuning, post/online.py) also has
`set_policy(graphdef, params, mesh)`: the loop calls it with the live parameters before drawing each batch, so such a
source is a batch source like any other and the one loop (checkpoints, preemption, NaN guard, metrics) runs it.

`SyntheticLM` / `SyntheticPreference` are a deterministic test and demo source, not real data: packed rows of short
"documents" that count upwards from a random start with a random stride (mod the vocabulary), so a tiny model
visibly learns them in a few steps. Batch `i` depends only on (seed, i), which makes exact resume checkable, and each
process yields only its own rows of the global batch.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any, Protocol

import jax
import numpy as np

from sailor2_jax.languages import LANGUAGES


class CheckpointableIterator(Protocol):
    def __iter__(self) -> Iterator[dict[str, np.ndarray]]: ...
    def __next__(self) -> dict[str, np.ndarray]: ...
    def get_state(self) -> dict[str, Any]: ...
    def set_state(self, state: dict[str, Any]) -> None: ...


def _document(rng: np.random.Generator, length: int, vocab: int) -> np.ndarray:
    start, stride = rng.integers(0, vocab), rng.integers(1, 4)
    return (start + stride * np.arange(length)) % vocab


def packed_rows(rng: np.random.Generator, rows: int, seq_len: int, vocab: int, *, prompt_frac: float = 0.0
                ) -> dict[str, np.ndarray]:
    """Rows of packed documents: tokens/targets/loss_mask/segment_ids/positions/languages, [rows, seq_len].

    With `prompt_frac` > 0 the first part of each document is a prompt without loss (the SFT case). The last few
    positions of a row may be padding (segment 0, no loss).
    """
    out = {k: np.zeros((rows, seq_len), np.int32) for k in ("tokens", "targets", "loss_mask", "segment_ids",
                                                              "positions", "languages")}
    for r in range(rows):
        t, seg = 0, 1
        while t < seq_len - 2:
            n = int(min(rng.integers(seq_len // 4, seq_len + 1), seq_len - t))
            doc = _document(rng, n + 1, vocab)
            out["tokens"][r, t:t + n] = doc[:-1]
            out["targets"][r, t:t + n] = doc[1:]
            mask = np.ones(n, np.int32)
            mask[:int(prompt_frac * n)] = 0
            out["loss_mask"][r, t:t + n] = mask
            out["segment_ids"][r, t:t + n] = seg
            out["positions"][r, t:t + n] = np.arange(n)
            out["languages"][r, t:t + n] = rng.integers(0, len(LANGUAGES))
            t, seg = t + n, seg + 1
    return out


class _Synthetic(abc.ABC):
    """Shared iterator mechanics: batch i is a pure function of (seed, i); this process keeps its rows."""

    def __init__(self, batch_size: int, seq_len: int, vocab: int, seed: int, process_index: int | None = None,
                 process_count: int | None = None):
        self.batch_size, self.seq_len, self.vocab, self.seed = batch_size, seq_len, vocab, seed
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if batch_size % self.process_count:
            raise ValueError(f"batch size {batch_size} is not divisible by {self.process_count} processes")
        self.index = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.index])
        batch = self._global_batch(rng)
        self.index += 1
        n = self.batch_size // self.process_count
        return {k: v[self.process_index * n:(self.process_index + 1) * n] for k, v in batch.items()}

    def get_state(self) -> dict[str, Any]:
        return {"index": self.index, "seed": self.seed}

    def set_state(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"data iterator state is for seed {state['seed']}, this iterator has seed {self.seed}")
        self.index = int(state["index"])

    @abc.abstractmethod
    def _global_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The whole global batch `self.index` (every process builds it and keeps its own rows)."""


class SyntheticLM(_Synthetic):
    """Packed LM rows; `prompt_frac` > 0 masks a prompt prefix of every document (SFT-style loss masks)."""

    def __init__(self, *args, prompt_frac: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.prompt_frac = prompt_frac

    def _global_batch(self, rng):
        return packed_rows(rng, self.batch_size, self.seq_len, self.vocab, prompt_frac=self.prompt_frac)


class SyntheticPreference(_Synthetic):
    """Pairs with a shared prompt: the chosen response continues the prompt's pattern, the rejected one is noise.
    One document per row from position 0, right-padded; loss masks cover the response only."""

    def _global_batch(self, rng):
        B, T, V = self.batch_size, self.seq_len, self.vocab
        out = {}
        plen = rng.integers(T // 4, T // 2, size=B)
        rlen = {side: rng.integers(T // 8, T - plen) for side in ("chosen", "rejected")}
        docs = {"chosen": [], "rejected": []}
        for b in range(B):
            doc = _document(rng, T + 1, V)
            docs["chosen"].append(doc)
            noise = doc.copy()
            noise[plen[b]:] = rng.integers(0, V, size=T + 1 - plen[b])
            docs["rejected"].append(noise)
        for side in ("chosen", "rejected"):
            seq_BT1 = np.stack(docs[side])
            n_B = plen + rlen[side]  # real tokens in the row (prompt + response), as inputs
            real_BT = np.arange(T)[None] < n_B[:, None]
            response_BT = real_BT & (np.arange(T)[None] >= plen[:, None] - 1)  # target t predicts token t+1
            out[f"{side}_tokens"] = np.where(real_BT, seq_BT1[:, :-1], 0).astype(np.int32)
            out[f"{side}_targets"] = np.where(real_BT, seq_BT1[:, 1:], 0).astype(np.int32)
            out[f"{side}_loss_mask"] = response_BT.astype(np.int32)
            out[f"{side}_segment_ids"] = real_BT.astype(np.int32)
            out[f"{side}_positions"] = np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)).copy()
        return out
