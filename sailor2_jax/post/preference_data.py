"""Preference batches from files: (prompt, chosen, rejected) → the layout the DPO-family objectives take.

Each side of a pair is the prompt and that response rendered with the chat template, one pair per row from
position 0, right-padded to `seq_len`: `chosen_tokens`/`targets`/`loss_mask`/`segment_ids`/`positions` and the same
for `rejected_` (train/objectives.py). The loss masks cover the response's assistant contents and their
`<|im_end|>` (never the prompt), so log π(y|x) sums over exactly the response tokens, as Oat's does.

A pair whose longer side does not fit is dropped (`overlong: drop`) or has its responses cut at `seq_len`
(`truncate`, as TRL's `max_length`; a response that keeps no token is dropped); both are counted. Batch i holds
positions [iB, (i+1)B) of a globally shuffled, endless stream of pairs (a new order every epoch); process p keeps
its B/P rows. The state is the batch index.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import grain
import numpy as np
from tqdm import tqdm

from sailor2_jax.data.config import Batching
from sailor2_jax.data.loader import EpochShuffle
from sailor2_jax.tokenizer import EOS_ID
from sailor2_jax.post import chat
from sailor2_jax.post.conversation_files import (Accounting, PreferencePair, Rejection, file_stamps, process_rows,
                                      read_preferences)
from sailor2_jax.post.sft_data import Overlong, fingerprint, system_prompt, tokenize_chunks

SIDES = ("chosen", "rejected")


@dataclasses.dataclass(frozen=True)
class EncodedPair:
    ids: dict[str, np.ndarray]     # side → int32 [n]: prompt + response
    mask: dict[str, np.ndarray]    # side → bool [n]: the response's assistant tokens
    pair: PreferencePair
    truncated: bool = False

    def row(self, side: str, seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
        """One side as a right-padded row of the batch contract (keys without the side prefix)."""
        ids, mask = self.ids[side], self.mask[side]
        n = len(ids) - 1
        out = {"tokens": np.full(seq_len, pad_id, np.int32), "targets": np.full(seq_len, pad_id, np.int32),
               "loss_mask": np.zeros(seq_len, np.int32), "segment_ids": np.zeros(seq_len, np.int32),
               "positions": np.arange(seq_len, dtype=np.int32)}
        out["tokens"][:n], out["targets"][:n] = ids[:-1], ids[1:]
        out["loss_mask"][:n] = mask[1:]
        out["segment_ids"][:n] = 1
        return out


def encode_pairs(pairs: Iterable[PreferencePair], max_tokens: int, *, overlong: Overlong = "drop",
                 system: str | None = chat.SAILOR2_SYSTEM_PROMPT, acc: Accounting | None = None, tokenizer=None,
                 progress: bool = True) -> list[EncodedPair]:
    """Both sides encoded, the prompt's tokens masked out, fitted into `max_tokens` ids per side."""
    acc = acc if acc is not None else Accounting()
    out: list[EncodedPair] = []
    bar = tqdm(desc="tokenise preference pairs", unit="pair", disable=not progress, leave=False)

    def flush(chunk: list[PreferencePair]) -> None:
        encode = functools.partial(chat.encode_batch, default_system=system, tokenizer=tokenizer)
        prompts = encode([p.prompt for p in chunk])
        sides = {s: encode([p.prompt + getattr(p, s) for p in chunk]) for s in SIDES}
        for i, pair in enumerate(chunk):
            # the prompt ends in "<|im_end|>\n" before a special token, so its ids are a prefix of each side's
            n_prompt = len(prompts[i].ids)
            ids, mask, cut = {}, {}, False
            for s in SIDES:
                enc = sides[s][i]
                ids[s] = enc.ids
                mask[s] = enc.assistant_mask & (np.arange(len(enc.ids)) >= n_prompt)
                if len(ids[s]) > max_tokens:
                    cut = True
                    ids[s], mask[s] = ids[s][:max_tokens], mask[s][:max_tokens]
            longest = max(len(sides[s][i].ids) for s in SIDES)
            if cut and (overlong == "drop" or not all(mask[s][1:].any() for s in SIDES)):
                acc.reject(Rejection(pair.source, "too_long", f"{longest} tokens > {max_tokens}"))
                continue
            acc.kept += 1
            acc.truncated += cut
            out.append(EncodedPair(ids, mask, pair, cut))
        bar.update(len(chunk))

    for chunk in tokenize_chunks(pairs):
        flush(chunk)
    bar.close()
    return out


class PreferenceBatches:
    """This process's rows of B pairs per step (host numpy), endless; `batches_per_epoch` = ceil(pairs / B)."""

    def __init__(self, pairs: Sequence[EncodedPair], batching: Batching, *, accounting: Accounting | None = None,
                 pad_id: int = EOS_ID, process_index: int | None = None, process_count: int | None = None,
                 description: str = "preference"):
        if not pairs:
            raise ValueError(f"{description}: no preference pairs left to train on "
                             f"({'; '.join((accounting or Accounting()).lines()[:1])})")
        self.process_index, self.process_count = process_rows(batching, process_index, process_count)
        self.batching, self.accounting, self.description = batching, accounting or Accounting(), description
        self.pad_id = pad_id
        self.pairs = list(pairs)
        if (longest := max(len(p.ids[s]) for p in self.pairs for s in SIDES)) > batching.seq_len + 1:
            raise ValueError(f"{description}: a pair has {longest} tokens, more than seq_len {batching.seq_len} + 1 "
                             "(encode the pairs with max_tokens = seq_len + 1)")
        self.fingerprint = fingerprint(p.ids[s] for p in self.pairs for s in SIDES)
        self._stream = EpochShuffle(grain.MapDataset.source(self.pairs), batching.seed)
        self.index = 0

    @property
    def batches_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.pairs) / self.batching.batch_size))

    def describe(self) -> str:
        return f"{self.description}: {len(self.pairs)} pairs, {self.batches_per_epoch} steps per epoch"

    def __iter__(self) -> PreferenceBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        B, T = self.batching.batch_size, self.batching.seq_len
        n = B // self.process_count
        start = self.index * B + self.process_index * n
        rows = [self._stream[start + r] for r in range(n)]
        self.index += 1
        out = {}
        for side in SIDES:
            sides = [p.row(side, T, self.pad_id) for p in rows]
            out |= {f"{side}_{k}": np.stack([r[k] for r in sides]) for k in sides[0]}
        return out

    def _identity(self) -> dict[str, Any]:
        return {"source": "preference", "seed": self.batching.seed, "seq_len": self.batching.seq_len,
                "batch_size": self.batching.batch_size, "pairs": len(self.pairs), "fingerprint": self.fingerprint}

    def get_state(self) -> dict[str, Any]:
        return self._identity() | {"index": self.index}

    def set_state(self, state: dict[str, Any]) -> None:
        mine = self._identity()
        differ = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if differ:
            raise ValueError(f"the data-iterator state does not fit this preference data (saved vs now: {differ})")
        self.index = int(state["index"])


@functools.lru_cache(maxsize=4)
def load_preferences(stamps: tuple[tuple[str, int, int], ...], seq_len: int, overlong: Overlong, system: str,
                     progress: bool = True) -> tuple[list[EncodedPair], Accounting]:
    """Read and encode once per process; `stamps` (`records.file_stamps`) name the files and key the cache."""
    acc = Accounting()
    pairs = encode_pairs(read_preferences([f for f, _, _ in stamps], acc), seq_len + 1, overlong=overlong, system=system_prompt(system),
                         acc=acc, progress=progress)
    if not acc.balanced:
        raise AssertionError(f"records lost: read {acc.read}, kept {acc.kept}, rejected {dict(acc.rejected)}")
    return pairs, acc


def preference_batches(data_cfg, batching: Batching, progress: bool = True) -> PreferenceBatches:
    """The preference source of a train config's `data` section (`BatchSourceConfig`)."""
    pairs, acc = load_preferences(file_stamps(data_cfg.files), batching.seq_len, data_cfg.overlong, data_cfg.system_prompt,
                                  progress)
    return PreferenceBatches(pairs, batching, accounting=acc, description=f"preference {', '.join(data_cfg.files)}")
