"""Mixture sampling: the reference implementation's own output, and the sampler's statistics."""

from __future__ import annotations

import numpy as np
import pytest

from sailor2_jax.regmix.config import SampleConfig
from sailor2_jax.regmix.sample import deduplicate, normalised, sample_mixtures

# sail-sg/regmix mixture_config/synthesize_mixture.py (commit b004d3a), run as published:
#   generate_weights_dirichlet(prior, groups, MINIMUM, 16, temperature=TEMP) right after import (seeds 42), with the
#   stage-1 effective-token table (vi id th en zh my ms tl km = 102 94 92 51 50 23.5 21 10 6.5, normalised) as prior.
STAGE1_TOKENS = [102, 94, 92, 51, 50, 23.5, 21, 10, 6.5]
REFERENCE_16 = [
    [0, 0, 0.0002, 0, 0.9948, 0, 0.0026, 0.0022, 0],
    [0.2926, 0.4072, 0.0022, 0.0802, 0.1414, 0, 0.0766, 0, 0],
    [0.3744, 0.3424, 0.0044, 0.072, 0.2068, 0, 0, 0, 0],
    [0, 0.1346, 0.863, 0, 0, 0, 0, 0, 0.0024],
    [0, 0, 0.0032, 0.3092, 0.6876, 0, 0, 0, 0],
    [0, 0.2318, 0, 0, 0.7682, 0, 0, 0, 0],
    [0.1274, 0.6012, 0.1146, 0.0086, 0.137, 0.0066, 0, 0.0002, 0.0044],
    [0.003, 0, 0.5594, 0.006, 0.0008, 0.4306, 0, 0, 0],
    [0.5442, 0.0138, 0.1684, 0.0526, 0.007, 0.2072, 0.0022, 0.0046, 0],
    [0.0026, 0, 0.9974, 0, 0, 0, 0, 0, 0],
    [0, 0.6102, 0.2498, 0.1402, 0, 0, 0, 0, 0],
    [0.6432, 0.0334, 0, 0.0364, 0.004, 0.258, 0, 0.0248, 0],
    [0, 0, 0.066, 0.934, 0, 0, 0, 0, 0],
    [0, 0, 0, 0.0612, 0.936, 0, 0, 0.0028, 0],
    [0.2742, 0.1656, 0.0682, 0.2046, 0.0034, 0.106, 0.0376, 0.1406, 0],
    [0.9994, 0, 0.0004, 0, 0, 0, 0, 0, 0.0002],
]


def test_reproduces_the_reference_implementation():
    prior = np.asarray(STAGE1_TOKENS) / np.sum(STAGE1_TOKENS)
    got, stats = sample_mixtures(prior, SampleConfig(), 16, seed=42)
    np.testing.assert_allclose(got, REFERENCE_16, rtol=0, atol=1e-12)
    assert stats.candidates == 1600 and stats.selected == 16 and stats.unique <= stats.accepted < 1600


def test_statistics_floor_rounding_bound_sum():
    # a prior with rare languages, so the 15-epoch bound binds (min(15 x 0.004, 1) = 0.06) and rejects draws
    prior = np.asarray([0.5, 0.3, 0.15, 0.046, 0.004])
    cfg = SampleConfig()
    x, stats = sample_mixtures(prior, cfg, 200, seed=7)
    K, m = len(prior), cfg.minimum
    assert x.shape == (200, K)
    assert stats.accepted < stats.candidates  # the bound rejected candidates
    nonzero = x[x > 0]
    assert nonzero.min() >= m - 1e-12  # floor: nothing in (0, minimum)
    np.testing.assert_allclose(x / m, np.round(x / m), atol=1e-6)  # rounding to multiples of `minimum`
    # sum: 1 up to the rounding of each of the K weights
    assert np.all(np.abs(x.sum(axis=1) - 1) <= K * m / 2 + 1e-12)
    # bound on the raw draw, min(15 p, 1); floored weights renormalise the rest by at most 1/(1 - K m)
    bound = np.minimum(cfg.maximum_usage * prior, 1.0)
    assert np.all(x <= bound / (1 - K * m) + m / 2 + 1e-12)
    assert x[:, -1].max() > 0.5 * bound[-1]  # the rare language is sampled up to near its bound
    # distinct: no two mixtures within the de-duplication threshold
    d = np.abs(x[:, None] - x[None]).sum(-1) + np.eye(len(x)) * 9
    assert d.min() > cfg.dedup_threshold


def test_strengths_and_temperature_shape_the_draws():
    prior = np.asarray([0.6, 0.2, 0.1, 0.1])
    one = dict(min_strength=200, max_strength=200)
    flat, _ = sample_mixtures(prior, SampleConfig(temperature=1.0, **one), 100, 0)
    tempered, _ = sample_mixtures(prior, SampleConfig(**one), 100, 0)
    # a strength of 200 concentrates the draws around the prior; temperature 0.5 moves that centre to the shares'
    # square roots, renormalised; log-spaced strengths from 0.1 spread them from corners to the centre
    np.testing.assert_allclose(flat.mean(0), prior, atol=0.01)
    np.testing.assert_allclose(tempered.mean(0), np.sqrt(prior) / np.sqrt(prior).sum(), atol=0.01)
    spread, _ = sample_mixtures(prior, SampleConfig(), 100, 0)
    assert (spread.max(1) > 0.99).mean() >= 0.05 and spread.std(0).min() > 3 * flat.std(0).max()


def test_growth_excludes_held_mixtures_and_is_deterministic():
    prior = np.asarray([0.4, 0.3, 0.2, 0.1])
    first, _ = sample_mixtures(prior, SampleConfig(), 30, seed=42)
    again, _ = sample_mixtures(prior, SampleConfig(), 30, seed=42)
    assert np.array_equal(first, again)
    more, stats = sample_mixtures(prior, SampleConfig(), 30, seed=43, exclude=first)
    assert stats.selected == 30
    assert np.abs(more[:, None] - first[None]).sum(-1).min() > 1e-5


def test_deduplicate_and_errors():
    rows = np.asarray([[0.5, 0.5], [0.5, 0.5 + 1e-7], [0.2, 0.8]])
    assert len(deduplicate(rows, 1e-5)) == 2
    with pytest.raises(ValueError, match="distinct mixtures"):
        sample_mixtures(np.asarray([0.5, 0.5]), SampleConfig(sample_multiplier=1), 50, seed=0)
    with pytest.raises(ValueError, match="needs tokens; none for \\['km'\\]"):
        normalised({"vi": 10, "km": 0})
