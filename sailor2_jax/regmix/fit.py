"""The regression from mixture weights to validation loss, as RegMix's regression notebook fits it.

One LightGBM regressor per target, with the notebook's parameters (`boosting_type=gbdt`, `objective=regression`,
`metric=[l1, l2]`, 1,000 iterations, learning rate 0.01, seed 42) and early stopping (patience 3) on held-out
mixtures; goodness of fit is the Spearman correlation of predicted and measured loss on those held-out mixtures.
The native `lightgbm.train` is the notebook's `LGBMRegressor(**params).fit(..., eval_set=..., callbacks=[
early_stopping(3)])` without scikit-learn (the wrapper calls it with these parameters and LightGBM's defaults).

Targets: each language's validation loss, and the objective the search minimises, a function of the per-language
losses L_k (`fit.target`). Sailor2 "employed RegMix to optimize the data mixture, with the primary objective of
maximizing the log sum across all languages considered in stage 1"; three readings of that sentence are named:
- `sum` (default): Σ_k L_k. L_k is the mean negative log-likelihood of language k's held-out tokens, so maximising
  the sum over languages of their (mean) log-likelihoods — "the log sum" as a sum of logs of probabilities — is
  minimising Σ_k L_k. An absolute improvement counts the same in every language.
- `sum_log`: Σ_k log L_k, "the log" applied to each language's loss before the sum: the log of the product of the
  losses, so a relative improvement counts the same in every language (1 % less loss in Khmer weighs as 1 % less in
  English, although English's loss is lower).
- `log_sum`: log Σ_k L_k, "the log of the sum": it ranks mixtures exactly as `sum` does (log is increasing); only the
  scale of the regressor's target differs, so the answer differs from `sum`'s by what LightGBM fits differently.

Held-out mixtures are chosen by a hash of their id, so a growing search keeps its split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sailor2_jax.regmix.config import TARGET_NAMES, FitConfig

Target = Callable[[np.ndarray], np.ndarray]  # per-language losses [n, K] -> objective [n]

TARGETS: dict[str, Target] = {
    "sum": lambda losses: losses.sum(axis=-1),
    "sum_log": lambda losses: np.log(losses).sum(axis=-1),
    "log_sum": lambda losses: np.log(losses.sum(axis=-1)),
    "mean": lambda losses: losses.mean(axis=-1),
    "max": lambda losses: losses.max(axis=-1),
}
assert tuple(TARGETS) == TARGET_NAMES  # the config validates names against the same list
OBJECTIVE = "objective"  # the name of the target the search minimises


def target_function(name: str) -> Target:
    """A target by name (`TARGETS`) or as `package.module:function` taking losses [n, K]."""
    if name in TARGETS:
        return TARGETS[name]
    module, sep, attr = name.partition(":")
    if not sep:
        raise ValueError(f"fit.target {name!r}: one of {', '.join(TARGETS)} or an importable module:function")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"fit.target {name!r}: {e}") from None
    return fn


def is_heldout(mixture_id: int, fraction: float, seed: int) -> bool:
    digest = hashlib.blake2b(f"{seed}/{mixture_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


def lightgbm_params(cfg: FitConfig) -> dict[str, Any]:
    # one thread: a search has hundreds to a few thousand rows of ~10 features, where OpenMP threads only add
    # synchronisation (on 2 busy cores: 2.4 s with one thread, 31 s with two, for the same trees)
    return {"task": "train", "boosting_type": "gbdt", "objective": "regression", "metric": ["l1", "l2"],
            "num_iterations": cfg.num_iterations, "learning_rate": cfg.learning_rate, "seed": cfg.seed,
            "verbosity": -1, "num_threads": 1, **cfg.lightgbm}


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation; None where it is undefined (a constant input)."""
    from scipy.stats import spearmanr

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


@dataclasses.dataclass
class Fit:
    models: dict[str, Any]            # target name -> lightgbm.Booster
    report: dict[str, dict[str, Any]]  # target name -> spearman (held-out and train), best iteration
    heldout: np.ndarray                # bool [n]
    targets: dict[str, np.ndarray]     # target name -> measured values [n]


def fit(ids: Sequence[int], weights: np.ndarray, losses: np.ndarray, languages: Sequence[str], cfg: FitConfig) -> Fit:
    """Regressors weights [n, K] -> each language's loss (`loss/<lang>`) and the objective (`objective`)."""
    import lightgbm as lgb

    heldout = np.asarray([is_heldout(i, cfg.heldout_fraction, cfg.seed) for i in ids])
    if heldout.sum() < 2 or (~heldout).sum() < 2:
        raise ValueError(f"{len(ids)} proxy results split into {(~heldout).sum()} for fitting and {heldout.sum()} "
                         "held out: too few (sample.num_mixtures is too small for fit.heldout_fraction)")
    objective = np.asarray(target_function(cfg.target)(losses), np.float64)
    if objective.shape != (len(ids),):
        raise ValueError(f"fit.target {cfg.target!r} returned shape {objective.shape} for losses {losses.shape}; "
                         "it must give one value per mixture")
    targets = {OBJECTIVE: objective} | {f"loss/{lang}": losses[:, k] for k, lang in enumerate(languages)}
    params = lightgbm_params(cfg)
    x_fit, x_held = weights[~heldout], weights[heldout]
    models, report = {}, {}
    for name, y in targets.items():
        train = lgb.Dataset(x_fit, y[~heldout], params={"verbosity": -1})
        valid = lgb.Dataset(x_held, y[heldout], reference=train)
        booster = lgb.train(params, train, valid_sets=[valid],
                            callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])
        models[name] = booster
        report[name] = {"spearman": spearman(booster.predict(x_held), y[heldout]),
                        "spearman_fit": spearman(booster.predict(x_fit), y[~heldout]),
                        "best_iteration": int(booster.best_iteration)}
    return Fit(models, report, heldout, targets)
