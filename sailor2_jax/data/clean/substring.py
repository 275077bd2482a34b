"""Exact-substring dedup as datatrove stages (recipe.md §3.4; the algorithms are in suffix.py), after MinHash and
before frequent lines, on the documents every earlier step kept.

1. index (one task per shard): the shard's documents of at least `min_bytes` bytes go into one byte file, each
   followed by 0xFF; with several shards, their anchors (k-gram hash, snippet range, snippet hash) are written too,
   sorted into one partition per task by hash.
2. exchange (one task per partition; only with several shards): the anchors of every shard in this partition; an
   anchor hash held by two or more shards is shared, and each shard that holds it is sent, for each distinct snippet
   of that hash, one copy that lies in another shard (a file per partition, sorted by destination shard).
3. find (one task per shard): the shard's own bytes plus the snippets it was sent (read from the other shards' byte
   files), one suffix array over them, and the byte ranges of the shard's documents that a repeated span covers;
   written per document, with the line hashes of the cut texts for the frequent-lines stage.
The apply stage then cuts the ranges (`SubstringCut`), drops pieces under `min_segment_bytes` and counts the bytes
removed per language.

Memory, per task: the suffix array stage holds the shard's text and the imported snippets with a 32-bit suffix array
and LCP array (about 10 bytes per byte, 18 past 2 GB), so a shard of S bytes needs ~10 S: choose `executor.tasks`
so that shards fit. Anchors cost 32 bytes per ~1/26 of the bytes (k = 50). The exchange grows with the number of
shards that share an anchor hash times its distinct snippets, small for real text (a repeated paragraph has one
snippet per anchor) but large for a 50-byte phrase quoted in many different contexts across many shards.
"""

from __future__ import annotations

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder

from sailor2_jax.data.clean import hashing, suffix
from sailor2_jax.data.clean.config import CleanConfig
from sailor2_jax.data.clean.step import CleanStep, CountedStep

TEXT, ANCHORS, CROSS = "work/substring/text", "work/substring/anchors", "work/substring/cross"
CUTS, LINES = "work/substring/cuts", "work/substring/lines"
_CHUNK_BYTES = 8 << 20  # anchors are computed over chunks of documents of about this size (~60 bytes per byte)
ANCHOR = np.dtype([("hash", "<u8"), ("snippet", "<u8"), ("start", "<u8"), ("end", "<u8")])
SENT = np.dtype([("dest", "<u8"), ("snippet", "<u8"), ("shard", "<u8"), ("start", "<u8"), ("end", "<u8")])


def _write_records(folder: DataFolder, path: str, records: np.ndarray, offsets: np.ndarray) -> None:
    with folder.open(f"{path}.bin", "wb") as f:
        f.write(records.tobytes())
    with folder.open(f"{path}.npz", "wb") as f:
        np.savez(f, offsets=offsets)


def _read_slice(folder: DataFolder, path: str, dtype: np.dtype, part: int) -> np.ndarray:
    """Records [offsets[part], offsets[part + 1]) of a file written by `_write_records`."""
    with folder.open(f"{path}.npz", "rb") as f:
        offsets = np.load(f)["offsets"]
    count = int(offsets[part + 1] - offsets[part])
    if not count:
        return np.empty(0, dtype=dtype)
    with folder.open(f"{path}.bin", "rb") as f:
        f.seek(int(offsets[part]) * dtype.itemsize)
        return np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)


class SubstringIndex(CleanStep):
    """Stage 1 (per shard): the byte file of the shard's documents and, with several shards, its anchors."""

    name = "substring dedup: shard text and anchors"
    type = "🫂 - DEDUP"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        sd = self.config.substring_dedup
        doc_ids, pieces = [], []
        for doc in data:
            if doc.metadata["reject"] is None:
                data_bytes = doc.text.encode("utf-8")
                if len(data_bytes) >= sd.min_bytes:  # a shorter document cannot hold a repeated span
                    doc_ids.append(doc.metadata["i"])
                    pieces.append(data_bytes)
        buf, starts, ends = suffix.build_buffer(pieces)
        with self.out_dir.open(f"{TEXT}/{rank:05d}.bin", "wb") as f:
            f.write(buf.tobytes())
        with self.out_dir.open(f"{TEXT}/{rank:05d}.npz", "wb") as f:
            np.savez(f, doc=np.asarray(doc_ids, dtype=np.int64), start=starts, end=ends)
        if world_size > 1:
            records = self._anchors(buf, starts, ends)
            part = records["hash"] % np.uint64(world_size)
            order = np.lexsort((records["hash"], part))
            offsets = np.searchsorted(part[order], np.arange(world_size + 1, dtype=np.uint64))
            _write_records(self.out_dir, f"{ANCHORS}/{rank:05d}", records[order], offsets)
        return
        yield  # a PipelineStep's run is a generator; this stage yields no documents

    def _anchors(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The anchors of all documents, computed a chunk of documents at a time to bound memory."""
        sd = self.config.substring_dedup
        parts, first = [], 0
        while first < len(starts):
            last = int(np.searchsorted(starts, starts[first] + _CHUNK_BYTES, side="left"))
            last = max(last, first + 1)
            base = int(starts[first])
            top = int(ends[last - 1]) + 1
            a = suffix.anchors(buf[base:top], starts[first:last] - base, ends[first:last] - base, sd.min_bytes,
                               sd.anchor_bytes)
            rec = np.empty(len(a["hash"]), dtype=ANCHOR)
            rec["hash"], rec["snippet"] = a["hash"], a["snippet"]
            rec["start"], rec["end"] = a["start"] + np.uint64(base), a["end"] + np.uint64(base)
            parts.append(rec)
            first = last
        records = np.concatenate(parts) if parts else np.empty(0, dtype=ANCHOR)
        return records[suffix.distinct_pairs(records["hash"], records["snippet"])]


class SubstringExchange(CleanStep):
    """Stage 2 (per partition): which shards share each anchor hash, and what each of them must import."""

    name = "substring dedup: shared anchors"
    type = "🫂 - DEDUP"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        rows, shard = [], []
        for s in range(world_size):
            r = _read_slice(self.out_dir, f"{ANCHORS}/{s:05d}", ANCHOR, rank)
            rows.append(r)
            shard.append(np.full(len(r), s, dtype=np.uint64))
        sent = _to_send(np.concatenate(rows), np.concatenate(shard))
        offsets = np.searchsorted(sent["dest"], np.arange(world_size + 1, dtype=np.uint64))
        _write_records(self.out_dir, f"{CROSS}/{rank:05d}", sent, offsets)
        return
        yield


def _to_send(rows: np.ndarray, shard: np.ndarray) -> np.ndarray:
    """Anchor rows of every shard → (destination, snippet, source shard, start, end), sorted by destination: for
    every hash held by two or more shards, each holder gets each distinct snippet of the hash once, from a shard
    other than itself (a snippet only the destination holds is not sent: its own text has it)."""
    if not len(rows):
        return np.empty(0, dtype=SENT)
    order = np.lexsort((shard, rows["snippet"], rows["hash"]))
    rows, shard = rows[order], shard[order]
    new_triple = np.ones(len(rows), dtype=bool)
    new_triple[1:] = ((rows["hash"][1:] != rows["hash"][:-1]) | (rows["snippet"][1:] != rows["snippet"][:-1])
                      | (shard[1:] != shard[:-1]))
    rows, shard = rows[new_triple], shard[new_triple]
    # holders: distinct (hash, shard), sorted; a hash is shared when it has two or more
    o = np.lexsort((shard, rows["hash"]))
    hh, ss = rows["hash"][o], shard[o]
    new_holder = np.ones(len(hh), dtype=bool)
    new_holder[1:] = (hh[1:] != hh[:-1]) | (ss[1:] != ss[:-1])
    holders = np.stack([hh[new_holder], ss[new_holder]], axis=1)
    hashes, n_holders = np.unique(holders[:, 0], return_counts=True)
    shared = hashes[n_holders >= 2]
    holders = holders[np.isin(holders[:, 0], shared)]
    keep = np.isin(rows["hash"], shared)
    rows, shard = rows[keep], shard[keep]
    if not len(rows):
        return np.empty(0, dtype=SENT)
    # groups: distinct (hash, snippet), rows sorted by shard within; first and second row as the copies to send
    new_group = np.ones(len(rows), dtype=bool)
    new_group[1:] = (rows["hash"][1:] != rows["hash"][:-1]) | (rows["snippet"][1:] != rows["snippet"][:-1])
    first = np.flatnonzero(new_group)
    size = np.diff(np.append(first, len(rows)))
    second = np.where(size > 1, first + 1, -1)
    # every holder of a hash × every group of the hash
    _, hold_start, hold_count = np.unique(holders[:, 0], return_index=True, return_counts=True)
    _, grp_start, grp_count = np.unique(rows["hash"][first], return_index=True, return_counts=True)
    n_pairs = hold_count * grp_count
    which = np.repeat(np.arange(len(n_pairs)), n_pairs)
    local = np.arange(int(n_pairs.sum())) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    dest = holders[hold_start[which] + local // grp_count[which], 1]
    g = grp_start[which] + local % grp_count[which]
    pick = np.where(shard[first[g]] != dest, first[g], second[g])
    ok = pick >= 0
    dest, pick = dest[ok], pick[ok]
    sent = np.empty(len(pick), dtype=SENT)
    sent["dest"], sent["snippet"], sent["shard"] = dest, rows["snippet"][pick], shard[pick]
    sent["start"], sent["end"] = rows["start"][pick], rows["end"][pick]
    return sent[np.argsort(sent["dest"], kind="stable")]


class SubstringFind(CleanStep):
    """Stage 3 (per shard): one suffix array over the shard's bytes and what it imported; the ranges to cut per
    document, and the line hashes of the texts once cut."""

    name = "substring dedup: suffix array"
    type = "🫂 - DEDUP"

    def __init__(self, config: CleanConfig, out_dir: DataFolder, tasks: int):
        super().__init__(config, out_dir)
        self.tasks = tasks

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        sd = self.config.substring_dedup
        with self.out_dir.open(f"{TEXT}/{rank:05d}.bin", "rb") as f:
            own = f.read()
        with self.out_dir.open(f"{TEXT}/{rank:05d}.npz", "rb") as f:
            index = dict(np.load(f))
        imports = self._imports(rank) if self.tasks > 1 else []
        buf, starts, ends = suffix.build_buffer(imports)
        buf = np.concatenate([np.frombuffer(own, dtype=np.uint8), buf])
        starts = np.concatenate([index["start"], starts + len(own)])
        ends = np.concatenate([index["end"], ends + len(own)])
        del imports
        ranges = suffix.repeated_ranges(buf, starts, ends, sd.min_bytes, limit=len(own))
        del buf
        # byte ranges → (document, start, end) relative to the document's text
        which = np.searchsorted(index["start"], ranges[:, 0], side="right") - 1
        doc = index["doc"][which]
        rel = ranges - index["start"][which][:, None]
        with self.out_dir.open(f"{CUTS}/{rank:05d}.npz", "wb") as f:
            np.savez(f, doc=doc, start=rel[:, 0], end=rel[:, 1])
        self.stat_update("bytes_cut", value=int((ranges[:, 1] - ranges[:, 0]).sum()))
        if self.config.frequent_lines.enabled:
            self._lines(rank, own, index, doc, rel)
        return
        yield

    def _imports(self, rank: int) -> list[bytes]:
        """The snippets the exchange sent to this shard, read from their shards' byte files; overlapping snippets
        of one document are read as one piece."""
        sent = np.concatenate([_read_slice(self.out_dir, f"{CROSS}/{p:05d}", SENT, rank)
                               for p in range(self.tasks)])
        _, first = np.unique(sent["snippet"], return_index=True)
        sent = sent[first]
        pieces = []
        for s in np.unique(sent["shard"]):
            mine = sent[sent["shard"] == s]
            merged = suffix.merge_ranges(mine["start"].astype(np.int64), mine["end"].astype(np.int64))
            with self.out_dir.open(f"{TEXT}/{int(s):05d}.bin", "rb") as f:
                for a, b in merged.tolist():
                    f.seek(a)
                    pieces.append(f.read(b - a))
        self.stat_update("snippets_imported", value=len(sent))
        self.stat_update("bytes_imported", value=sum(map(len, pieces)))
        return pieces

    def _lines(self, rank: int, own: bytes, index: dict, doc: np.ndarray, rel: np.ndarray) -> None:
        """Line hashes per document after the cut: analyse's for uncut documents, new ones for cut documents."""
        with self.out_dir.open(f"work/facts/{rank:05d}.npz", "rb") as f:
            facts = np.load(f)
            offsets, hashes = facts["line_offsets"], facts["line_hashes"]
        cuts = _by_doc(doc, rel)
        position = dict(zip(index["doc"].tolist(), range(len(index["doc"]))))
        per_doc = []
        for i in range(len(offsets) - 1):
            if i in cuts:
                k = position[i]
                text = own[index["start"][k]:index["end"][k]].decode("utf-8")
                text = suffix.cut(text, cuts[i], self.config.substring_dedup.min_segment_bytes)
                per_doc.append(hashing.line_hashes(text) if text else np.empty(0, dtype=np.uint64))
            else:
                per_doc.append(hashes[offsets[i]:offsets[i + 1]])
        with self.out_dir.open(f"{LINES}/{rank:05d}.npz", "wb") as f:
            np.savez(f, line_offsets=np.cumsum([0] + [len(h) for h in per_doc]),
                     line_hashes=np.concatenate(per_doc) if per_doc else np.empty(0, dtype=np.uint64))


def _by_doc(doc: np.ndarray, rel: np.ndarray) -> dict[int, np.ndarray]:
    """{document: its ranges (n × 2)} from parallel arrays sorted by position."""
    out: dict[int, list] = {}
    for d, r in zip(doc.tolist(), rel):
        out.setdefault(d, []).append(r)
    return {d: np.asarray(r, dtype=np.int64) for d, r in out.items()}


class SubstringCut(CountedStep):
    """Apply stage: cut the ranges stage 3 found; a document left empty is removed."""

    name = "substring dedup: cut"
    type = "✂️ - FORMAT"
    step = "substring_dedup"

    def setup(self) -> None:
        with self.out_dir.open(f"{CUTS}/{self.rank:05d}.npz", "rb") as f:
            arrays = np.load(f)
            self.cuts = _by_doc(arrays["doc"], np.stack([arrays["start"], arrays["end"]], axis=1))

    def process(self, doc: Document, lang: str) -> str | None:
        ranges = self.cuts.get(doc.metadata["i"])
        if ranges is None:
            return None
        doc.text = suffix.cut(doc.text, ranges, self.config.substring_dedup.min_segment_bytes)
        doc.metadata["edited"] = True
        return None if doc.text else "empty_after_substring_dedup"
