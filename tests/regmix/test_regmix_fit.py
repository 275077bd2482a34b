"""Regression and search: a planted relation between mixture weights and losses is recovered, and its optimum found."""

from __future__ import annotations

import numpy as np
import pytest

from sailor2_jax.regmix.config import FitConfig, SearchConfig
from sailor2_jax.regmix.fit import OBJECTIVE, fit, is_heldout, target_function
from sailor2_jax.regmix.search import search

LANGS = ["vi", "id", "th", "km"]
OPTIMUM = np.asarray([0.4, 0.3, 0.2, 0.1])
CURVATURE = np.asarray([4.0, 3.0, 2.0, 5.0])


def planted(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mixtures and per-language losses 2 + c_k (w_k - o_k)^2 + noise: their sum is lowest at o."""
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.full(len(LANGS), 0.8), n)
    return w, 2.0 + CURVATURE * (w - OPTIMUM) ** 2 + rng.normal(0, 0.002, (n, len(LANGS)))


def test_regressor_recovers_a_planted_relation_and_the_search_its_optimum():
    w, losses = planted(400)
    result = fit(list(range(400)), w, losses, LANGS, FitConfig())
    assert 0.2 < result.heldout.mean() < 0.45  # about a third held out
    assert set(result.models) == {OBJECTIVE} | {f"loss/{lang}" for lang in LANGS}
    for name, row in result.report.items():
        assert row["spearman"] > 0.9, (name, row)
        assert 0 < row["best_iteration"] <= 1000
    np.testing.assert_allclose(result.targets[OBJECTIVE], losses.sum(1))
    found = search(result.models[OBJECTIVE].predict, [0.25] * 4, SearchConfig(num_samples=20_000))
    assert found.weights.sum() == pytest.approx(1.0)
    assert np.abs(found.weights - OPTIMUM).max() < 0.06, found.weights
    assert found.predicted_top_k.max() <= np.sort(found.predicted_all)[127]


def test_search_is_the_reference_simulation():
    prior = np.asarray([0.5, 0.3, 0.2])
    found = search(lambda x: x[:, 0], prior, SearchConfig(num_samples=1000, top_k=10))
    samples = np.random.RandomState(42).dirichlet(prior * 1.0, 1000)  # the notebook: np.random.seed(42) then this
    best = samples[np.argsort(samples[:, 0])[:10]]
    np.testing.assert_array_equal(found.weights, best.mean(0))


def test_targets_and_split():
    losses = np.asarray([[1.0, 3.0], [2.0, 2.0]])
    assert target_function("sum")(losses).tolist() == [4.0, 4.0]
    assert target_function("max")(losses).tolist() == [3.0, 2.0]
    assert target_function("numpy:prod")(losses).tolist() == 12.0  # any importable function of the losses
    with pytest.raises(ValueError, match="module:function"):
        target_function("median")
    with pytest.raises(ValueError, match="no_such_module"):
        target_function("no_such_module:f")
    assert 0.25 < np.mean([is_heldout(i, 1 / 3, 42) for i in range(1000)]) < 0.4
    w, losses = planted(6)
    with pytest.raises(ValueError, match="too few"):
        fit(list(range(3)), w[:3], losses[:3], LANGS, FitConfig())
    with pytest.raises(ValueError, match="one value per mixture"):
        fit(list(range(6)), w, losses, LANGS, FitConfig(target="numpy:prod", heldout_fraction=0.5))
