"""The optimum search, as RegMix's notebook does it: `num_samples` mixtures simulated from Dirichlet(prior x strength)
(numpy's legacy generator seeded with `seed`), the objective predicted for each, and the mean of the `top_k` with the
lowest prediction as the answer — among the mixtures the data can supply (`epoch_caps`), which neither the reference
nor Sailor2's write-up bounds: a mixture asking a language for more than `max_epochs` passes over its available
tokens, over the stage's budget, is set aside before the best are taken. The bound is a box, so the mean of mixtures
within it is within it: the answer never asks a language for more than the cap. The answer is written as a rates
file `mixture.rates_file` reads (language -> weight, summing to 1) and, given the stage's budget, as tokens per
language.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sailor2_jax.regmix.config import SearchConfig


@dataclasses.dataclass
class SearchResult:
    weights: np.ndarray          # [K], the answer
    top_k: np.ndarray            # [k, K], the best mixtures within the cap (fewer than top_k when few are)
    predicted_top_k: np.ndarray  # [k], their predicted objective
    predicted_all: np.ndarray    # [num_samples]
    within_cap: int              # simulated mixtures within the cap (all of them without one)
    cap_removed_from_top_k: int  # of the top_k best predictions, how many the cap set aside


def epoch_caps(languages: Sequence[str], available: Mapping[str, float], budget: float, max_epochs: float
               ) -> np.ndarray:
    """The largest weight [K] each language may have: `max_epochs` x its available tokens / the budget. Refuses a
    budget the languages cannot fill together, and a language without a count."""
    missing = [lang for lang in languages if lang not in available]
    if missing:
        raise ValueError(f"search.available_tokens has no count for {', '.join(missing)} (it must cover every "
                         f"language searched: {', '.join(languages)})")
    tokens = np.asarray([float(available[lang]) for lang in languages])
    if max_epochs * tokens.sum() < budget:
        raise ValueError(f"the data cannot fill search.budget_tokens={budget:g}: {max_epochs:g} epochs of the "
                         f"{tokens.sum():g} available tokens are {max_epochs * tokens.sum():g}; raise "
                         "search.max_epochs, lower the budget or give search.available_tokens")
    return max_epochs * tokens / budget


def search(predict, prior: Sequence[float], cfg: SearchConfig, cap: np.ndarray | None = None) -> SearchResult:
    """`predict`: mixtures [n, K] -> predicted objective [n] (lower is better); `cap` [K]: the largest weight each
    language may have (None: no bound)."""
    samples = np.random.RandomState(cfg.seed).dirichlet(np.asarray(prior, np.float64) * cfg.strength,
                                                        cfg.num_samples)
    predicted = np.asarray(predict(samples))
    order = np.argsort(predicted)
    within = np.ones(len(samples), bool) if cap is None else np.all(samples <= cap, axis=1)
    if not within.any():
        raise ValueError(f"none of the {cfg.num_samples} simulated mixtures is within the epoch cap; raise "
                         "search.num_samples or search.max_epochs")
    best = order[within[order]][:cfg.top_k]
    removed = int((~within[order[:cfg.top_k]]).sum())
    return SearchResult(samples[best].mean(axis=0), samples[best], predicted[best], predicted, int(within.sum()),
                        removed)


def outside_range(mixtures: np.ndarray, trained: np.ndarray) -> np.ndarray:
    """How far each mixture [n, K] lies outside the range the proxies' mixtures [m, K] span, per language: the
    distance to the nearest end of [min, max] of that language's trained weights (0 inside)."""
    lo, hi = trained.min(axis=0), trained.max(axis=0)
    return np.maximum(np.maximum(lo - mixtures, mixtures - hi), 0.0)


def plot(png: Path, languages: Sequence[str], prior: np.ndarray, answer: np.ndarray, measured: np.ndarray,
         predicted: np.ndarray, heldout: np.ndarray, report: dict[str, Any], target: str) -> None:
    """Predicted against measured objective (held-out and fitted mixtures), and the answer against the prior."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (fit_ax, mix_ax) = plt.subplots(1, 2, figsize=(13, 5))
    fit_ax.scatter(predicted[~heldout], measured[~heldout], s=14, c="0.7", label="fitted mixtures")
    rho = report.get("spearman")
    fit_ax.scatter(predicted[heldout], measured[heldout], s=22, c="#C3364A",
                   label="held-out mixtures" + (f" (Spearman {rho:.3f})" if rho is not None else ""))
    lo, hi = float(min(predicted.min(), measured.min())), float(max(predicted.max(), measured.max()))
    fit_ax.plot([lo, hi], [lo, hi], "--", c="0.4", lw=1)
    fit_ax.set_xlabel(f"predicted objective ({target} of the per-language validation losses)")
    fit_ax.set_ylabel("measured")
    fit_ax.set_title("regression: proxies' validation loss")
    fit_ax.legend(fontsize=8)
    x = np.arange(len(languages))
    mix_ax.bar(x - 0.2, prior, 0.4, label="prior (token shares)", color="#5969CB")
    mix_ax.bar(x + 0.2, answer, 0.4, label="RegMix", color="#C3364A")
    mix_ax.set_xticks(x, languages)
    mix_ax.set_ylabel("weight")
    mix_ax.set_title("the chosen mixture against the prior")
    mix_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
