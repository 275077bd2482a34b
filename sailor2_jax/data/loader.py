"""grain pipelines for pre-training: per-task streams → token-rate mixing → concat-then-split packing → batches.

    task (ArrayRecord cache, or seqio output held in memory)
      └─ global shuffle, reshuffled every epoch, repeated (grain MapDataset.shuffle().repeat())
           └─ data shard s of S: every S-th document from s (disjoint; host h reads shards h*S/H ..)
                └─ mix: deterministic smooth weighted round-robin over the tasks (MixtureIterDataset)
                     └─ concat-then-split into rows of seq_len (packing.py), B/S rows per step
                          └─ this host's shards' rows, in shard order (ShardedBatches) → the batch contract
                          └─ global jax.Arrays on the mesh (sharding.global_batch), when a mesh is given

Mixing by tokens: a task with token share s and mean document length m (in packed positions) is drawn with weight
s / m, so the realised token shares match the mixture. Weighted round-robin (not random draws) keeps each data
shard within a document of the target at every step, and its state is a handful of numbers; shards start at
different phases of the round-robin, so their deviations cancel across a batch instead of adding up.

Iterator state (`PretrainIterator.get_state()`, a JSON-able dict) holds, per data shard, each task stream's
position, the mixer's credits and grain's packing state; `set_state` reproduces the following batches exactly, also
on another host count (see `PretrainIterator`). Stream positions are what carries over between stages:
`switch_stage(stage1_iterator, stage2_cfg)` builds the next stage's iterator with every task both stages read (the
replayed stage-1 tasks) continuing with its next unread document. Packing state does not transfer between mixtures,
so the unread tail of the one document per data shard that straddles the last stage-1 row is not read in stage 2;
nothing else is skipped or repeated.

Checkpointing (train/checkpoint.py): each process saves its iterator's state as JSON; a restore gives the iterator
its own state, or `PretrainIterator.merge_states` of all of them when the process count has changed.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np
from grain.experimental import index_shuffle
from tqdm import tqdm

from sailor2_jax.data import mixture
from sailor2_jax.data.cache_format import decode, read_stats, shard_files
from sailor2_jax.languages import LANGUAGE_INDEX, LANGUAGES
from sailor2_jax.data.config import Batching, DataConfig, load_data_config
from sailor2_jax.data.packing import concat_then_split, document_to_columns, to_contract

log = logging.getLogger(__name__)

_MIXER = "sailor2_mixture"  # marks the mixer's state inside grain's nested pipeline state


def task_seed(seed: int, task: str) -> int:
    """A task's shuffle seed: stable across stages and processes, so a replayed task keeps its document order."""
    return int.from_bytes(hashlib.blake2b(f"{seed}/{task}".encode(), digest_size=4).digest(), "little")


# --- per-task documents ----------------------------------------------------------------------------------------

class TaskDocuments:
    """A task's documents (int32 tokens ending in <|endoftext|>) with random access, and why input was skipped."""

    def __init__(self, name: str, data: grain.MapDataset, mean_tokens: float, skipped: dict[str, int]):
        self.name, self.data, self.mean_tokens, self.skipped = name, data, mean_tokens, skipped


def _cached_documents(cfg: DataConfig, name: str) -> TaskDocuments:
    files = shard_files(cfg.cache_dir, name)
    stats = read_stats(cfg.cache_dir, name)
    data = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(files)).map(decode)
    if len(data) != stats["documents"]:
        raise ValueError(f"cache of {name!r} in {cfg.cache_dir} holds {len(data)} documents, its stats.json says "
                         f"{stats['documents']}: re-run `sailor2-jax cache --overwrite`")
    return TaskDocuments(name, data, stats["mean_tokens"], stats["skipped"])


def _seqio_documents(names: Sequence[str], cfg: DataConfig) -> dict[str, TaskDocuments]:
    """Run the seqio tasks here and keep their output in memory (small data only)."""
    from sailor2_jax.data import tasks
    from sailor2_jax.data.tf_runtime import seqio
    from sailor2_jax.data.sources import COUNTS

    tasks.register(cfg)
    out = {}
    for name in tqdm(names, desc="seqio tasks", unit="task", leave=False):
        task = seqio.get_mixture_or_task(name)
        docs = [ex["tokens"] for ex in tasks.iterate_task(task)]
        skipped = COUNTS.pop(tasks.task_files(task))
        if not docs:
            raise ValueError(f"task {name!r}: no documents left after reading (skipped: {skipped})")
        out[name] = TaskDocuments(name, grain.MapDataset.source(docs), float(np.mean([len(d) for d in docs])),
                                  skipped)
    return out


def load_documents(cfg: DataConfig, names: Sequence[str]) -> dict[str, TaskDocuments]:
    docs = {n: _cached_documents(cfg, n) for n in names} if cfg.loader.source == "cache" else \
        _seqio_documents(names, cfg)
    for d in docs.values():
        if d.skipped:
            log.warning("task %s: skipped input %s", d.name, d.skipped)
    return docs


class EpochShuffle(grain.MapDataset):
    """Endless repetition of `parent`, in a new random order every epoch (a global shuffle of the whole task).

    Small tasks keep the current epoch's permutation (numpy); large ones use grain's stateless Feistel
    `index_shuffle`, which needs no memory but is pathologically slow on small domains (measured: 3 ms per index at
    5 documents, 0.2 ms at 100, 3 us from 10,000 on).
    """

    SMALL = 1 << 22  # a cached permutation of up to 4M documents costs at most 16 MB

    def __init__(self, parent: grain.MapDataset, seed: int):
        super().__init__(parent)
        self._n = len(parent)
        if not self._n:
            raise ValueError("cannot shuffle an empty task")
        self._seed = seed
        self._epoch, self._perm = -1, np.zeros([0], np.uint32)

    def __len__(self) -> int:
        return sys.maxsize

    def __str__(self) -> str:
        return f"EpochShuffle(seed={self._seed})"

    def _index(self, index: int) -> int:
        epoch, i = divmod(index, self._n)
        if self._n > self.SMALL:
            return int(index_shuffle(i, max_index=self._n - 1, seed=(self._seed + epoch) % 2**32, rounds=4))
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self._seed, epoch]).permutation(self._n).astype(np.uint32)
            self._epoch = epoch
        return int(self._perm[i])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._index(index)]


def host_stream(docs: grain.MapDataset, seed: int, shard_index: int, shard_count: int) -> grain.MapDataset:
    """Globally shuffled (a new order every epoch), endless, and this host's every shard_count-th document."""
    return EpochShuffle(docs, seed)[shard_index::shard_count]


# --- mixing ----------------------------------------------------------------------------------------------------

class MixtureIterDataset(grain.IterDataset):
    """Documents from several endless task streams, interleaved by weight (smooth weighted round-robin)."""

    def __init__(self, name: str, streams: Mapping[str, grain.MapDataset], languages: Mapping[str, int],
                 weights: Mapping[str, float], phase: np.ndarray):
        super().__init__()
        self.name = name
        self.tasks = sorted(streams)
        self.streams = dict(streams)
        self.languages = dict(languages)
        total = sum(weights[t] for t in self.tasks)
        self.weights = np.asarray([weights[t] / total for t in self.tasks], np.float64)
        # starting credits in [0, 1): data shards that start out of step draw different tasks at the same time, so
        # their errors against the token shares cancel across a batch instead of adding up (the round-robin's bound
        # holds from any start)
        self.phase = np.asarray(phase, np.float64)

    def __iter__(self) -> _MixtureIterator:
        # kept so the pipeline's owner can read the live stream positions (the stage switch needs them)
        self.live = _MixtureIterator(self)
        return self.live


class _MixtureIterator(grain.DatasetIterator):
    def __init__(self, ds: MixtureIterDataset):
        super().__init__()
        self._ds = ds
        self.positions = {t: 0 for t in ds.tasks}
        self._credits = ds.phase.copy()

    def __next__(self) -> dict[str, np.ndarray]:
        self._credits += self._ds.weights
        i = int(np.argmax(self._credits))
        self._credits[i] -= 1.0
        task = self._ds.tasks[i]
        doc = self._ds.streams[task][self.positions[task]]
        self.positions[task] += 1
        return document_to_columns(doc, self._ds.languages[task])

    def get_state(self) -> dict[str, Any]:
        return {_MIXER: self._ds.name, "positions": dict(self.positions), "credits": self._credits.tolist()}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get(_MIXER) != self._ds.name or set(state["positions"]) != set(self._ds.tasks):
            raise ValueError(f"iterator state of mixture {state.get(_MIXER)!r} over {sorted(state['positions'])} "
                             f"does not fit mixture {self._ds.name!r} over {self._ds.tasks}")
        self.positions = {t: int(p) for t, p in state["positions"].items()}
        self._credits = np.asarray(state["credits"], np.float64)


# --- the pipeline ----------------------------------------------------------------------------------------------

def _shard(cfg: DataConfig) -> tuple[int, int]:
    if cfg.loader.shard_count is not None:
        return cfg.loader.shard_index, cfg.loader.shard_count
    import jax

    return jax.process_index(), jax.process_count()


class ShardedBatches(grain.IterDataset):
    """Each step, `rows` rows from every data shard this host reads, concatenated in shard order."""

    def __init__(self, shards: Mapping[int, grain.IterDataset], rows: int):
        super().__init__()
        self.shards, self.rows = dict(sorted(shards.items())), rows

    def __iter__(self) -> _ShardedBatchesIterator:
        return _ShardedBatchesIterator(self)


class _ShardedBatchesIterator(grain.DatasetIterator):
    def __init__(self, ds: ShardedBatches):
        super().__init__()
        self._its = {s: iter(shard.batch(ds.rows, drop_remainder=True)) for s, shard in ds.shards.items()}

    def __next__(self) -> dict[str, np.ndarray]:
        batches = [next(it) for it in self._its.values()]
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

    def get_state(self) -> dict[str, Any]:
        return {"shards": {str(s): it.get_state() for s, it in self._its.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        missing = sorted(set(map(str, self._its)) - set(state["shards"]))
        if missing:
            raise ValueError(f"iterator state lacks data shards {missing} that this host reads (it has "
                             f"{sorted(state['shards'], key=int)}): restore from the states of all processes "
                             "(merge_states)")
        for s, it in self._its.items():
            it.set_state(state["shards"][str(s)])


class PretrainIterator(grain.DatasetIterator):
    """Pre-training batches of one stage: host numpy dicts, or global `jax.Array`s on `mesh` when one is given.

    Data shards: the global batch is built from S independent streams (`loader.data_shards`, default the host
    count), each shard s reading every S-th document of each task and packing its own B/S rows per step. Host h of
    H builds shards h*S/H .. (h+1)*S/H-1, which are rows h*B/H .. (h+1)*B/H-1 of the global batch, so the global
    batches do not depend on H, and a state saved with one host count restores with another that divides S (the
    processes' states combined with `merge_states`).

    Attributes for logging: `target_shares` (language → token share), `task_shares`, `skipped` (task → reason →
    count), `local_batch_size`.
    """

    # grain's DatasetIterator.__del__ closes the iterator; one whose __init__ raised (a bad config) has nothing open
    _closed = True

    def __init__(self, cfg: DataConfig, batching: Batching, mesh: Any = None,
                 documents: Mapping[str, TaskDocuments] | None = None):
        tasks, shares = mixture.resolve(cfg)
        self.host, self.hosts = _shard(cfg)
        if batching.batch_size % self.hosts:
            raise ValueError(f"batch size {batching.batch_size} is not divisible by {self.hosts} hosts")
        docs = dict(documents) if documents is not None else load_documents(cfg, sorted(shares))
        self.cfg, self.batching, self.mesh = cfg, batching, mesh
        self.task_shares = shares
        self.target_shares = mixture.language_shares(tasks, shares)
        self.skipped = {n: d.skipped for n, d in docs.items() if d.skipped}
        self.local_batch_size = batching.batch_size // self.hosts
        self.documents = docs
        # weights per document: token share / packed positions per document (a document of n tokens incl. EOS
        # fills n - 1 positions)
        self._weights = {n: shares[n] / max(docs[n].mean_tokens - 1.0, 1e-9) for n in shares}
        self._languages = {n: LANGUAGE_INDEX[tasks[n].language] for n in shares}
        self._build(cfg.loader.data_shards or self.hosts)
        super().__init__(self._it)

    def _build(self, data_shards: int) -> None:
        """This host's pipelines for `data_shards` data shards (see the class docstring)."""
        loader, batching = self.cfg.loader, self.batching
        if data_shards % self.hosts or batching.batch_size % data_shards:
            raise ValueError(f"{data_shards} data shards (loader.data_shards, or the run's being resumed) must be a "
                             f"multiple of the host count {self.hosts} "
                             f"and divide the batch size {batching.batch_size}")
        self.data_shards = data_shards
        per_host = data_shards // self.hosts
        self._mixers = {}
        for s in range(self.host * per_host, (self.host + 1) * per_host):
            streams = {n: host_stream(self.documents[n].data, task_seed(batching.seed, n), s, data_shards)
                       for n in self.task_shares}
            phase = np.random.default_rng([batching.seed, s]).random(len(streams))
            self._mixers[s] = MixtureIterDataset(self.cfg.mixture.name, streams, self._languages, self._weights,
                                                 phase)
        rows = ShardedBatches({s: concat_then_split(m, batching.seq_len) for s, m in self._mixers.items()},
                              batching.batch_size // data_shards)
        ds = rows.map(lambda batch: to_contract(batch, loader.pad_id))
        if loader.prefetch_batches:  # a background thread builds batches while the accelerator steps
            ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=loader.prefetch_batches)
        self._it = iter(ds)

    def __next__(self) -> dict[str, Any]:
        batch = next(self._it)
        if self.mesh is None:
            return batch
        from sailor2_jax.sharding import global_batch

        return global_batch(batch, self.mesh)

    def get_state(self) -> dict[str, Any]:
        return {"mixture": self.cfg.mixture.name, "seed": self.batching.seed, "data_shards": self.data_shards,
                "pipeline": self._it.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state of this host, or the `merge_states` of all hosts of a run with another host count."""
        if state.get("mixture") != self.cfg.mixture.name:
            raise ValueError(f"iterator state is from mixture {state.get('mixture')!r}, this iterator reads "
                             f"{self.cfg.mixture.name!r}: use switch_stage() to move between stages")
        self._adopt(state["data_shards"], "the iterator state")
        self._it.set_state(state["pipeline"])

    def _adopt(self, data_shards: int, whose: str) -> None:
        """Rebuild for the data shards of the run being continued (whatever the host count now), unless the config
        fixes another count."""
        if data_shards == self.data_shards:
            return
        if self.cfg.loader.data_shards is not None:
            raise ValueError(f"{whose} has {data_shards} data shards, loader.data_shards is "
                             f"{self.cfg.loader.data_shards}: data streams carry over only between equal counts")
        self._build(data_shards)

    @staticmethod
    def merge_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """One state holding every data shard of the given per-process states (all of one run and step)."""
        first = states[0]
        for other in states[1:]:
            if {k: v for k, v in other.items() if k != "pipeline"} != \
                    {k: v for k, v in first.items() if k != "pipeline"}:
                raise ValueError(f"iterator states of different runs cannot be merged: {first} vs {other}")
        shards = {s: v for st in states for s, v in st["pipeline"]["shards"].items()}
        return {**first, "pipeline": {"shards": shards}}

    def stream_positions(self, state: dict[str, Any] | None = None) -> dict[int, dict[str, int]]:
        """Documents each data shard has taken from each task stream into the rows emitted so far (as of
        `state`): {data shard: {task: documents}}.

        Computed by restoring a prefetch-free replica to the state, so documents prefetched but not yet emitted do
        not count; the document straddling the last emitted row's end counts as taken.
        """
        replica = PretrainIterator(self.cfg.replace(loader=self.cfg.loader.replace(prefetch_batches=0)),
                                   self.batching, documents=self.documents)
        replica.set_state(state or self.get_state())
        return {s: dict(m.live.positions) for s, m in replica._mixers.items()}

    def continue_from(self, previous: PretrainIterator) -> None:
        """Start this stage with every task stream it shares with `previous` (an earlier stage) where that one was.

        Streams continue with the next unread document; the unread tail of the one document per data shard
        straddling the last emitted row of `previous` is not carried over (packing state does not transfer between
        mixtures).
        """
        if previous.batching.seed != self.batching.seed:
            raise ValueError(f"the data seed differs between stages ({previous.batching.seed} vs "
                             f"{self.batching.seed}): replayed tasks would be reshuffled; use one seed for both")
        self._adopt(previous.data_shards, f"the previous stage ({previous.cfg.mixture.name})")
        old = previous.stream_positions()
        state = self.get_state()
        for s, shard_state in state["pipeline"]["shards"].items():
            _set_positions(shard_state, {t: p for t, p in old[int(s)].items() if t in self._mixers[int(s)].tasks})
        self._it.set_state(state["pipeline"])
        log.info("stage %s continues task streams of %s at %s", self.cfg.mixture.name, previous.cfg.mixture.name,
                 old)


def _set_positions(state: Any, positions: dict[str, int]) -> None:
    """Overwrite the mixer's positions inside grain's nested pipeline state (its nesting is grain's business)."""
    if isinstance(state, dict):
        if _MIXER in state:
            state["positions"].update(positions)
            return
        for value in state.values():
            _set_positions(value, positions)


def make_pretrain_iterator(cfg: DataConfig | str, batching: Batching, mesh: Any = None,
                           overrides: Sequence[str] = ()) -> PretrainIterator:
    """The pre-training iterator for a stage config (a `DataConfig`, a path or a packaged name)."""
    if not isinstance(cfg, DataConfig):
        cfg = load_data_config(cfg, overrides)
    return PretrainIterator(cfg, batching, mesh)


def switch_stage(previous: PretrainIterator, cfg: DataConfig | str, mesh: Any = None,
                 overrides: Sequence[str] = ()) -> PretrainIterator:
    """The next stage's iterator (same batching), continuing every task stream it shares with `previous` (the last
    stage's iterator, live or restored from a checkpoint)."""
    it = make_pretrain_iterator(cfg, previous.batching, mesh, overrides)
    it.continue_from(previous)
    return it


def demo_iterator(stage: int, mesh: Any = None, seq_len: int = 128, batch_size: int = 8,
                  overrides: Sequence[str] = ()) -> PretrainIterator:
    """The demo's stage-1 or stage-2 batches over the embedded UDHR text (data/udhr), real tokenizer, seqio,
    grain. Move from stage 1 to stage 2 with `switch_stage(stage1_iterator, "demo_stage2", mesh)`."""
    if stage not in (1, 2):
        raise ValueError(f"the demo has stages 1 and 2, not {stage}")
    return make_pretrain_iterator(f"demo_stage{stage}", Batching(batch_size=batch_size, seq_len=seq_len), mesh,
                                  overrides)


def realised_shares(batches: Iterator[Mapping[str, np.ndarray]] | Sequence[Mapping[str, np.ndarray]]
                    ) -> tuple[dict[str, float], int, int]:
    """Language → share of target tokens (loss_mask) over `batches`; plus real and total positions."""
    counts = np.zeros(len(LANGUAGES), np.int64)
    real = total = 0
    for batch in batches:
        langs, mask = np.asarray(batch["languages"]), np.asarray(batch["loss_mask"]) > 0
        counts += np.bincount(langs[mask], minlength=len(LANGUAGES))
        real += int(mask.sum())
        total += mask.size
    shares = {lang: float(c) / max(real, 1) for lang, c in zip(LANGUAGES, counts) if c}
    return shares, real, total
