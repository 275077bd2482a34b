"""Mixture sampling as RegMix's `generate_weights_dirichlet` does it (mixture_config/synthesize_mixture.py).

For each of `sample_multiplier x num` candidates: one Dirichlet draw `Dir(prior_T x s)` for each of the log-spaced
strengths s, one of those kept at random; rejected if any weight exceeds `min(maximum_usage x prior, 1)` (the prior
*before* temperature); weights under `minimum` set to 0, renormalised, rounded to multiples of `minimum`. Then the
candidates are de-duplicated (sorted lexicographically, a row kept when its L1 distance to the last kept one exceeds
the threshold) and `num` of them chosen at random.

The random streams are the reference's own: numpy's legacy `RandomState` for the Dirichlet draws (drawn here as the
same gamma variates, vectorised, normalised as numpy's `dirichlet` normalises) and Python's `random.Random` for the
choice of strength and the final selection, both seeded with `seed`, so a prior and a seed give the reference's
mixtures exactly (tested against its output). One deviation: a draw whose weights are not finite (all gammas 0) is
rejected; the reference would keep NaN weights.

A search grows by sampling further batches (`seed + batch index`) that exclude mixtures already held.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence

import numpy as np

from sailor2_jax.regmix.config import SampleConfig

_CHUNK = 8192  # candidates drawn at once (memory: chunk x strengths x languages doubles)


def normalised(tokens: Mapping[str, float]) -> dict[str, float]:
    """The prior: each language's share of the tokens."""
    total = float(sum(tokens.values()))
    if total <= 0 or any(v <= 0 for v in tokens.values()):
        empty = sorted(k for k, v in tokens.items() if v <= 0)
        raise ValueError(f"every language searched over needs tokens; none for {empty or 'any'}")
    return {k: float(v) / total for k, v in tokens.items()}


@dataclasses.dataclass(frozen=True)
class SampleStats:
    candidates: int     # drawn
    accepted: int       # within the usage bound
    unique: int         # after de-duplication (and excluding mixtures held already)
    selected: int


def _candidates(prior: np.ndarray, cfg: SampleConfig, n: int, rs: np.random.RandomState, py: random.Random
                ) -> tuple[np.ndarray, int]:
    """The accepted, floored and rounded candidates among `n` draws [accepted, K], in draw order."""
    bound = np.minimum(prior * cfg.maximum_usage, 1.0)
    alpha = prior
    if cfg.temperature < 1.0:
        alpha = prior ** cfg.temperature
        alpha = alpha / np.sum(alpha)
    if cfg.min_strength == cfg.max_strength:
        strengths = np.asarray([cfg.min_strength])
    else:
        strengths = np.logspace(np.log10(cfg.min_strength), np.log10(cfg.max_strength), cfg.num_strengths)
    alpha_SK = strengths[:, None] * alpha[None, :]
    kept = []
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        gamma_mSK = rs.standard_gamma(np.broadcast_to(alpha_SK, (m,) + alpha_SK.shape))
        # numpy's dirichlet: a running sum over the components, then a multiplication by its inverse
        draws_mSK = gamma_mSK * (1.0 / np.cumsum(gamma_mSK, axis=-1)[..., -1:])
        if len(strengths) > 1:
            pick = np.asarray([py.choice(range(len(strengths))) for _ in range(m)])
        else:
            pick = np.zeros(m, int)
        x_mK = draws_mSK[np.arange(m), pick]
        kept.append(x_mK[np.all(np.isfinite(x_mK), axis=-1) & np.all(x_mK <= bound, axis=-1)])
    x = np.concatenate(kept)
    x = np.where(x < cfg.minimum, 0.0, x)
    x = x / np.sum(x, axis=1).reshape(-1, 1)
    return np.round(x / cfg.minimum) * cfg.minimum, n


def deduplicate(x: np.ndarray, threshold: float) -> list[np.ndarray]:
    """RegMix's sort_and_deduplicate: rows in lexicographic order (last column first), each kept when its L1 distance
    to the last kept row exceeds `threshold`."""
    if not len(x):
        return []
    ordered = x[np.lexsort(x.T)]
    out = [ordered[0]]
    for row in ordered[1:]:
        if np.sum(np.abs(row - out[-1])) > threshold:
            out.append(row)
    return out


def sample_mixtures(prior: Sequence[float], cfg: SampleConfig, num: int, seed: int,
                    exclude: np.ndarray | None = None) -> tuple[np.ndarray, SampleStats]:
    """`num` mixtures [num, K] over the K languages of `prior` (token shares summing to 1), none within the
    de-duplication threshold of a row of `exclude`."""
    prior = np.asarray(prior, np.float64)
    if prior.ndim != 1 or np.any(prior <= 0):
        raise ValueError(f"the prior must be positive token shares, got {prior}")
    rs, py = np.random.RandomState(seed), random.Random(seed)
    x, drawn = _candidates(prior, cfg, num * cfg.sample_multiplier, rs, py)
    unique = deduplicate(x, cfg.dedup_threshold)
    if exclude is not None and len(exclude):
        unique = [u for u in unique if np.min(np.sum(np.abs(exclude - u), axis=1)) > cfg.dedup_threshold]
    if len(unique) < num:
        raise ValueError(f"only {len(unique)} distinct mixtures among {drawn} candidates ({len(x)} within the usage "
                         f"bound), {num} wanted: raise sample.sample_multiplier or sample.maximum_usage")
    chosen = py.sample(range(len(unique)), num)  # indices drawn exactly as random.sample(unique, num) draws rows
    return np.stack([unique[i] for i in chosen]), SampleStats(drawn, len(x), len(unique), num)
