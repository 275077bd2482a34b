"""Frequent-line removal (Llama 3's, recipe.md §3.1): documents go into random buckets of `bucket_docs`; a line found
in more than `max_count` documents of its bucket is removed from all of them. A line repeated inside one document
counts once, so a document's own refrain is not "frequent".

One task (`FrequentLines`) counts the line hashes of every surviving document — those analyse computed, or, after
substring dedup, those of the cut texts — and writes each shard's per-line drop mask; the apply stage
(`FrequentLineFilter`) drops the masked lines without hashing them again. Memory: about 40 bytes per line.
"""

from __future__ import annotations

import json
import math

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder

from sailor2_jax.data.clean import hashing
from sailor2_jax.data.clean.config import CleanConfig
from sailor2_jax.data.clean.step import CleanStep, CountedStep


def frequent_line_mask(digests: np.ndarray, alive: np.ndarray, line_offsets: np.ndarray, line_hashes: np.ndarray,
                       bucket_docs: int, max_count: int) -> np.ndarray:
    """Per line (of all documents, in order), whether it is frequent in its document's bucket. `digests`: a uint64
    per document, uniformly random (the text digest), which picks the bucket; lines of dead documents stay."""
    n = len(alive)
    n_buckets = max(1, math.ceil(int(alive.sum()) / bucket_docs))
    bucket = hashing.mix64(digests) % np.uint64(n_buckets)
    doc = np.repeat(np.arange(n), np.diff(line_offsets))
    live = np.flatnonzero(alive[doc])
    # (bucket, line) as one 64-bit key; the lines of one document are counted once each
    key = hashing.mix64(line_hashes[live] ^ hashing.mix64(bucket[doc[live]] + np.uint64(1)))
    order = np.lexsort((doc[live], key))
    k, d = key[order], doc[live][order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = (k[1:] != k[:-1]) | (d[1:] != d[:-1])
    keys, docs_with = np.unique(k[first], return_counts=True)
    drop = np.zeros(len(line_hashes), dtype=bool)
    drop[live] = np.isin(key, keys[docs_with > max_count])
    return drop


class FrequentLines(CleanStep):
    """One task: every shard's line hashes → frequent lines per bucket → work/lines/<shard>.npz (offsets, drop)."""

    name = "frequent lines: count per bucket, once per document"
    type = "🫂 - DEDUP"

    def __init__(self, config: CleanConfig, out_dir: DataFolder, tasks: int):
        super().__init__(config, out_dir)
        self.tasks = tasks

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        source = "work/substring/lines" if self.config.substring_dedup.enabled else "work/facts"
        digests, alive, offsets, hashes, sizes = [], [], [np.zeros(1, dtype=np.int64)], [], []
        for r in range(self.tasks):
            with self.out_dir.open(f"work/facts/{r:05d}.npz", "rb") as f:
                digests.append(np.load(f)["text"][:, 0])
            with self.out_dir.open(f"work/decisions/{r:05d}.npz", "rb") as f:
                alive.append(np.load(f)["step"] == 0)
            with self.out_dir.open(f"{source}/{r:05d}.npz", "rb") as f:
                lines = np.load(f)
                offsets.append(lines["line_offsets"][1:] + offsets[-1][-1])
                hashes.append(lines["line_hashes"])
            sizes.append(len(alive[-1]))
        line_offsets = np.concatenate(offsets)
        drop = frequent_line_mask(np.concatenate(digests), np.concatenate(alive), line_offsets,
                                  np.concatenate(hashes), self.config.frequent_lines.bucket_docs,
                                  self.config.frequent_lines.max_count)
        doc_start = 0
        for r, size in enumerate(sizes):
            shard_offsets = line_offsets[doc_start:doc_start + size + 1]
            with self.out_dir.open(f"work/lines/{r:05d}.npz", "wb") as f:
                np.savez(f, line_offsets=shard_offsets - shard_offsets[0],
                         drop=drop[shard_offsets[0]:shard_offsets[-1]])
            doc_start += size
        with self.out_dir.open("work/lines/summary.json", "w") as f:
            json.dump({"lines": len(drop), "frequent": int(drop.sum())}, f)
        return
        yield  # a PipelineStep's run is a generator; this stage yields no documents


class FrequentLineFilter(CountedStep):
    """Removes the lines `FrequentLines` marked in this shard."""

    name = "frequent-line removal"
    type = "✂️ - FORMAT"
    step = "frequent_lines"

    def setup(self) -> None:
        rank = self.rank
        with self.out_dir.open(f"work/lines/{rank:05d}.npz", "rb") as f:
            arrays = np.load(f)
            self.offsets, self.drop = arrays["line_offsets"], arrays["drop"]

    def process(self, doc: Document, lang: str) -> str | None:
        i = doc.metadata["i"]
        drop = self.drop[self.offsets[i]:self.offsets[i + 1]]
        if drop.any():
            lines = doc.text.split("\n")
            if len(lines) != len(drop):
                raise RuntimeError(f"{doc.id}: {len(lines)} lines but {len(drop)} line hashes")
            doc.text = "\n".join(line for line, d in zip(lines, drop) if not d)
            doc.metadata["edited"] = True
            self.stat_update("lines_removed", value=int(drop.sum()))
        return None if doc.text else "all_lines_frequent"
