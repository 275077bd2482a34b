"""The proxies' data: the stage's documents split into training and held-out text, the proxy vocabulary, each proxy's
batches (the stage's own grain mixing and packing, `data.loader.PretrainIterator`, under the proxy's mixture) and the
validation batches every proxy is measured on.

Held-out text: the last `validation.fraction` of each task's tokens (at most `validation.max_tokens`), taken from
the task's last documents; the one document straddling the cut is split (its head trains, its tail is held out), so
a task of a single document still has validation text. The prior of the search is each language's share of the
*training* tokens.

Proxy vocabulary (`proxy.vocabulary`): with the Qwen2.5 tokenizer a proxy's embedding and LM head would have
151,936 rows each: at d 256, 78M parameters (1.2 GB of fp32 weights and AdamW moments) beside the 1.3M of the
layers, so 64 proxies would need ~80 GB. `compact` keeps only the token ids that occur in the stage's text (training
and held-out; the loader's padding id too), in increasing order, and maps them to 0..n-1 (rows padded to a multiple
of 64, as RegMix's proxies pad theirs); a batch's `tokens` and `targets` are remapped on the host. The softmax then
runs over the tokens the data can contain instead of all 151,936; a full-vocabulary proxy learns within its first
steps to give the absent ids no mass, so the losses differ by a small amount common to every mixture, and the
regression only needs their ranking. The demo's nine languages of UDHR text hold 1,058 distinct ids. At a real
stage's scale nearly every id occurs, the compact vocabulary is the full one, and reading every token to find out is
a pass over the data: `sailor2_stage1.yaml` says `full`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np
from tqdm import tqdm

from sailor2_jax.languages import LANGUAGE_INDEX, LANGUAGES
from sailor2_jax.data.config import Batching, DataConfig, load_data_config
from sailor2_jax.data.loader import PretrainIterator, TaskDocuments, load_documents
from sailor2_jax.data.packing import concat_then_split, document_to_columns, to_contract
from sailor2_jax.regmix.config import ProxyConfig, RegMixConfig, ValidationConfig

log = logging.getLogger(__name__)

VOCAB_MULTIPLE = 64


class Vocabulary:
    """The proxies' token ids: `ids` (increasing) become 0..len(ids)-1; None keeps the tokenizer's ids."""

    def __init__(self, ids: np.ndarray | None, size: int):
        self.ids, self.size = ids, size  # size: the proxy's embedding rows
        if ids is not None:
            self._table = np.full(int(ids[-1]) + 1, -1, np.int32)
            self._table[ids] = np.arange(len(ids), dtype=np.int32)

    @classmethod
    def compact(cls, documents: Iterator[np.ndarray], also: Sequence[int] = ()) -> Vocabulary:
        seen = np.zeros(0, bool)
        for doc in documents:
            top = int(doc.max()) + 1
            if top > len(seen):
                seen = np.concatenate([seen, np.zeros(top - len(seen), bool)])
            seen[doc] = True
        ids = np.union1d(np.flatnonzero(seen), np.asarray(also, np.int64)).astype(np.int32)
        return cls(ids, -(-len(ids) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE)

    def remap(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`tokens` and `targets` in proxy ids (every id of the stage's text has one)."""
        out = dict(batch)
        if self.ids is not None:
            for key in ("tokens", "targets"):
                out[key] = self._table[batch[key]]
        return out


@dataclasses.dataclass(frozen=True)
class SplitTask:
    train: TaskDocuments
    held_out: list[np.ndarray]  # the task's last tokens: the tail of one document, then whole documents
    train_tokens: int


def split_task(docs: TaskDocuments, cfg: ValidationConfig) -> SplitTask:
    """Hold out the last `cfg.fraction` of a task's tokens (at most `cfg.max_tokens`); see the module docstring."""
    n = len(docs.data)
    total = int(round(docs.mean_tokens * n))
    want = int(cfg.fraction * total) if cfg.max_tokens is None else min(int(cfg.fraction * total), cfg.max_tokens)
    if want < 2:
        raise ValueError(f"task {docs.name!r} has {total} tokens: too few to hold out validation.fraction="
                         f"{cfg.fraction} of them (at least 2 tokens)")
    held: list[np.ndarray] = []
    taken, i = 0, n - 1
    while taken < want:
        doc = np.asarray(docs.data[i])
        rest = want - taken
        if len(doc) <= rest and i > 0:  # the whole document (the first one always keeps a head for training)
            held.insert(0, doc)
            taken += len(doc)
            i -= 1
            continue
        if rest >= 2 and len(doc) - rest >= 2:  # split: the head trains, the tail is held out
            held.insert(0, doc[len(doc) - rest:])
            taken += rest
            head = doc[:len(doc) - rest]
            train = grain.MapDataset.concatenate([docs.data[:i], grain.MapDataset.source([head])])
            return SplitTask(TaskDocuments(docs.name, train, (total - taken) / (i + 1), docs.skipped), held,
                             total - taken)
        break
    train = docs.data[:i + 1]
    return SplitTask(TaskDocuments(docs.name, train, (total - taken) / (i + 1), docs.skipped), held, total - taken)


def validation_batches(held_out: Sequence[tuple[np.ndarray, int]], seq_len: int, rows: int, pad_id: int
                       ) -> list[dict[str, np.ndarray]]:
    """(tokens, language index) fragments packed in order into rows of `seq_len` (the loader's packing), `rows` rows a
    batch; the last batch is filled with empty rows (no targets)."""
    ds = grain.MapDataset.source(list(held_out)).map(lambda f: document_to_columns(f[0], f[1])).to_iter_dataset()
    packed = list(concat_then_split(ds, seq_len))
    stacked = {k: np.stack([r[k] for r in packed]) for k in packed[0]}
    fill = -len(packed) % rows
    stacked = {k: np.concatenate([v, np.zeros((fill,) + v.shape[1:], v.dtype)]) for k, v in stacked.items()}
    return [to_contract({k: v[i:i + rows] for k, v in stacked.items()}, pad_id)
            for i in range(0, len(packed) + fill, rows)]


class ProxyData:
    """Everything the proxies read, built once per search (see the module docstring)."""

    def __init__(self, stage: DataConfig, documents: Mapping[str, TaskDocuments], proxy: ProxyConfig,
                 validation: ValidationConfig):
        self.stage, self.proxy = stage, proxy
        tasks = {t.name: t for t in stage.tasks}
        if not tasks:
            raise ValueError(f"data config of mixture {stage.mixture.name!r} has no tasks to search over")
        self.languages = tuple(lang for lang in LANGUAGES if any(t.language == lang for t in stage.tasks))
        splits = {name: split_task(documents[name], validation) for name in sorted(tasks)}
        self.documents = {name: s.train for name, s in splits.items()}
        self.train_tokens = {lang: sum(s.train_tokens for n, s in splits.items() if tasks[n].language == lang)
                             for lang in self.languages}
        held = [(f, LANGUAGE_INDEX[tasks[name].language]) for name, s in splits.items() for f in s.held_out]
        if proxy.vocabulary == "compact":
            every = (np.asarray(d.data[i]) for d in documents.values() for i in range(len(d.data)))
            total = sum(len(d.data) for d in documents.values())
            self.vocab = Vocabulary.compact(tqdm(every, total=total, desc="proxy vocabulary", unit="doc",
                                                 leave=False), also=[stage.loader.pad_id])
        else:
            self.vocab = Vocabulary(None, proxy.model.vocab_size)
        self.validation = [self.vocab.remap(b) for b in
                           validation_batches(held, proxy.seq_len, validation.batch_size, stage.loader.pad_id)]
        self.validation_tokens = {lang: int(sum(len(f) - 1 for f, li in held if LANGUAGES[li] == lang))
                                  for lang in self.languages}

    @classmethod
    def load(cls, cfg: RegMixConfig) -> ProxyData:
        stage = load_data_config(cfg.data, cfg.data_overrides)
        if stage.mixture.replay is not None:
            log.warning("mixture %s replays %s: the search covers this stage's own tasks only", stage.mixture.name,
                        stage.mixture.replay.config)
        return cls(stage, load_documents(stage, sorted(t.name for t in stage.tasks)), cfg.proxy, cfg.validation)

    def iterator(self, weights: Sequence[float], name: str) -> PretrainIterator:
        """A proxy's batches: the stage's tasks mixed by `weights` (per language, in `languages` order) with the
        stage's grain pipeline, one data stream, `proxy.batch_size` rows of `proxy.seq_len` (token ids as the
        tokenizer gives them; `vocab.remap` turns them into proxy ids)."""
        rates = {lang: float(w) for lang, w in zip(self.languages, weights) if w > 0}
        mixture = self.stage.mixture.replace(name=name, rates=rates, rates_file=None, temperature=1.0, replay=None)
        loader = self.stage.loader.replace(shard_index=0, shard_count=1, data_shards=1, prefetch_batches=0)
        batching = Batching(batch_size=self.proxy.batch_size, seq_len=self.proxy.seq_len, seed=self.proxy.seed)
        return PretrainIterator(self.stage.replace(mixture=mixture, loader=loader), batching,
                                documents=self.documents)


class ProxyBatches:
    """The next batch of each of this process's proxies, stacked [P_local, B, T] in proxy ids, and their iterators'
    positions (a checkpoint holds them, so a resumed program reads on exactly where it stopped)."""

    def __init__(self, data: ProxyData, names: Sequence[str], weights: np.ndarray):
        self.vocab = data.vocab
        self.names = list(names)
        self.iterators = [data.iterator(w, name) for name, w in zip(names, weights)]

    def __iter__(self) -> ProxyBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batches = [self.vocab.remap(next(it)) for it in self.iterators]
        return {k: np.stack([b[k] for b in batches]) for k in batches[0]}

    def get_state(self) -> dict[str, Any]:
        return {"proxies": {name: it.get_state() for name, it in zip(self.names, self.iterators)}}

    def set_state(self, state: dict[str, Any]) -> None:
        saved = state["proxies"]
        if sorted(saved) != sorted(self.names):
            raise ValueError(f"checkpointed data positions are for proxies {sorted(saved)}, this program trains "
                             f"{sorted(self.names)}")
        for name, it in zip(self.names, self.iterators):
            it.set_state(saved[name])
