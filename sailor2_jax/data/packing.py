"""Packing documents into fixed-length rows, and the batch contract the model and training step consume.

Batch (numpy on the host, global `jax.Array`s after `sharding.global_batch`), B rows of T tokens:
  tokens      int32 [B, T]   input token ids (padding: <|endoftext|>)
  targets     int32 [B, T]   the next token of the same document: targets[b, t] follows tokens[b, t]
  loss_mask   float32 [B, T] 1 where targets is a real target, 0 on padding (SFT: and on non-assistant tokens)
  segment_ids int32 [B, T]   1, 2, 3 ... per document in a row, 0 on padding; attention stays within a segment
  positions   int32 [B, T]   0, 1, 2 ... within each segment (restarting in every row)
  languages   int32 [B, T]   index into LANGUAGES of each token's document, -1 on padding
                             (`jax.nn.one_hot(languages, len(LANGUAGES))` is all-zero on padding)

Targets are paired with inputs *before* packing: a document [x1 .. xn, EOS] becomes inputs [x1 .. xn] and targets
[x2 .. xn, EOS], both packed together. So every packed position has a real target, including a document's last
token (which predicts the <|endoftext|> appended to it) and the last position of a row whose document continues in
the next row; no position is wasted predicting across a document boundary. The three per-token features travel as
one [n, 3] array so grain computes segment ids and positions once.
"""

from __future__ import annotations

from typing import Any, Literal

import grain
import numpy as np
from grain import experimental as gx

X = "x"  # the packed feature: columns (token, target, language) or, for SFT, (token, target, language, loss)


def document_to_columns(tokens: np.ndarray, language: int) -> dict[str, np.ndarray]:
    """[x1 .. xn, EOS] → {"x": [[x1, x2, lang], ..., [xn, EOS, lang]]}."""
    n = len(tokens) - 1
    x = np.empty((n, 3), np.int32)
    x[:, 0] = tokens[:-1]
    x[:, 1] = tokens[1:]
    x[:, 2] = language
    return {X: x}


def to_contract(batch: dict[str, np.ndarray], pad_id: int) -> dict[str, np.ndarray]:
    """Packed, batched columns → the batch contract (see the module docstring)."""
    x, seg = batch[X], batch[f"{X}_segment_ids"].astype(np.int32)
    real = seg > 0
    if x.shape[-1] == 4:  # SFT: an explicit loss column
        mask = (x[..., 3] > 0) & real
    else:
        mask = real
    return {
        "tokens": np.where(real, x[..., 0], pad_id).astype(np.int32),
        "targets": np.where(real, x[..., 1], pad_id).astype(np.int32),
        "loss_mask": mask.astype(np.float32),
        "segment_ids": seg,
        "positions": np.where(real, batch[f"{X}_positions"], 0).astype(np.int32),
        "languages": np.where(real, x[..., 2], -1).astype(np.int32),
    }


def concat_then_split(docs: grain.IterDataset, seq_len: int) -> grain.IterDataset:
    """Pre-training packing: concatenate documents and cut rows of `seq_len`; a document may span rows, no token is
    lost (grain's ConcatThenSplit, Megatron-style)."""
    return gx.ConcatThenSplitIterDataset(docs, length_struct={X: seq_len})


def sft_example(tokens: np.ndarray, loss_mask: np.ndarray, language: int) -> dict[str, np.ndarray]:
    """An SFT sequence [x1 .. xn] with a per-token loss mask (assistant tokens): inputs x1..xn-1, targets x2..xn,
    the mask of each target."""
    x = document_to_columns(tokens, language)[X]
    return {X: np.column_stack([x, np.asarray(loss_mask[1:], bool)]).astype(np.int32, copy=False)}


def pack_without_splitting(examples: grain.IterDataset, seq_len: int,
                           method: Literal["first_fit", "best_fit"] = "first_fit", num_packing_bins: int = 16,
                           seed: int = 0) -> grain.IterDataset:
    """SFT packing: whole examples into rows of `seq_len` (first-fit or best-fit over `num_packing_bins` open rows),
    never splitting one. An example longer than `seq_len` is an error: cutting a conversation is the caller's call."""

    def check(example: dict[str, Any]) -> dict[str, Any]:
        n = len(example[X])
        if n > seq_len:
            raise ValueError(f"an SFT example has {n} positions, more than seq_len={seq_len}; truncate or drop "
                             "long examples before packing")
        return example

    packer = gx.FirstFitPackIterDataset if method == "first_fit" else gx.BestFitPackIterDataset
    return packer(examples.map(check), length_struct={X: seq_len}, num_packing_bins=num_packing_bins, seed=seed,
                  shuffle_bins=False)
