"""Mixture rates: from the config (per task or per language), a rates file, a temperature and stage-1 replay.

Rates are in tokens. The result is each task's share of the stage's tokens (summing to 1); the loader turns shares
into per-document sampling weights with each task's mean document length, so the realised token shares match.
Pure Python (no TensorFlow): the loader needs the shares whether or not seqio is imported.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import yaml

from sailor2_jax.config import resolve_path
from sailor2_jax.languages import LANGUAGES
from sailor2_jax.data.config import DataConfig, TaskConfig, load_data_config


def read_rates_file(path: str | Path) -> dict[str, float]:
    """A `{task or language: rate}` mapping from YAML or JSON (the RegMix search writes one)."""
    file = resolve_path(path)
    if not file.is_file():
        raise FileNotFoundError(f"rates file not found: {file}")
    text = file.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{file}: not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in data.values()):
        raise ValueError(f"{file}: expected a mapping of task or language names to non-negative numbers")
    return {str(k): float(v) for k, v in data.items()}


def _own_rates(cfg: DataConfig) -> dict[str, float]:
    """Per-task token rates of the stage's own tasks (before temperature)."""
    raw = read_rates_file(cfg.mixture.rates_file) if cfg.mixture.rates_file else dict(cfg.mixture.rates)
    by_name = {t.name: t for t in cfg.tasks}
    rates: dict[str, float] = defaultdict(float)
    for key, rate in raw.items():
        if key in by_name:
            rates[key] += rate
        elif key in LANGUAGES:
            tasks = [t.name for t in cfg.tasks if t.language == key]
            if not tasks:
                raise ValueError(f"mixture {cfg.mixture.name}: rate for language {key!r} but no task has it")
            for name in tasks:  # a language's rate is split evenly over its tasks
                rates[name] += rate / len(tasks)
        else:
            raise ValueError(f"mixture {cfg.mixture.name}: {key!r} is neither a task of this config "
                             f"({sorted(by_name)}) nor a language ({', '.join(LANGUAGES)})")
    return {k: v for k, v in rates.items() if v > 0}


def _apply_temperature(rates: dict[str, float], tasks: dict[str, TaskConfig],
                       temperature: float) -> dict[str, float]:
    """Task shares with the temperature applied to the language shares (p_l ∝ p_l^(1/T)); the tasks of a language
    split its share in the proportions of their rates."""
    by_lang: dict[str, float] = defaultdict(float)
    for name, rate in rates.items():
        by_lang[tasks[name].language] += rate
    total = sum(by_lang.values())
    powered = {lang: (r / total) ** (1.0 / temperature) for lang, r in by_lang.items()}
    norm = sum(powered.values())
    return {name: powered[tasks[name].language] / norm * rate / by_lang[tasks[name].language]
            for name, rate in rates.items()}


def resolve(cfg: DataConfig) -> tuple[dict[str, TaskConfig], dict[str, float]]:
    """Every task the stage reads (its own and those it replays) and each task's token share (sum 1)."""
    tasks = {t.name: t for t in cfg.tasks}
    own = _own_rates(cfg)
    own_total = sum(own.values())
    shares = _apply_temperature(own, tasks, cfg.mixture.temperature) if own else {}
    if cfg.mixture.replay is None:
        return tasks, shares
    replay_cfg = load_data_config(cfg.mixture.replay.config)
    replay_tasks, replay_shares = resolve(replay_cfg)
    for name, task in replay_tasks.items():
        if name in tasks and tasks[name] != task:
            raise ValueError(f"task {name!r} is defined differently here and in replayed {cfg.mixture.replay.config}")
        tasks[name] = task
    replay = cfg.mixture.replay
    if not own:  # a stage of replay alone
        replay_fraction = 1.0
    elif replay.share is not None:
        replay_fraction = replay.share
    else:
        replay_fraction = replay.tokens / (own_total + replay.tokens)
    combined: dict[str, float] = defaultdict(float)
    for name, share in shares.items():
        combined[name] += share * (1 - replay_fraction)
    for name, share in replay_shares.items():
        combined[name] += share * replay_fraction
    return tasks, dict(combined)


def language_shares(tasks: dict[str, TaskConfig], shares: dict[str, float]) -> dict[str, float]:
    """Token share per language, in `LANGUAGES` order, languages without tokens left out."""
    out: dict[str, float] = defaultdict(float)
    for name, share in shares.items():
        out[tasks[name].language] += share
    return {lang: out[lang] for lang in LANGUAGES if out.get(lang, 0) > 0}
