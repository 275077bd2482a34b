"""Regression and search: a planted relation between mixture weights and losses is recovered, and its optimum found
within what the data can supply (the epoch cap); the named objectives."""

from __future__ import annotations

import numpy as np
import pytest

from sailor2_jax.regmix.config import FitConfig, SearchConfig
from sailor2_jax.regmix.fit import OBJECTIVE, fit, is_heldout, target_function
from sailor2_jax.regmix.search import epoch_caps, outside_range, search

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


def test_named_objectives_and_early_refusal():
    losses = np.asarray([[1.0, 3.0], [2.0, 2.0]])
    np.testing.assert_allclose(target_function("sum_log")(losses), [np.log(3.0), 2 * np.log(2.0)])
    np.testing.assert_allclose(target_function("log_sum")(losses), [np.log(4.0), np.log(4.0)])
    # sum of logs prefers the balanced mixture here; log of the sum ranks as the sum does
    assert target_function("sum_log")(losses)[0] < target_function("sum_log")(losses)[1]
    w, planted_losses = planted(300)
    assert np.array_equal(np.argsort(target_function("log_sum")(planted_losses)),
                          np.argsort(target_function("sum")(planted_losses)))
    with pytest.raises(ValueError, match="'median' is none of sum, sum_log, log_sum, mean, max"):
        FitConfig(target="median")  # at load time, before any proxy trains


def test_outside_range_is_the_distance_to_the_trained_weights():
    trained = np.asarray([[0.2, 0.8], [0.5, 0.5]])
    np.testing.assert_allclose(outside_range(np.asarray([[0.3, 0.7], [0.1, 0.9], [0.9, 0.1]]), trained),
                               [[0, 0], [0.1, 0.1], [0.4, 0.4]], atol=1e-12)


def test_epoch_caps_refuse_what_the_data_cannot_supply():
    caps = epoch_caps(["id", "km"], {"id": 100.0, "km": 10.0}, budget=200.0, max_epochs=4)
    np.testing.assert_allclose(caps, [2.0, 0.2])
    with pytest.raises(ValueError, match="cannot fill search.budget_tokens=500"):
        epoch_caps(["id", "km"], {"id": 100.0, "km": 10.0}, budget=500.0, max_epochs=4)
    with pytest.raises(ValueError, match="no count for km"):
        epoch_caps(["id", "km"], {"id": 100.0}, budget=100.0, max_epochs=4)


def test_cap_holds_where_the_unconstrained_answer_exceeds_it():
    """The planted optimum asks km for 0.1 of the budget; km holds 0.015 of it, so at 4 epochs its weight may be 0.06.
    Unconstrained, the answer exceeds that; capped, neither the answer nor any mixture it averages does."""
    w, losses = planted(400)
    result = fit(list(range(400)), w, losses, LANGS, FitConfig())
    predict, prior = result.models[OBJECTIVE].predict, [0.25] * 4
    budget, available = 1000.0, {"vi": 500.0, "id": 400.0, "th": 300.0, "km": 15.0}
    cfg = SearchConfig(num_samples=20_000, budget_tokens=budget)
    cap = epoch_caps(LANGS, available, budget, cfg.max_epochs)
    free = search(predict, prior, cfg)
    assert free.weights[3] > cap[3] and free.cap_removed_from_top_k == 0
    capped = search(predict, prior, cfg, cap)
    assert np.all(capped.top_k <= cap)
    tokens = capped.weights * budget
    assert np.all(tokens <= cfg.max_epochs * np.asarray([available[k] for k in LANGS]) * (1 + 1e-12))
    assert capped.weights.sum() == pytest.approx(1.0)
    # the cap set aside some of the unconstrained best, and the answer is the mean of the best within it
    assert 0 < capped.cap_removed_from_top_k <= 128 and len(capped.top_k) == 128
    assert capped.cap_removed_from_top_k == int(np.sum(np.any(free.top_k > cap, axis=1)))
    assert capped.predicted_top_k.min() >= free.predicted_top_k.min()


def test_search_phase_reports_the_cap_and_the_range(tmp_path):
    """The search phase of a run, on planted proxy results: search.json says what the cap removed and how far the
    answer lies outside the trained weights; tokens.json never exceeds max_epochs x the available tokens."""
    import json

    from regmix_helpers import config

    from sailor2_jax.regmix.run import Search

    w, losses = planted(300)
    train_tokens = {"vi": 500.0, "id": 400.0, "th": 300.0, "km": 15.0}
    table = {"languages": LANGS, "train_tokens": train_tokens, "prior": {k: 0.25 for k in LANGS}, "mixtures": []}
    results = {i: {"weights": dict(zip(LANGS, w[i].tolist())), "losses": dict(zip(LANGS, losses[i].tolist()))}
               for i in range(len(w))}
    cfg = config("search.num_samples=20000", "search.budget_tokens=1000")
    summary = Search(cfg, tmp_path, data=None, progress=False).fit_and_search(table, results)
    saved = json.loads((tmp_path / "search.json").read_text())
    assert saved == summary
    cap = saved["cap"]
    assert cap["available_from"] == "mixtures.json train_tokens" and cap["max_weight"]["km"] == pytest.approx(0.06)
    assert cap["removed_from_top_k"] > 0 and cap["top_k_used"] == 128
    tokens = json.loads((tmp_path / "tokens.json").read_text())
    assert all(tokens[k] <= 4 * train_tokens[k] * (1 + 1e-12) for k in LANGS)
    assert max(saved["epochs"].values()) <= 4 * (1 + 1e-12)
    r = saved["proxy_range"]
    assert r["min"]["vi"] == pytest.approx(w[:, 0].min()) and r["max"]["km"] == pytest.approx(w[:, 3].max())
    assert 0 <= r["top_k_outside_share"] <= 1 and r["answer_outside_max"] >= 0
    # given availability replaces the counted one; a budget the data cannot fill is refused before the search
    cfg = config("search.num_samples=20000", "search.budget_tokens=1000",
                 "search.available_tokens={vi: 1.0e6, id: 1.0e6, th: 1.0e6, km: 1.0e6}")
    summary = Search(cfg, tmp_path, data=None, progress=False).fit_and_search(table, results)
    assert summary["cap"]["removed_from_top_k"] == 0 and summary["cap"]["available_from"] == \
        "search.available_tokens"
    cfg = config("search.budget_tokens=1.0e5")
    with pytest.raises(ValueError, match="cannot fill search.budget_tokens=100000"):
        Search(cfg, tmp_path, data=None, progress=False).fit_and_search(table, results)
