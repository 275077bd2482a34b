"""Sampling filters against a direct numpy computation of transformers' logits processors, and draws that follow
the filtered distribution."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from sailor2_jax.generate.sampling import SamplingConfig, next_tokens, process_logits


def numpy_reference(logits: np.ndarray, seen: np.ndarray, cfg: SamplingConfig) -> np.ndarray:
    """RepetitionPenalty → Temperature → TopK → TopP as transformers computes them (ascending sort for top-p)."""
    x = logits.astype(np.float64)
    p = cfg.repetition_penalty
    x = np.where(seen, np.where(x < 0, x * p, x / p), x)
    if cfg.greedy:
        return x
    x = x / cfg.temperature
    if cfg.top_k:
        kth = np.sort(x, axis=-1)[:, -cfg.top_k][:, None]
        x = np.where(x < kth, -np.inf, x)
    if cfg.top_p < 1:
        order = np.argsort(x, axis=-1, kind="stable")
        ascending = np.take_along_axis(x, order, axis=-1)
        e = np.exp(ascending - ascending.max(-1, keepdims=True))
        cumulative = np.cumsum(e / e.sum(-1, keepdims=True), axis=-1)
        drop_sorted = cumulative <= 1 - cfg.top_p
        drop_sorted[:, -1] = False
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        x = np.where(drop, -np.inf, x)
    return x


CONFIGS = [SamplingConfig(temperature=0.7, top_p=0.9), SamplingConfig(temperature=1.3, top_k=10),
           SamplingConfig(temperature=1.0, top_k=50, top_p=0.8), SamplingConfig(temperature=0.5, top_p=0.5,
                                                                                repetition_penalty=1.3),
           SamplingConfig(repetition_penalty=1.5)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"T{c.temperature}-k{c.top_k}-p{c.top_p}-r{c.repetition_penalty}")
def test_filters_equal_numpy_reference(cfg):
    rng = np.random.RandomState(0)
    logits = (3 * rng.randn(6, 1000)).astype(np.float32)
    seen = rng.rand(6, 1000) < 0.1
    got = np.asarray(process_logits(logits, seen, cfg))
    expected = numpy_reference(logits, seen, cfg)
    kept = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(got), kept)
    np.testing.assert_allclose(got[kept], expected[kept], rtol=1e-6, atol=1e-6)
    if cfg.top_k or cfg.top_p < 1:
        assert 1 <= kept.sum(-1).min() and kept.sum(-1).max() < 1000  # something was cut, never everything
    if cfg.greedy:
        tokens = np.asarray(next_tokens(logits, seen, None, 0, cfg))
        np.testing.assert_array_equal(tokens, expected.argmax(-1))


@pytest.mark.parametrize("cfg", [SamplingConfig(temperature=0.8, top_k=30, top_p=0.9),
                                 SamplingConfig(temperature=0.8, top_p=0.7)],
                         ids=["top_k-then-top_p", "top_p-alone"])
def test_draws_follow_the_filtered_distribution(cfg):
    """Among the top-k candidates, and over the whole vocabulary when top-p alone filters (no sort there)."""
    rng = np.random.RandomState(1)
    row = (2 * rng.randn(200)).astype(np.float32)
    draws = 40_000
    logits = np.broadcast_to(row, (draws, 200))
    keys = jax.random.split(jax.random.key(0), draws)
    tokens = np.asarray(next_tokens(logits, None, keys, 3, cfg))
    expected = numpy_reference(row[None], np.zeros((1, 200), bool), cfg)[0]
    probs = np.exp(expected - expected[np.isfinite(expected)].max())
    probs /= probs.sum()
    assert set(np.unique(tokens)) <= set(np.flatnonzero(probs > 0))
    freq = np.bincount(tokens, minlength=200) / draws
    assert np.abs(freq - probs).max() < 0.01  # ~5 standard errors at p = 0.25
    # the step is folded into each row's key: another step gives other draws from the same keys
    assert not np.array_equal(tokens, np.asarray(next_tokens(logits, None, keys, 4, cfg)))


def test_per_row_filters_of_the_server_equal_numpy_reference():
    """The server's filter (settings per row, as arrays) keeps, row by row, what transformers' processors keep."""
    from sailor2_jax.serve.programs import filter_top

    rows = [SamplingConfig(temperature=1.0, top_p=0.9), SamplingConfig(temperature=1.0, top_k=10),
            SamplingConfig(temperature=1.0, top_k=50, top_p=0.8), SamplingConfig(temperature=1.0, top_p=0.05),
            SamplingConfig(temperature=1.0), SamplingConfig(temperature=1.0, top_k=1)]
    logits = (3 * np.random.RandomState(2).randn(len(rows), 1000)).astype(np.float32)
    got = np.asarray(filter_top(logits, np.array([c.top_k for c in rows]), np.array([c.top_p for c in rows],
                                                                                     np.float32)))
    for i, cfg in enumerate(rows):
        expected = numpy_reference(logits[i:i + 1], np.zeros((1, 1000), bool), cfg)[0]
        np.testing.assert_array_equal(np.isfinite(got[i]), np.isfinite(expected), err_msg=str(cfg))
        np.testing.assert_array_equal(got[i][np.isfinite(got[i])], logits[i][np.isfinite(expected)])
