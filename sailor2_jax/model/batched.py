"""Scoring many variable-length examples with one jitted function: batched by length, few compiled shapes.

Examples (dicts of equal-length 1-D arrays, e.g. `tokens`/`targets`/`loss_mask`) are sorted by length and cut into
batches of `batch_size` rows, each right-padded to a multiple of `bucket` positions (so only a handful of shapes
compile) and filled up to `batch_size` rows with padding rows whose results are dropped. Rows are split over the
mesh's data-parallel axes. Results come back per example, in the examples' order. Used by the perplexity scorer
(post/select.py) and the reward scorer (model/reward.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm import tqdm

from sailor2_jax.sharding import batch_sharding, logical_size

Example = Mapping[str, np.ndarray]


def padded_batch(examples: Sequence[Example], rows: int, length: int, pad: Mapping[str, int]) -> dict[str, np.ndarray]:
    """`examples` as [rows, length] arrays per key, right-padded with `pad[key]` (extra rows are all padding)."""
    out = {k: np.full((rows, length), pad[k], np.asarray(v).dtype) for k, v in examples[0].items()}
    for r, ex in enumerate(examples):
        for k, v in ex.items():
            out[k][r, :len(v)] = v
    return out


def apply_batched(step: Callable[[Any, dict[str, jax.Array]], jax.Array], params: Any, examples: Sequence[Example],
                  *, mesh: Mesh, batch_size: int, pad: Mapping[str, int], bucket: int = 64,
                  desc: str = "score", progress: bool = True) -> np.ndarray:
    """`step(params, batch) -> [B, ...]` (jitted by the caller) over every example; returns [n, ...] in order.

    `batch_size` is rounded up to a multiple of the data-parallel devices. Every process passes the same
    `examples`: each puts its own devices' rows of a batch on them, and all get every result back."""
    if not examples:
        return np.zeros((0,), np.float32)
    data_parallel = logical_size("batch", mesh)
    rows = math.ceil(batch_size / data_parallel) * data_parallel
    lengths = np.asarray([len(next(iter(ex.values()))) for ex in examples])
    order = np.argsort(lengths, kind="stable")
    results: list[np.ndarray | None] = [None] * len(examples)
    starts = range(0, len(examples), rows)
    with jax.set_mesh(mesh):
        pending = []
        for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
            idx = order[start:start + rows]
            length = max(bucket, math.ceil(int(lengths[idx].max()) / bucket) * bucket)
            padded = padded_batch([examples[i] for i in idx], rows, length, pad)
            batch = {k: jax.make_array_from_callback(v.shape, batch_sharding(mesh, v.ndim), lambda i, v=v: v[i])
                     for k, v in padded.items()}
            pending.append((idx, step(params, batch)))  # dispatched; read back below, so batches overlap
            if len(pending) > 2:
                _collect(pending.pop(0), results)
        for item in pending:
            _collect(item, results)
    return np.stack(results)


def _collect(item: tuple[np.ndarray, jax.Array], results: list) -> None:
    idx, out = item
    host = np.asarray(multihost_utils.process_allgather(out, tiled=True))  # rows held by other processes too
    for r, i in enumerate(idx):
        results[i] = host[r]

