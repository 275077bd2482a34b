"""Vectorised 64-bit hashing of substrings: every window of a text is hashed with numpy, no Python loop per window.

A text becomes an array of code points c_k; the prefix sums H[i] = Σ_{k<i} (c_k+1)·P^k (mod 2^64, numpy's wrapping
uint64 arithmetic) give the hash of any substring [s, e) as (H[e] − H[s])·P^−s, since P is odd and so invertible
mod 2^64. A splitmix64 finaliser then spreads the bits. The hashes are stable across processes and machines (unlike
Python's `hash`), which the cross-task dedup steps need.
"""

from __future__ import annotations

import hashlib

import numpy as np

_P = np.uint64(0x9E3779B97F4A7C15 | 1)
_P_INV = np.uint64(pow(int(_P), -1, 1 << 64))
_powers = np.ones(1, dtype=np.uint64)
_inv_powers = np.ones(1, dtype=np.uint64)


def _ensure_powers(n: int) -> None:
    global _powers, _inv_powers
    if len(_powers) > n:
        return
    size = max(n + 1, 2 * len(_powers), 4096)
    _powers = np.cumprod(np.full(size, _P, dtype=np.uint64))
    _powers = np.concatenate([np.ones(1, np.uint64), _powers[:-1]])
    _inv_powers = np.cumprod(np.full(size, _P_INV, dtype=np.uint64))
    _inv_powers = np.concatenate([np.ones(1, np.uint64), _inv_powers[:-1]])


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (a bijection on uint64), applied element-wise."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def prefix_hashes(cps: np.ndarray) -> np.ndarray:
    """H with H[0] = 0 and H[i] = Σ_{k<i} (c_k+1)·P^k."""
    _ensure_powers(len(cps))
    h = np.empty(len(cps) + 1, dtype=np.uint64)
    h[0] = 0
    np.cumsum((cps + np.uint64(1)) * _powers[: len(cps)], out=h[1:])
    return h


def substring_hashes(prefix: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hashes of the substrings [starts[i], ends[i]) of the text behind `prefix` (equal substrings, equal hashes)."""
    _ensure_powers(len(prefix))
    return mix64((prefix[ends] - prefix[starts]) * _inv_powers[starts])


def char_ngram_hashes(text: str, n: int) -> np.ndarray:
    """Hashes of all character n-grams of `text` (empty if the text is shorter than n)."""
    cps = codepoints(text)
    if len(cps) < n:
        return np.empty(0, dtype=np.uint64)
    starts = np.arange(len(cps) - n + 1)
    return substring_hashes(prefix_hashes(cps), starts, starts + n)


def _pieces(cps: np.ndarray, sep: str) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the pieces between the `sep` characters of a code point array."""
    cuts = np.flatnonzero(cps == ord(sep))
    return np.concatenate([[0], cuts + 1]), np.concatenate([cuts, [len(cps)]])


def token_ngram_hashes(joined: str, n: int) -> np.ndarray:
    """Hashes of the word n-grams of `joined`, a string of tokens separated by single spaces. Fewer than n tokens
    give one hash of the whole string, so short documents are still compared (exactly)."""
    if not joined:
        return np.empty(0, dtype=np.uint64)
    cps = codepoints(joined)
    starts, ends = _pieces(cps, " ")
    prefix = prefix_hashes(cps)
    if len(starts) < n:
        return substring_hashes(prefix, starts[:1], ends[-1:])
    return substring_hashes(prefix, starts[: len(starts) - n + 1], ends[n - 1:])


def digest128(data: bytes) -> tuple[int, int]:
    """A 128-bit digest as two uint64 halves: collisions stay negligible at billions of documents."""
    d = hashlib.blake2b(data, digest_size=16).digest()
    return int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little")


def line_hashes(text: str) -> np.ndarray:
    """Hashes of the lines of `text` (split on "\\n"), in order; equal lines give equal hashes."""
    cps = codepoints(text)
    return substring_hashes(prefix_hashes(cps), *_pieces(cps, "\n"))
