"""Helpers for the data tests (imported as `data_helpers`).

Synthetic tasks: documents whose tokens say which task, document and position they are.

Token of document d of task k at position j: k * 10**6 + d * 1000 + j; every document ends in EOS. So any packed
position can be traced back to its source independently of the loader's own bookkeeping.
"""

from __future__ import annotations

from pathlib import Path

import grain
import numpy as np
import yaml

from sailor2_jax.data.config import Batching, DataConfig
from sailor2_jax.data.loader import TaskDocuments

EOS = 151643


def make_docs(task_index: int, lengths: list[int]) -> list[np.ndarray]:
    return [np.asarray([task_index * 10**6 + d * 1000 + j for j in range(n)] + [EOS], np.int32)
            for d, n in enumerate(lengths)]


def documents(spec: dict[str, tuple[int, list[int]]]) -> dict[str, TaskDocuments]:
    """{task: (task_index, lengths)} → TaskDocuments held in memory."""
    out = {}
    for name, (k, lengths) in spec.items():
        docs = make_docs(k, lengths)
        out[name] = TaskDocuments(name, grain.MapDataset.source(docs), float(np.mean([len(d) for d in docs])), {})
    return out


def batching(seq_len: int = 64, batch_size: int = 4, seed: int = 0) -> Batching:
    return Batching(seq_len=seq_len, batch_size=batch_size, seed=seed)


def stage_config(tasks: dict[str, str], rates: dict[str, float], *, name: str = "stage1",
                 shard: tuple[int, int] = (0, 1), replay: dict | None = None) -> dict:
    """A DataConfig dict over tasks {name: language} (their files are never read: documents are injected)."""
    mixture = {"name": name, "rates": rates}
    if replay:
        mixture["replay"] = replay
    return {
        "tasks": [{"name": t, "language": lang, "source": {"type": "jsonl", "files": [f"{t}.jsonl"]}}
                  for t, lang in tasks.items()],
        "mixture": mixture,
        "loader": {"source": "seqio", "shard_index": shard[0], "shard_count": shard[1]},
    }


def config(d: dict) -> DataConfig:
    return DataConfig.model_validate(d)


def write_config(path: Path, d: dict) -> Path:
    path.write_text(yaml.safe_dump(d))
    return path
