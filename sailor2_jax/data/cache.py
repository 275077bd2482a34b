"""Tokenise every task once with Apache Beam into ArrayRecord shards, with token statistics per task.

    {cache_dir}/{task}/train.array_record-00000-of-00004 ...   one record per document: int32 little-endian tokens,
                                                                <|endoftext|> included
    {cache_dir}/{task}/stats.json                               documents, tokens, lengths, skipped input by reason

The pipeline runs the seqio Task itself (its source, normalisation, tokenisation, EOS), one Beam element per input
file, so the cache holds exactly what the Task defines. The runner is an ordinary Beam pipeline option: DirectRunner
by default; `--runner=DataflowRunner --project=... --region=... --temp_location=gs://...` (or FlinkRunner,
SparkRunner) runs the same pipeline at scale. `stats.json` is written last, after every shard: its presence marks
a complete task.

Why not seqio's `cache_tasks_main`: its `--output_format=arrayrecord` flag is silently ignored in seqio 0.0.20, it
writes `tf.train.Example`s (decoding them in the loader would need TensorFlow), and skipped input would not be
counted. Records are written deterministically (sorted by input file and position), so a re-run gives identical
shards; shuffling is the loader's job.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from sailor2_jax.data.cache_format import (RECORD_DTYPE, SHARD_PATTERN, STATS_FILE, WRITER_OPTIONS, read_stats,
                                          task_dir)
from sailor2_jax.data.config import DataConfig

log = logging.getLogger(__name__)


class _TokenizeFile(beam.DoFn):
    """(task, file index, file count) → ((task, output shard), (file index, position, record bytes)).

    Tasks are rebuilt from the config in each worker: seqio tasks hold TensorFlow objects that do not pickle.
    Skip counts of the file go to the "counts" output.
    """

    def __init__(self, config: dict[str, Any], num_shards: int):
        self._config = config
        self._num_shards = num_shards

    def setup(self) -> None:
        from sailor2_jax.data import tasks

        tasks.register(DataConfig.model_validate(self._config))

    def process(self, element: tuple[str, int, int]) -> Iterator[Any]:
        from sailor2_jax.data import tasks
        from sailor2_jax.data.sources import COUNTS
        from sailor2_jax.data.tf_runtime import seqio

        name, index, count = element
        task = seqio.get_mixture_or_task(name)
        files = tasks.task_files(task)[index::count]
        n = 0
        for n, example in enumerate(tasks.iterate_task(task, seqio.ShardInfo(index, count)), start=1):
            record = example["tokens"].astype(RECORD_DTYPE).tobytes()
            # a stable hash spreads documents over shards independently of the runner's partitioning
            digest = hashlib.blake2b(f"{name}/{index}/{n}".encode(), digest_size=8).digest()
            shard = int.from_bytes(digest, "little") % self._num_shards
            yield (name, shard), (index, n, record)
        counts = COUNTS.pop(files)
        beam.metrics.Metrics.counter("sailor2_cache", f"{name}/documents").inc(n)
        yield beam.pvalue.TaggedOutput("counts", (name, counts))


class _WriteShard(beam.DoFn):
    """Write one output shard in a deterministic order; emit its statistics."""

    def __init__(self, cache_dir: str, num_shards: int):
        self._cache_dir = cache_dir
        self._num_shards = num_shards

    # Beam type-checks this hint against what GroupByKey emits (an Iterable of values, not a Sequence)
    def process(self, element: tuple[tuple[str, int], Iterable[tuple[int, int, bytes]]]) -> Iterator[Any]:
        from array_record.python.array_record_module import ArrayRecordWriter

        (name, shard), records = element
        out = task_dir(self._cache_dir, name)
        out.mkdir(parents=True, exist_ok=True)
        file_name = SHARD_PATTERN.format(index=shard, count=self._num_shards)
        writer = ArrayRecordWriter(str(out / file_name), WRITER_OPTIONS)
        lengths = []
        for _, _, record in sorted(records, key=lambda r: (r[0], r[1])):
            writer.write(record)
            lengths.append(len(record) // RECORD_DTYPE.itemsize)
        writer.close()
        # summaries only: a full-scale task has hundreds of millions of documents
        yield name, {"file": file_name, "documents": len(lengths), "tokens": sum(lengths), "min": min(lengths),
                     "max": max(lengths)}


def _write_stats(element: tuple[str, dict[str, Iterable[Any]]], cache_dir: str, languages: dict[str, str]) -> str:
    name, grouped = element
    shards = grouped["shards"]
    skipped: dict[str, int] = {}
    for counts in grouped["counts"]:
        for reason, k in counts.items():
            skipped[reason] = skipped.get(reason, 0) + k
    documents = sum(s["documents"] for s in shards)
    if not documents:
        raise ValueError(f"task {name!r}: no documents left after reading (skipped: {skipped})")
    tokens = sum(s["tokens"] for s in shards)
    stats = {
        "task": name,
        "language": languages[name],
        "documents": documents,
        "tokens": tokens,  # <|endoftext|> included
        "min_tokens": min(s["min"] for s in shards),
        "max_tokens": max(s["max"] for s in shards),
        "mean_tokens": tokens / documents,
        "skipped": skipped,
        "shards": sorted(s["file"] for s in shards),
    }
    (task_dir(cache_dir, name) / STATS_FILE).write_text(json.dumps(stats, indent=2))
    return name


def build_pipeline(pipeline: beam.Pipeline, cfg: DataConfig, task_names: Sequence[str]) -> None:
    """Add the cache stages for `task_names` (tasks of `cfg` or of what it replays) to `pipeline`."""
    from sailor2_jax.data import mixture, tasks
    from sailor2_jax.data.tf_runtime import seqio

    tasks.register(cfg)
    all_tasks, _ = mixture.resolve(cfg)
    work = []
    for name in task_names:
        n_files = len(tasks.task_files(seqio.get_mixture_or_task(name)))
        work.extend((name, i, n_files) for i in range(n_files))
    config = cfg.model_dump()
    outputs = (pipeline
               | "inputs" >> beam.Create(work)
               | "tokenize" >> beam.ParDo(_TokenizeFile(config, cfg.cache_shards)).with_outputs("counts",
                                                                                                main="records"))
    shards = (outputs.records
              | "group_shards" >> beam.GroupByKey()
              | "write_shards" >> beam.ParDo(_WriteShard(cfg.cache_dir, cfg.cache_shards)))
    languages = {name: all_tasks[name].language for name in task_names}
    _ = ({"shards": shards, "counts": outputs.counts}
         | "group_tasks" >> beam.CoGroupByKey()
         | "write_stats" >> beam.Map(_write_stats, cache_dir=cfg.cache_dir, languages=languages))


def cache(cfg: DataConfig, pipeline_args: Sequence[str] = (), overwrite: bool = False) -> dict[str, dict[str, Any]]:
    """Cache every task the stage reads that is not cached yet (all with `overwrite`); return their stats."""
    from sailor2_jax.data import mixture

    all_tasks, _ = mixture.resolve(cfg)
    todo = [name for name in all_tasks if overwrite or read_stats(cfg.cache_dir, name) is None]
    for name in todo:  # stale shards of an earlier run must not mix with the new ones
        stale = task_dir(cfg.cache_dir, name)
        for f in [*stale.glob("train.array_record-*"), stale / STATS_FILE]:
            f.unlink(missing_ok=True)
    if todo:
        log.info("caching %d tasks: %s", len(todo), ", ".join(todo))
        with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as pipeline:
            build_pipeline(pipeline, cfg, todo)
    return {name: read_stats(cfg.cache_dir, name) for name in all_tasks}
