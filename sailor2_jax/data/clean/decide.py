"""Stage 2, one task: apply the global steps, in the issue's order, on the facts of every shard.

Order: URL dedup (keep the longest text per normalised URL) → exact dedup (first of each text digest) → heuristics
→ LID → MinHash (first document of each cluster). Every step is a few numpy passes over arrays of all documents:
about 300 bytes per document (MinHash band keys are 200 of them), i.e. a few GB for 10 M web documents. Substring
dedup and frequent lines, which change texts rather than drop documents, follow in their own stages.
"""

from __future__ import annotations

import json

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolder

from sailor2_jax.data.stages.accounting import StepCounter, intern
from sailor2_jax.data.clean.config import CleanConfig
from sailor2_jax.data.clean.minhash import cluster_duplicates
from sailor2_jax.data.clean.step import CleanStep

# Stage-2 step codes stored per document in work/decisions (0: kept so far).
DECIDE_STEPS = ("kept", "url_dedup", "exact_dedup", "heuristics", "lid", "minhash")
# Reasons of the dedup steps (one each); heuristics and LID store a reason code per document.
FIXED_REASONS = {"url_dedup": "shorter_duplicate_url", "exact_dedup": "exact_duplicate", "minhash": "near_duplicate"}


def _first_of_groups(keys: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Boolean mask of the winner of each group of equal rows of `keys` (n × 2): the smallest `priority`."""
    order = np.lexsort((priority, keys[:, 1], keys[:, 0]))
    k = keys[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = np.any(k[1:] != k[:-1], axis=1)
    winner = np.zeros(len(k), dtype=bool)
    winner[order[first]] = True
    return winner


class Decide(CleanStep):
    name = "decide: URL dedup, exact dedup, heuristics, LID, MinHash"
    type = "🫂 - DEDUP"

    def __init__(self, config: CleanConfig, out_dir: DataFolder, tasks: int):
        super().__init__(config, out_dir)
        self.tasks = tasks

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        facts, langs, reasons, sizes = self._load()
        n = len(facts["lang"])
        step = np.zeros(n, dtype=np.int8)
        reason = np.full(n, -1, dtype=np.int32)
        lang, nbytes = facts["lang"], facts["nbytes"]

        def per_lang(sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Documents and bytes per language code among `sel`."""
            return (np.bincount(lang[sel], minlength=len(langs)),
                    np.bincount(lang[sel], weights=nbytes[sel], minlength=len(langs)))

        def remove(mask: np.ndarray, step_name: str, codes: np.ndarray | None = None) -> None:
            """Remove the alive documents in `mask` at `step_name`, with a reason code each (heuristics, LID) or
            the step's one reason (FIXED_REASONS)."""
            counter = StepCounter(step_name)
            alive = step == 0
            gone = alive & mask
            (docs_in, bytes_in), (docs_out, bytes_out) = per_lang(alive), per_lang(alive & ~mask)
            for li in np.flatnonzero(docs_in):
                counter.entered(langs[li], int(bytes_in[li]), docs=int(docs_in[li]))
                counter.left(langs[li], int(bytes_out[li]), docs=int(docs_out[li]))
            fixed = codes is None  # stored as reason -1
            names = [FIXED_REASONS[step_name]] if fixed else reasons
            codes = np.zeros(n, dtype=np.int32) if fixed else codes
            pairs, counts = np.unique(np.stack([lang[gone], codes[gone]]), axis=1, return_counts=True)
            for (li, code), cnt in zip(pairs.T, counts):
                counter.removed(langs[li], names[code], docs=int(cnt))
            step[gone] = DECIDE_STEPS.index(step_name)
            reason[gone] = -1 if fixed else codes[gone]
            counter.save(self.out_dir, 0)

        cfg = self.config
        index = np.arange(n)
        if cfg.url_dedup:
            alive = (step == 0) & facts["has_url"]
            # longest first, then input order: the winner of each URL group has the smallest priority
            priority = np.lexsort((index, -nbytes))
            rank_of = np.empty(n, dtype=np.int64)
            rank_of[priority] = index
            sub = np.flatnonzero(alive)
            win = np.zeros(n, dtype=bool)
            win[sub] = _first_of_groups(facts["url"][sub], rank_of[sub])
            remove(alive & ~win, "url_dedup")
        if cfg.exact_dedup:
            sub = np.flatnonzero(step == 0)
            win = np.zeros(n, dtype=bool)
            win[sub] = _first_of_groups(facts["text"][sub], sub)
            remove((step == 0) & ~win, "exact_dedup")
        if cfg.heuristics:
            remove(facts["heur"] >= 0, "heuristics", facts["heur"])
        if cfg.lid:
            remove(facts["lid"] >= 0, "lid", facts["lid"])
        if cfg.minhash.enabled:
            sub = np.flatnonzero(step == 0)
            dup_of = cluster_duplicates(facts["bands"][sub])
            mask = np.zeros(n, dtype=bool)
            mask[sub[dup_of >= 0]] = True
            remove(mask, "minhash")
        with self.out_dir.open("work/decisions/reasons.json", "w") as f:
            json.dump({"reasons": reasons}, f)
        start = 0
        for r, size in enumerate(sizes):
            with self.out_dir.open(f"work/decisions/{r:05d}.npz", "wb") as f:
                np.savez(f, step=step[start:start + size], reason=reason[start:start + size])
            start += size
        return
        yield  # a PipelineStep's run is a generator; this stage yields no documents

    def _load(self) -> tuple[dict[str, np.ndarray], list[str], list[str], list[int]]:
        """Concatenate every shard's facts, remapping each shard's language and reason codes to global ones."""
        langs: list[str] = []
        reasons: list[str] = []
        parts: dict[str, list[np.ndarray]] = {}
        sizes = []
        for r in range(self.tasks):
            with self.out_dir.open(f"work/facts/{r:05d}.json") as f:
                tables = json.load(f)
            with self.out_dir.open(f"work/facts/{r:05d}.npz", "rb") as f:
                arrays = dict(np.load(f))
            lang_map = np.array([intern(langs, x) for x in tables["langs"]] + [-1], dtype=np.int32)
            reason_map = np.array([intern(reasons, x) for x in tables["reasons"]] + [-1], dtype=np.int32)
            arrays["lang"] = lang_map[arrays["lang"]]
            for key in ("heur", "lid"):  # -1 (pass) indexes the trailing -1 of the map
                arrays[key] = reason_map[arrays[key]]
            for key in ("line_offsets", "line_hashes"):  # the frequent-lines stage reads them
                arrays.pop(key)
            sizes.append(len(arrays["lang"]))
            for k, v in arrays.items():
                parts.setdefault(k, []).append(v)
        facts = {k: np.concatenate(v) for k, v in parts.items()}
        return facts, langs, reasons, sizes
