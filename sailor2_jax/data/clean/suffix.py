"""Exact-substring dedup on byte buffers (recipe.md §3.4): every copy of a byte span of at least `min_bytes` that
occurs twice is found with a suffix array, and anchors let shards find the spans they share with other shards.

A buffer holds documents (or imported pieces of other shards' documents), each followed by the byte 0xFF, which no
UTF-8 text contains. A match never crosses a segment's end.

Within a buffer (`repeated_ranges`): the suffix array (libdivsufsort, through `pydivsufsort`) puts suffixes that share
a prefix side by side, and Kasai's LCP array gives each adjacent pair's common prefix. A window of `min_bytes` that
occurs at two places makes both suffixes part of a run of pairs with LCP ≥ `min_bytes`, so marking [p, p + lcp) for
both suffixes of every such pair (the LCP cut at each suffix's segment end) marks exactly the bytes covered by a
repeated window: every copy of every repeated span, the first one included, as Google's `deduplicate-text-datasets`
(`self-similar` then `collect`) does.

Across shards (`anchors`): a byte is cut iff some `min_bytes` window W covering it occurs twice. Hash the k-grams
(k = `anchor_bytes` < `min_bytes`); W covers w = min_bytes − k + 1 of them, and the position of their minimum hash
depends on W's content alone. A k-gram position is an anchor if it holds the minimum of some window, so two copies of
W have anchors with the same hash, and the "snippet" of an anchor — the bytes of all windows containing its k-gram,
[j − w + 1, j + min_bytes) cut to the document — holds W. A shard that imports, for each of its anchor hashes, the
distinct snippets of that hash from other shards, appended to its own buffer, finds every window it shares with
another shard with the same suffix array (winnowing, Schleimer et al. 2003: about 2 / (w + 1) of the positions are
anchors, so the exchange is a fraction of the text).
"""

from __future__ import annotations

import numpy as np
from pydivsufsort import divsufsort, kasai
from scipy.ndimage import maximum_filter1d, minimum_filter1d

from sailor2_jax.data.clean import hashing

_MAX32 = np.iinfo(np.uint32).max


def build_buffer(pieces: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(buffer, starts, ends): the pieces each followed by 0xFF, and where each piece lies."""
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    starts = np.cumsum(lengths + 1) - (lengths + 1)
    buf = np.frombuffer(bytearray(b"".join(p + b"\xff" for p in pieces)), dtype=np.uint8)
    return buf, starts, starts + lengths


def repeated_ranges(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, min_bytes: int,
                    limit: int | None = None) -> np.ndarray:
    """Merged [start, end) byte ranges (n × 2, sorted) covered by a window of ≥ `min_bytes` bytes occurring at
    least twice in `buf`, whose segments are [starts[i], ends[i]) (sorted). Only ranges below `limit` are returned
    (a shard's own bytes come first, what it imported from other shards after)."""
    limit = len(buf) if limit is None else limit
    if len(buf) < 2 * min_bytes:
        return np.empty((0, 2), dtype=np.int64)
    if not buf.flags.writeable:  # pydivsufsort hands the array to C through ctypes, which refuses read-only memory
        buf = buf.copy()
    sa = divsufsort(buf)
    lcp = kasai(buf, sa)  # lcp[i]: common prefix of the suffixes sa[i] and sa[i + 1]
    pairs = np.flatnonzero(lcp[:-1] >= min_bytes)
    common = lcp[pairs].astype(np.int64)
    del lcp
    a, b = sa[pairs].astype(np.int64), sa[pairs + 1].astype(np.int64)
    del sa
    # a common prefix may run on through a separator into the next segment: cut it at both segments' ends
    common = np.minimum(common, np.minimum(_segment_end(a, starts, ends) - a, _segment_end(b, starts, ends) - b))
    keep = common >= min_bytes
    common, a, b = common[keep], a[keep], b[keep]
    begin = np.concatenate([a, b])
    stop = begin + np.concatenate([common, common])
    own = begin < limit
    return merge_ranges(begin[own], stop[own])


def _segment_end(pos: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    return ends[np.searchsorted(starts, pos, side="right") - 1]


def merge_ranges(begin: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """The union of [begin[i], stop[i]) as sorted, disjoint, non-touching ranges (n × 2)."""
    if not len(begin):
        return np.empty((0, 2), dtype=np.int64)
    order = np.argsort(begin, kind="stable")
    begin, stop = begin[order], stop[order]
    reach = np.maximum.accumulate(stop)
    new = np.ones(len(begin), dtype=bool)
    new[1:] = begin[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(begin)) - 1
    return np.stack([begin[first], reach[last]], axis=1)


def anchors(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, min_bytes: int,
            anchor_bytes: int) -> dict[str, np.ndarray]:
    """The anchors of every segment of at least `min_bytes` bytes (see the module docstring): the k-gram hash,
    the snippet [start, end) in buffer offsets and the snippet's hash, one row per distinct (hash, snippet)."""
    k, w = anchor_bytes, min_bytes - anchor_bytes + 1
    if not 0 < k < min_bytes:
        raise ValueError(f"anchor_bytes must be in (0, {min_bytes}), got {k}")
    n = len(buf)
    prefix = hashing.prefix_hashes(buf.astype(np.uint64))
    pos = np.arange(max(n - k + 1, 0))
    seg_end = np.repeat(ends, np.diff(np.append(starts, n)))[: len(pos)]  # each position's segment end
    valid_gram = pos + k <= seg_end
    h64 = np.zeros(len(pos), dtype=np.uint64)
    h64[valid_gram] = hashing.substring_hashes(prefix, pos[valid_gram], pos[valid_gram] + k)
    # the minimum is taken on the top 32 bits (scipy's filters compute in float64, exact for uint32); a tie between
    # two k-grams makes both anchors, which costs an import at most. The exchange key is the full 64-bit hash.
    g = (h64 >> np.uint64(32)).astype(np.uint32)
    g[~valid_gram] = _MAX32
    # M[a]: the smallest k-gram hash of window a (k-grams a .. a + w − 1); windows that leave their segment count 0
    window_min = minimum_filter1d(g, w, origin=-(w // 2), mode="constant", cval=_MAX32)
    window_min[pos + min_bytes > seg_end] = 0
    # j is an anchor if it holds the minimum of a window containing it: the largest such minimum equals g[j]
    best = maximum_filter1d(window_min, w, origin=(w - 1) // 2, mode="constant", cval=0)
    j = np.flatnonzero((best == g) & valid_gram)
    seg_start = starts[np.searchsorted(starts, j, side="right") - 1]
    snip_start = np.maximum(j - (w - 1), seg_start)
    snip_end = np.minimum(j + min_bytes, seg_end[j])
    out = {"hash": h64[j], "start": snip_start.astype(np.uint64), "end": snip_end.astype(np.uint64),
           "snippet": hashing.substring_hashes(prefix, snip_start, snip_end)}
    return {key: v[distinct_pairs(out["hash"], out["snippet"])] for key, v in out.items()}


def distinct_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Indices (in order) of the first row of each distinct (a, b) pair of uint64s, through one 64-bit key per
    pair and a 1-D unique (a collision drops one row: probability ~n²/2⁶⁵, 4·10⁻⁷ for 4M anchors)."""
    _, first = np.unique(hashing.mix64(a ^ hashing.mix64(b)), return_index=True)
    return np.sort(first)


def cut(text: str, ranges: np.ndarray, min_segment_bytes: int) -> str:
    """`text` without the byte ranges (n × 2, into its UTF-8 bytes), each widened to whole characters. As sailcraft's
    finishing script, the pieces left between cuts under `min_segment_bytes` bytes are dropped; the others are
    joined by line breaks, with lines stripped and empty lines dropped as normalisation leaves them."""
    data = text.encode("utf-8")
    pieces, at = [], 0
    for a, b in ranges.tolist():
        while a > 0 and data[a] & 0xC0 == 0x80:  # a continuation byte: the character starts before
            a -= 1
        while b < len(data) and data[b] & 0xC0 == 0x80:
            b += 1
        if a > at:
            pieces.append(data[at:a])
        at = max(at, b)
    pieces.append(data[at:])
    kept = b"\n".join(p for p in pieces if len(p) >= min_segment_bytes).decode("utf-8")
    return "\n".join(line for line in (x.strip() for x in kept.split("\n")) if line)
