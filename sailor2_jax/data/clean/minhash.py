"""MinHash near-dedup, vectorised: shingles → 256 min-hashes → 25 band keys → connected components.

Parameters follow sailcraft's text-dedup run (recipe.md §3.3): word 5-grams, 256 permutations, 25 bands × 10 rows
(Jaccard 0.7), one document kept per cluster (the first in input order). The words are those the heuristics count
(`text.words`: lowercased, whitespace-split or ICU words for th/lo/km/my/zh, punctuation stripped from their ends),
so one definition of a word serves every step and the text is tokenised once; text-dedup splits on `\\W` instead,
which differs only inside tokens such as "don't" or "e-mail".

Speed: the shingles of a document are hashed at once (hashing.py); the permutations are h·a_i + b_i (mod 2^32)
on the top 32 bits of each shingle hash, for odd a_i — bijections of the 32-bit space, like text-dedup's 32-bit
values — evaluated as one (shingles × 256) uint32 matrix per document, in a reused buffer, and reduced with
`min(axis=0)`. No Python loop runs per shingle or per permutation. Measured on 3 KB documents: uint32 is 2× faster
than uint64 (half the memory traffic), and a per-document `min(axis=0)` 4× faster than one `np.minimum.reduceat`
over a batch (reduceat along axis 0 does not vectorise across the 256 columns).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sailor2_jax.data.clean import hashing
from sailor2_jax.data.clean.config import MinHashConfig

_BLOCK_ROWS = 2048  # rows of the (shingles × permutations) matrix per block: 2 MiB of uint32


class MinHasher:
    def __init__(self, params: MinHashConfig | None = None):
        self.params = params = params or MinHashConfig()
        rng = np.random.default_rng(params.seed)
        self._a = rng.integers(0, 2**32, size=params.num_perm, dtype=np.uint32) | np.uint32(1)
        self._b = rng.integers(0, 2**32, size=params.num_perm, dtype=np.uint32)
        self._band_weights = hashing.mix64(np.arange(1, params.rows + 1, dtype=np.uint64))

    def shingles(self, words: list[str]) -> np.ndarray:
        """uint32 hashes of the word n-grams (the top half of the 64-bit substring hashes)."""
        h = hashing.token_ngram_hashes(" ".join(words), self.params.ngram)
        if not len(h):  # only separators: still one shingle, so the document is compared rather than dropped
            h = hashing.token_ngram_hashes("\x00", 1)
        return (h >> np.uint64(32)).astype(np.uint32)

    def signatures(self, shingle_sets: list[np.ndarray]) -> np.ndarray:
        """(n_docs, num_perm) uint32 min-hashes; each set must be non-empty."""
        out = np.empty((len(shingle_sets), self.params.num_perm), dtype=np.uint32)
        buf = np.empty((_BLOCK_ROWS, self.params.num_perm), dtype=np.uint32)
        for i, shingles in enumerate(shingle_sets):
            out[i] = np.iinfo(np.uint32).max
            for j in range(0, len(shingles), _BLOCK_ROWS):  # long documents in blocks that stay in cache
                block = buf[: min(_BLOCK_ROWS, len(shingles) - j)]
                np.multiply(shingles[j:j + _BLOCK_ROWS, None], self._a, out=block)
                np.add(block, self._b, out=block)
                np.minimum(out[i], block.min(axis=0), out=out[i])
        return out

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """(n_docs, bands) uint64: one key per band, equal keys ⇔ (almost surely) equal rows."""
        p = self.params
        rows = signatures[:, : p.bands * p.rows].astype(np.uint64).reshape(len(signatures), p.bands, p.rows)
        return hashing.mix64((rows * self._band_weights).sum(axis=2, dtype=np.uint64))


def cluster_duplicates(band_keys: np.ndarray) -> np.ndarray:
    """For documents in priority order (row 0 first), return for each the row of the document it duplicates, or −1
    for the one kept per cluster. Documents sharing a key in any band are joined (union of all candidate pairs, as
    text-dedup and datatrove do); each cluster keeps its first row."""
    n = len(band_keys)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    src, dst = [], []
    for band in band_keys.T:
        order = np.argsort(band, kind="stable")
        same = band[order[1:]] == band[order[:-1]]
        src.append(order[:-1][same])
        dst.append(order[1:][same])
    src_a, dst_a = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(src_a), dtype=np.int8), (src_a, dst_a)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    keeper = first[labels]
    return np.where(keeper == np.arange(n), -1, keeper)
