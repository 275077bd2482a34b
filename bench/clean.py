"""Cleaning throughput and dedup recall, ours vs datatrove's stock MinHash pipeline, on the same documents.

    .venv/bin/python bench/clean.py [--docs 2000] [--out runs/bench-clean]

Corpus: ~3 KB English documents built from UDHR words (sailor2_jax.embedded.synthetic), 10 % of them followed by a
near-duplicate (3 word edits + two lines swapped, Jaccard ≈ 0.9) and 5 % by an exact copy. Every measurement runs
in one process; "docs/s per core" divides the documents by the CPU time of that process (all its threads), which
other jobs on a shared machine barely disturb, and wall-clock docs/s is shown too. Each row is repeated
(--repeats, interleaved) and its best run kept. Rows:
- ours, MinHash alone: shingling, 256 min-hashes, 25×10 bands, clustering (no I/O);
- ours, whole pipeline: `run_clean` with one task: read, normalise, URL/exact dedup, heuristics, fastText LID,
  MinHash, frequent lines, writing kept/ and rejected/;
- datatrove stock MinHash: its four stages (signatures, buckets, clusters, filter) with the default MinhashConfig
  (5-grams, 14 buckets × 8 hashes, xxhash-64, spaCy English word tokenizer), documents fed from memory.
- ours, whole pipeline with substring dedup: the same with the exact-substring stages (suffix array per shard), in
  one task and in two (anchors exchanged between the shards);
A last row runs our whole pipeline on a 15-language corpus of the same size.
Needs `spacy` and `xxhash` for the datatrove row (pip install spacy xxhash); without them that row is skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import time
from pathlib import Path

from sailor2_jax.data.clean import CleanConfig, run_clean
from sailor2_jax.data.clean.params import SAILCRAFT
from sailor2_jax.data.clean.minhash import MinHasher, cluster_duplicates
from sailor2_jax.data.clean.text import words
from sailor2_jax.embedded.synthetic import near_duplicate, synthetic_document
from sailor2_jax.languages import LANGUAGES

WORDS_PER_DOC = 500  # ≈ 3 KB of English


def build_corpus(n: int, langs: tuple[str, ...], seed: int = 0) -> tuple[list[dict], set[str]]:
    """Originals with planted duplicates right after them (so keep-first keeps the original)."""
    rng = random.Random(seed)
    records, dups = [], set()
    i = 0
    while len(records) < n:
        lang = langs[i % len(langs)]
        text = synthetic_document(lang, rng, WORDS_PER_DOC)
        records.append({"id": f"d{i}", "text": text, "language": lang})
        if rng.random() < 0.10:
            records.append({"id": f"d{i}-near", "text": near_duplicate(text, lang, rng), "language": lang})
            dups.add(f"d{i}-near")
        if rng.random() < 0.05:
            records.append({"id": f"d{i}-exact", "text": text, "language": lang})
            dups.add(f"d{i}-exact")
        i += 1
    return records, dups


def score(removed: set[str], dups: set[str]) -> dict:
    return {"recall": len(removed & dups) / len(dups), "false_positives": len(removed - dups)}


class Timer:
    """Wall-clock and process CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def rates(self, docs: int) -> dict:
        return {"docs_per_s": docs / self.cpu, "docs_per_s_wall": docs / self.wall, "cpu_seconds": self.cpu,
                "wall_seconds": self.wall}


def bench_our_minhash(records: list[dict], dups: set[str]) -> dict:
    hasher = MinHasher()
    with Timer() as t:
        shingles = [hasher.shingles(words(r["text"], SAILCRAFT[r["language"]], r["language"])) for r in records]
        dup_of = cluster_duplicates(hasher.band_keys(hasher.signatures(shingles)))
    removed = {r["id"] for r, d in zip(records, dup_of) if d >= 0}
    return {**t.rates(len(records)), **score(removed, dups)}


def bench_our_pipeline(records: list[dict], dups: set[str], out: Path, tasks: int = 1,
                       substring: bool = False) -> dict:
    src = out / "input"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for k in range(tasks):  # one file per task
        part = records[len(records) * k // tasks:len(records) * (k + 1) // tasks]
        (src / f"{k}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))
    config = CleanConfig(executor={"tasks": tasks, "workers": 1}, progress=False, compression="none",
                         substring_dedup={"enabled": substring})
    with Timer() as t:
        summary = run_clean([str(src)], out, config)
    removed = set()
    for path in (out / "rejected").glob("*.jsonl"):
        for line in path.open():
            r = json.loads(line)
            if r["_rejection"]["step"] in ("exact_dedup", "minhash"):
                removed.add(r["id"])
    return {**t.rates(len(records)), "kept": summary["documents"]["kept"], **score(removed, dups)}


_DATATROVE_KEPT: list[str] = []


def _collect_kept(data, rank: int = 0, world_size: int = 1):
    for doc in data:
        _DATATROVE_KEPT.append(doc.id)
        yield doc


def bench_datatrove(records: list[dict], dups: set[str], out: Path) -> dict | str:
    # datatrove's English word tokenizer is spaCy's, and its default hash is xxhash
    missing = [m for m in ("spacy", "xxhash") if importlib.util.find_spec(m) is None]
    if missing:
        return f"skipped: {', '.join(missing)} not installed (pip install spacy 'xxhash<4')"
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )

    docs = [Document(text=r["text"], id=r["id"]) for r in records]
    cfg = MinhashConfig()
    base = out / "datatrove"
    shutil.rmtree(base, ignore_errors=True)
    _DATATROVE_KEPT.clear()
    stages = [
        [docs, MinhashDedupSignature(output_folder=str(base / "sigs"), config=cfg)],
        [MinhashDedupBuckets(input_folder=str(base / "sigs"), output_folder=str(base / "buckets"), config=cfg)],
        [MinhashDedupCluster(input_folder=str(base / "buckets"), output_folder=str(base / "remove"), config=cfg)],
        [docs, MinhashDedupFilter(input_folder=str(base / "remove")), _collect_kept],
    ]
    with Timer() as t:  # workers=1: every task runs inside this process, so its CPU time is counted
        for i, pipeline in enumerate(stages):
            tasks = cfg.num_buckets if i == 1 else 1
            LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=str(base / f"logs{i}"),
                                  skip_completed=False).run()
    removed = {r["id"] for r in records} - set(_DATATROVE_KEPT)
    return {**t.rates(len(records)), **score(removed, dups)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--out", default="runs/bench-clean")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    out = Path(args.out)
    records, dups = build_corpus(args.docs, ("en",))
    multi, multi_dups = build_corpus(args.docs, LANGUAGES, seed=1)
    mean_kb = sum(len(r["text"].encode()) for r in records) / len(records) / 1000
    results: dict = {"docs": len(records), "planted_duplicates": len(dups), "mean_kb": round(mean_kb, 2)}
    runs = {
        "ours_minhash": lambda: bench_our_minhash(records, dups),
        "ours_pipeline": lambda: bench_our_pipeline(records, dups, out / "ours"),
        "ours_pipeline_substring": lambda: bench_our_pipeline(records, dups, out / "ours-sub", substring=True),
        "ours_pipeline_substring_2_shards": lambda: bench_our_pipeline(records, dups, out / "ours-sub2", tasks=2,
                                                                       substring=True),
        "datatrove_minhash": lambda: bench_datatrove(records, dups, out),
        "ours_pipeline_15_languages": lambda: bench_our_pipeline(multi, multi_dups, out / "ours-15"),
    }
    for _ in range(args.repeats):
        for key, fn in runs.items():
            r = fn()
            best = results.get(key)
            if best is None or (isinstance(r, dict) and r["docs_per_s"] > best["docs_per_s"]):
                results[key] = r
    print(f"\n{len(records)} English documents, {mean_kb:.2f} KB on average, {len(dups)} planted duplicates; "
          f"one process; per core = per CPU-second of that process; best of {args.repeats}")
    print(f"{'':36}{'docs/s/core':>12}{'wall docs/s':>12}{'recall':>8}{'false +':>9}")
    for key, label in (("ours_minhash", "ours: MinHash alone"), ("ours_pipeline", "ours: whole pipeline"),
                       ("ours_pipeline_substring", "ours: + substring dedup"),
                       ("ours_pipeline_substring_2_shards", "ours: + substring dedup, 2 shards"),
                       ("datatrove_minhash", "datatrove stock MinHash pipeline"),
                       ("ours_pipeline_15_languages", "ours: whole pipeline, 15 languages")):
        r = results[key]
        if isinstance(r, str):
            print(f"{label:36}{r}")
        else:
            print(f"{label:36}{r['docs_per_s']:>12.0f}{r['docs_per_s_wall']:>12.0f}{r['recall']:>8.3f}"
                  f"{r['false_positives']:>9}")
    if isinstance(results["datatrove_minhash"], dict):
        base = results["datatrove_minhash"]["docs_per_s"]
        for key in ("ours_minhash", "ours_pipeline"):
            results[key]["speedup_vs_datatrove"] = results[key]["docs_per_s"] / base
        print(f"speed-up vs datatrove: MinHash alone {results['ours_minhash']['speedup_vs_datatrove']:.1f}×, "
              f"whole pipeline {results['ours_pipeline']['speedup_vs_datatrove']:.1f}×")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
