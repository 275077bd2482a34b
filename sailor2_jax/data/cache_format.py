"""The on-disk format of the token cache (`sailor2-jax cache`, data/cache.py writes it): what the loader needs to
read it, without Apache Beam (whose import every training process would otherwise pay: 0.8 s).

    {cache_dir}/{task}/train.array_record-00000-of-00004 ...   one record per document: int32 little-endian tokens,
                                                                <|endoftext|> included
    {cache_dir}/{task}/stats.json                               written last: its presence marks a complete task
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

RECORD_DTYPE = np.dtype("<i4")
STATS_FILE = "stats.json"
SHARD_PATTERN = "train.array_record-{index:05d}-of-{count:05d}"
# one record per chunk: the loader reads documents in shuffled order, so every read must be a single seek
WRITER_OPTIONS = "group_size:1"


def task_dir(cache_dir: str | Path, task: str) -> Path:
    return Path(cache_dir) / task


def read_stats(cache_dir: str | Path, task: str) -> dict[str, Any] | None:
    """A cached task's statistics, or None if the task is not (completely) cached."""
    file = task_dir(cache_dir, task) / STATS_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def shard_files(cache_dir: str | Path, task: str) -> list[str]:
    stats = read_stats(cache_dir, task)
    if stats is None:
        raise FileNotFoundError(f"task {task!r} is not cached in {Path(cache_dir).absolute()}; "
                                "run `sailor2-jax cache --config CFG` first")
    return [str(task_dir(cache_dir, task) / name) for name in stats["shards"]]


def decode(record: bytes) -> np.ndarray:
    return np.frombuffer(record, dtype=RECORD_DTYPE).astype(np.int32, copy=False)
