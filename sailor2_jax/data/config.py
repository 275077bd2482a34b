"""Typed data configs: tasks (one per language and source), a mixture per stage, caching and loading.

One YAML file describes one pre-training stage (`configs/data/demo_stage1.yaml`, `stage2.yaml` ...): its tasks, its
mixture, where the cache lives and how batches are built. A stage-2 file names the stage-1 file it replays from, so
the stage-1 tasks are defined once.

Relative paths of inputs (data files, `rates_file`, `replay.config`) are resolved against the directory the command
runs in first and then as the shipped `data/`/`configs/` files (`sailor2_jax.config.resolve_path`), so the shipped configs and
their embedded data work from anywhere, in a checkout or an installed wheel. `cache_dir` is an output: relative to
the working directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pydantic

from sailor2_jax.config import Config, find_config, load
from sailor2_jax.languages import Language

OnBadInput = Literal["error", "skip"]
_TASK_NAME = re.compile(r"^[a-z0-9_]+$")


class FileSource(Config):
    """Documents in files: `jsonl` (one JSON object per line), `parquet` (one row each) or `text` (one per line).

    `.gz` files are read transparently for `jsonl` and `text`.
    """

    type: Literal["jsonl", "parquet", "text"]
    files: list[str] = pydantic.Field(min_length=1, description="paths or glob patterns")
    text_field: str = "text"


class TfdsSource(Config):
    """A TensorFlow Datasets dataset (`name` as `dataset/config:version`) read from `data_dir`."""

    type: Literal["tfds"]
    name: str
    data_dir: str | None = None
    split: str = "train"
    text_field: str = "text"


class TaskConfig(Config):
    """One seqio Task: one language from one source."""

    name: str
    language: Language
    source: FileSource | TfdsSource = pydantic.Field(discriminator="type")
    min_tokens: int | None = pydantic.Field(
        None, gt=0, description="keep only documents of at least this many tokens: a long-context stage gives a "
        "language's long documents their own task, and so their own (higher) rate beside the language's whole data")

    @pydantic.field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not _TASK_NAME.match(name):
            raise ValueError(f"task name {name!r} must be lower-case letters, digits and underscores")
        return name


class ReplayConfig(Config):
    """Stage-1 replay inside a later stage: the mixture of `config`, either as a `share` of the stage's tokens
    (the recipe's 20 %) or as `tokens` in the units of the stage's own rates (the table's 10B beside 48.3B)."""

    config: str
    tokens: float | None = pydantic.Field(None, gt=0)
    share: float | None = pydantic.Field(None, gt=0, lt=1)

    @pydantic.model_validator(mode="after")
    def _one_of(self) -> "ReplayConfig":
        if (self.tokens is None) == (self.share is None):
            raise ValueError("replay needs exactly one of `tokens` and `share`")
        return self


class MixtureConfig(Config):
    """Token rates per task or per language (a language's rate is split evenly over its tasks).

    `rates_file` (YAML or JSON mapping of the same keys, as the RegMix search writes it) replaces `rates`.
    `temperature` T reshapes the language shares p_l to p_l^(1/T), renormalised (T=1 keeps them, larger T flattens
    them); each language's tasks keep their proportions within it, so splitting a language into tasks changes nothing.
    """

    name: str
    rates: dict[str, float] = {}
    rates_file: str | None = None
    temperature: float = pydantic.Field(1.0, gt=0)
    replay: ReplayConfig | None = None

    @pydantic.model_validator(mode="after")
    def _check(self) -> "MixtureConfig":
        if not self.rates and not self.rates_file and not self.replay:
            raise ValueError("a mixture needs rates, a rates_file or a replay")
        if any(r < 0 for r in self.rates.values()):
            raise ValueError(f"mixture rates must be non-negative: {self.rates}")
        return self


class Batching(Config):
    """The shape and order of the batches: the training run's choice (`TrainConfig.data` holds it; loaders take it as
    an argument), so one data config serves runs of any batch size, and nothing holds it twice. `batch_size` is
    global: each of the hosts builds its share of rows."""

    batch_size: int = pydantic.Field(gt=0, description="global rows per step")
    seq_len: int = pydantic.Field(gt=1, description="tokens per row")
    seed: int = pydantic.Field(0, description="shuffling and mixing order")


class LoaderConfig(Config):
    """How a stage's batches are built from its tasks: where documents come from, host and data sharding, padding,
    prefetching. Each of `shard_count` hosts builds its rows from its `data_shards / shard_count` data shards."""

    # "cache": ArrayRecord shards written by `sailor2-jax cache` (the production path, random access, any size).
    # "seqio": run the seqio tasks here and hold their output in memory (small data: the demo and tests).
    source: Literal["cache", "seqio"] = "cache"
    # per-host sharding; None = this JAX process (jax.process_index() of jax.process_count())
    shard_index: int | None = None
    shard_count: int | None = None
    data_shards: int | None = pydantic.Field(
        None, gt=0, description="independent streams the global batch is built from (each packs its own rows; host "
        "h of H reads shards h*S/H .. (h+1)*S/H-1), so a run resumes on any host count dividing it. Default: the "
        "host count of the run's first start, kept on resume")
    # id placed at padding positions of `tokens` and `targets` (they are masked out anyway): <|endoftext|>
    pad_id: int = 151643
    prefetch_batches: int = pydantic.Field(0, ge=0, description="batches a background thread builds ahead (0 = off)")

    @pydantic.model_validator(mode="after")
    def _check(self) -> "LoaderConfig":
        if (self.shard_index is None) != (self.shard_count is None):
            raise ValueError("set both loader.shard_index and loader.shard_count, or neither")
        if self.shard_count is not None and not 0 <= self.shard_index < self.shard_count:
            raise ValueError(f"loader.shard_index {self.shard_index} out of range for {self.shard_count} shards")
        return self


class DataConfig(Config):
    """One pre-training stage's data."""

    tasks: list[TaskConfig] = []
    mixture: MixtureConfig
    tokenizer: str | None = pydantic.Field(None, description="a tokenizer.json; default: the Qwen2.5 tokenizer")
    cache_dir: str = "runs/cache"
    on_bad_input: OnBadInput = "error"
    loader: LoaderConfig = LoaderConfig()
    cache_shards: int = pydantic.Field(4, gt=0, description="ArrayRecord shards per task")

    @pydantic.model_validator(mode="after")
    def _check(self) -> "DataConfig":
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"task names must be unique, repeated: {dup}")
        return self


def load_data_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> DataConfig:
    """A stage's data config by path or by name in `configs/data/` (`demo_stage1`)."""
    return load(DataConfig, find_config("data", path), overrides)
