"""The optimum search, as RegMix's notebook does it: `num_samples` mixtures simulated from Dirichlet(prior x strength)
(numpy's legacy generator seeded with `seed`), the objective predicted for each, and the mean of the `top_k` with the
lowest prediction as the answer. The answer is written as a rates file `mixture.rates_file` reads (language ->
weight, summing to 1) and, given the stage's budget, as tokens per language.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sailor2_jax.regmix.config import SearchConfig


@dataclasses.dataclass
class SearchResult:
    weights: np.ndarray          # [K], the answer
    top_k: np.ndarray            # [k, K]
    predicted_top_k: np.ndarray  # [k], their predicted objective
    predicted_all: np.ndarray    # [num_samples]


def search(predict, prior: Sequence[float], cfg: SearchConfig) -> SearchResult:
    """`predict`: mixtures [n, K] -> predicted objective [n] (lower is better)."""
    samples = np.random.RandomState(cfg.seed).dirichlet(np.asarray(prior, np.float64) * cfg.strength,
                                                        cfg.num_samples)
    predicted = np.asarray(predict(samples))
    best = np.argsort(predicted)[:cfg.top_k]
    return SearchResult(samples[best].mean(axis=0), samples[best], predicted[best], predicted)


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
    fit_ax.set_xlabel(f"predicted {target} of per-language validation losses")
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
