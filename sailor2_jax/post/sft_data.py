"""SFT batches from conversation files: chat template → assistant-token loss masks → first-fit packing → batches.

    files (JSONL/Parquet, messages or ShareGPT; conversation_files.py: bad records skipped and counted)
      └─ chat.encode_batch: ids and the mask of assistant contents + their <|im_end|>
           └─ over-long: cut after the last assistant turn that fits (`truncate`) or dropped (`drop`), counted
                └─ global shuffle, a new order every epoch, endless (loader.EpochShuffle); process p of P takes
                   every P-th conversation of the shuffled stream
                     └─ first-fit (or best-fit) packing of whole conversations into rows of seq_len, segment ids
                        and positions per conversation (data/packing.py), B/P rows per step → the batch contract

Targets are the next token of the same conversation and `loss_mask` is the assistant mask of each target, so the
model learns every assistant reply and its `<|im_end|>` and nothing of the system prompt, the user turns or the
role headers. The iterator's state (grain's, plus what checks that a checkpoint fits this data) goes into every
checkpoint: an SFT run resumes exactly like pre-training. The state is per process, so a run resumes on the
process count it started with.

An epoch is one pass over the conversations; packed rows per epoch are counted before training (the same first-fit
rule over the epoch's order, for every process), which is what `data.epochs` turns into steps.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, TypeVar

import grain
import numpy as np
from tqdm import tqdm

from sailor2_jax.languages import LANGUAGE_INDEX
from sailor2_jax.data.config import Batching
from sailor2_jax.data.loader import EpochShuffle
from sailor2_jax.data.packing import pack_without_splitting, sft_example, to_contract
from sailor2_jax.tokenizer import EOS_ID
from sailor2_jax.post import chat
from sailor2_jax.post.conversation_files import (Accounting, Conversation, ConversationFormat, Rejection, file_stamps,
                                      process_rows, read_conversations)

Overlong = Literal["truncate", "drop"]
Packing = Literal["first_fit", "best_fit"]
PACKING_BINS = 16          # open rows of the packer (grain flushes all of them when an example fits none)
TOKENIZE_CHUNK = 1024      # conversations per call of the batch tokenizer
T = TypeVar("T")


def tokenize_chunks(items: Iterable[T]) -> Iterator[list[T]]:
    """`items` in lists of TOKENIZE_CHUNK (the last one shorter): one batch-tokenizer call each, and a stream of
    records is never held whole as text."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == TOKENIZE_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
SYSTEM_PROMPTS = {"sailor2": chat.SAILOR2_SYSTEM_PROMPT, "qwen": chat.QWEN_SYSTEM_PROMPT, "none": None}


def system_prompt(name: str) -> str | None:
    """`sailor2` (default), `qwen`, `none` (no system message), or the text of a system prompt of one's own."""
    return SYSTEM_PROMPTS.get(name, name)


@dataclasses.dataclass(frozen=True)
class TokenizedConversation:
    ids: np.ndarray          # int32 [n]
    mask: np.ndarray         # bool [n]: assistant contents and their <|im_end|>
    language: int            # index into LANGUAGES, -1 when unknown
    conversation: Conversation
    truncated: bool = False


def fit(enc: chat.ChatEncoding, max_tokens: int, overlong: Overlong) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(ids, mask, truncated) within `max_tokens`, or None when it cannot be made to fit.

    `truncate` keeps the conversation up to the end of the last assistant turn that fits (its `<|im_end|>` and the
    newline after it: messages are delimited by special tokens, so a prefix of turns tokenises as a prefix of ids).
    """
    n = len(enc.ids)
    if n <= max_tokens:
        return enc.ids, enc.assistant_mask, False
    if overlong == "drop":
        return None
    ends = [end + 1 for _, end in enc.assistant_spans if end + 1 <= max_tokens]
    if not ends:
        return None
    return enc.ids[:ends[-1]], enc.assistant_mask[:ends[-1]], True


def tokenize_conversations(conversations: Iterable[Conversation], max_tokens: int, *, overlong: Overlong = "truncate",
                           system: str | None = chat.SAILOR2_SYSTEM_PROMPT, acc: Accounting | None = None,
                           tokenizer=None, progress: bool = True) -> list[TokenizedConversation]:
    """Encode with the chat template and fit into `max_tokens` ids; what cannot fit is counted as `too_long`."""
    acc = acc if acc is not None else Accounting()
    out: list[TokenizedConversation] = []
    bar = tqdm(desc="tokenise conversations", unit="conv", disable=not progress, leave=False)

    def flush(chunk: list[Conversation]) -> None:
        for conv, enc in zip(chunk, chat.encode_batch([c.messages for c in chunk], default_system=system,
                                                      tokenizer=tokenizer)):
            fitted = fit(enc, max_tokens, overlong)
            if fitted is None:
                acc.reject(Rejection(conv.source, "too_long", f"{len(enc.ids)} tokens > {max_tokens}"))
                continue
            ids, mask, truncated = fitted
            acc.kept += 1
            acc.truncated += truncated
            out.append(TokenizedConversation(ids, mask, LANGUAGE_INDEX.get(conv.language, -1), conv, truncated))
        bar.update(len(chunk))

    for chunk in tokenize_chunks(conversations):
        flush(chunk)
    bar.close()
    return out


def fingerprint(arrays: Iterable[np.ndarray]) -> str:
    """A digest of the token data, so a checkpoint's iterator state is never applied to other data."""
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        h.update(np.asarray(len(a), np.int64).tobytes())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def packed_rows(lengths: Sequence[int], seq_len: int, bins: int = PACKING_BINS, method: Packing = "first_fit") -> int:
    """Rows the packer emits for examples of these lengths (positions) in this order, the last partial group of
    bins included: grain's rule (fill the first (best-fitting) of `bins` open rows; when an example fits none, emit
    them all and start again with it)."""
    rows, free = 0, []
    for n in lengths:
        fits = [i for i, f in enumerate(free) if f >= n]
        if not fits and len(free) < bins:
            free.append(seq_len - n)
            continue
        if not fits:
            rows += len(free)
            free = [seq_len - n]
            continue
        i = fits[0] if method == "first_fit" else min(fits, key=lambda j: free[j])
        free[i] -= n
    return rows + len(free)


class SFTBatches:
    """This process's packed SFT batches (host numpy, the batch contract of train/objectives.py), endless.

    `batches_per_epoch`: steps one pass over the conversations fills (the largest over the processes);
    `accounting`: what reading and tokenising did with every record."""

    def __init__(self, examples: Sequence[TokenizedConversation], batching: Batching, *,
                 packing: Packing = "first_fit", accounting: Accounting | None = None, pad_id: int = EOS_ID,
                 process_index: int | None = None, process_count: int | None = None, description: str = "sft"):
        if not examples:
            raise ValueError(f"{description}: no conversations left to train on "
                             f"({'; '.join((accounting or Accounting()).lines()[:1])})")
        self.process_index, self.process_count = process_rows(batching, process_index, process_count)
        self.batching, self.packing, self.accounting = batching, packing, accounting or Accounting()
        self.description = description
        self.local_rows = batching.batch_size // self.process_count
        self.size = len(examples)
        self.fingerprint = fingerprint(e.ids for e in examples)
        items = [(e.ids, e.mask, e.language) for e in examples]
        self._lengths = np.asarray([len(e.ids) - 1 for e in examples], np.int64)
        stream = EpochShuffle(grain.MapDataset.source(items), batching.seed)
        mine = stream[self.process_index::self.process_count].to_iter_dataset()
        rows = pack_without_splitting(mine.map(lambda e: sft_example(*e)), batching.seq_len, packing, PACKING_BINS,
                                      batching.seed)
        batches = rows.batch(self.local_rows, drop_remainder=True).map(lambda b: to_contract(b, pad_id))
        self._it = iter(batches)

    @functools.cached_property
    def batches_per_epoch(self) -> int:
        """Steps per pass over the data: the packed rows of epoch 0's order on every process, the largest."""
        shuffled = EpochShuffle(grain.MapDataset.range(self.size), self.batching.seed)
        order = np.fromiter((shuffled[i] for i in range(self.size)), np.int64, self.size)
        rows = max(packed_rows(self._lengths[order[p::self.process_count]], self.batching.seq_len,
                               method=self.packing) for p in range(self.process_count))
        return max(1, math.ceil(rows / self.local_rows))

    def describe(self) -> str:
        return f"{self.description}: {self.size} conversations, {self.batches_per_epoch} steps per epoch"

    def __iter__(self) -> SFTBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._it)

    def _identity(self) -> dict[str, Any]:
        return {"source": "sft", "seed": self.batching.seed, "seq_len": self.batching.seq_len,
                "batch_size": self.batching.batch_size, "processes": self.process_count, "packing": self.packing,
                "examples": self.size, "fingerprint": self.fingerprint}

    def get_state(self) -> dict[str, Any]:
        return self._identity() | {"pipeline": self._it.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        mine = self._identity()
        differ = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if differ:
            raise ValueError(f"the data-iterator state does not fit this SFT data (saved vs now: {differ}); an SFT "
                             "run resumes on the same files, batching and process count")
        self._it.set_state(state["pipeline"])


@functools.lru_cache(maxsize=4)
def load_sft(stamps: tuple[tuple[str, int, int], ...], fmt: ConversationFormat, seq_len: int, overlong: Overlong,
             system: str, progress: bool = True) -> tuple[list[TokenizedConversation], Accounting]:
    """Read and tokenise once per process (the training and evaluation streams share it); `stamps`
    (`records.file_stamps`) name the files and key the cache, so a file changed on disk is read again."""
    acc = Accounting()
    files = [f for f, _, _ in stamps]
    examples = tokenize_conversations(read_conversations(files, fmt, acc), seq_len + 1, overlong=overlong,
                                      system=system_prompt(system), acc=acc, progress=progress)
    if not acc.balanced:  # an internal error, never the data's fault
        raise AssertionError(f"records lost: read {acc.read}, kept {acc.kept}, rejected {dict(acc.rejected)}")
    return examples, acc


def sft_batches(data_cfg, batching: Batching, progress: bool = True) -> SFTBatches:
    """The SFT source of a train config's `data` section (`BatchSourceConfig`)."""
    examples, acc = load_sft(file_stamps(data_cfg.files), data_cfg.format, batching.seq_len, data_cfg.overlong,
                             data_cfg.system_prompt, progress)
    return SFTBatches(examples, batching, packing=data_cfg.packing, accounting=acc,
                      description=f"sft {', '.join(data_cfg.files)}")

