"""Helpers for the RegMix tests (imported as `regmix_helpers`): a small stage of synthetic "languages" and a tiny
proxy configuration, so proxies train in seconds without tokenising anything.

Language k's documents are walks over its own 40 token ids (ids 1000 + 100 k ...) with a fixed stride, so what a
proxy learns about one language helps that language's held-out text and not another's."""

from __future__ import annotations

import grain
import numpy as np

from sailor2_jax.config import load
from sailor2_jax.data.config import DataConfig
from sailor2_jax.data.loader import TaskDocuments
from sailor2_jax.regmix.config import RegMixConfig

EOS = 151643
LANGS = ("en", "vi", "th")


def documents(lengths: dict[str, list[int]], seed: int = 0) -> dict[str, TaskDocuments]:
    rng = np.random.default_rng(seed)
    out = {}
    for k, (lang, sizes) in enumerate(lengths.items()):
        docs = []
        for n in sizes:
            walk = (rng.integers(0, 40) + (k + 2) * np.arange(n)) % 40
            docs.append(np.concatenate([1000 + 100 * k + walk, [EOS]]).astype(np.int32))
        out[f"syn_{lang}"] = TaskDocuments(f"syn_{lang}", grain.MapDataset.source(docs),
                                           float(np.mean([len(d) for d in docs])), {})
    return out


def stage(langs=LANGS) -> DataConfig:
    return DataConfig.model_validate({
        "tasks": [{"name": f"syn_{lang}", "language": lang, "source": {"type": "jsonl", "files": [f"{lang}.jsonl"]}}
                  for lang in langs],
        "mixture": {"name": "syn_stage", "rates": {lang: 1.0 for lang in langs}},
        "loader": {"source": "seqio"}})


TINY = ["proxy.model={base: regmix-1m, hidden_size: 32, intermediate_size: 64, num_heads: 2, num_kv_heads: 2, "
        "head_dim: 16}", "proxy.compute={dtype: float32, remat: none, attention: xla}",
        "proxy.optimizer.schedule={kind: constant, peak_lr: 1.0e-2, warmup_steps: 2}",
        "proxy.batch_size=2", "proxy.seq_len=32", "proxy.steps=6", "proxy.checkpoint_every=2", "proxy.log_every=2",
        "validation.fraction=0.2", "validation.batch_size=4"]


def config(*overrides: str) -> RegMixConfig:
    return load(RegMixConfig, None, [*TINY, *overrides], data="unused")
