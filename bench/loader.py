"""Data-loading throughput: tokens per second per CPU core, from raw text and from the ArrayRecord cache.

    .venv/bin/python bench/loader.py [--docs-per-language 300] [--batches 200] [--seq-len 4096] [--batch-size 8]
                                     [--data-shards 1 8 64]   # the cache path with each data-shard count

1. raw text → seqio task (normalise, tokenise with the Qwen2.5 tokenizer, EOS) → grain mix, pack, batch
   (`loader.source: seqio`), timed from reading the JSONL files to the last batch;
2. the Beam cache of the same tasks (built first, not timed) → grain shuffle, mix, pack, batch (`loader.source:
   cache`), the production path.

The corpus is web-like: documents of 1–3 KB built from the embedded UDHR paragraphs of all 15 languages. "Per core"
divides by the CPU time the process used (all threads), so it does not flatter a multi-threaded stage; wall-clock
tokens/s is printed too. Target (issue 4): ≥ 100K tokens/s per core from the cache.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from sailor2_jax.languages import LANGUAGES
from sailor2_jax.data.config import Batching, load_data_config
from sailor2_jax.embedded.udhr import documents

TARGET = 100_000


def write_corpus(root: Path, docs_per_language: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for lang in LANGUAGES:
        paragraphs = documents(lang)
        with open(root / f"{lang}.jsonl", "w", encoding="utf-8") as f:
            for _ in range(docs_per_language):
                target, parts = int(rng.integers(1000, 3000)), []
                while sum(len(p.encode()) for p in parts) < target:
                    parts.append(paragraphs[int(rng.integers(len(paragraphs)))])
                f.write(json.dumps({"text": "\n\n".join(parts)}, ensure_ascii=False) + "\n")


def write_config(root: Path) -> Path:
    cfg = {
        "tasks": [{"name": f"bench_{lang}", "language": lang,
                   "source": {"type": "jsonl", "files": [str(root / f"{lang}.jsonl")]}} for lang in LANGUAGES],
        "mixture": {"name": "bench", "rates": {lang: 1.0 for lang in LANGUAGES}},
        "cache_dir": str(root / "cache"),
        "cache_shards": 4,
        "loader": {"shard_index": 0, "shard_count": 1},
    }
    path = root / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def timed(make_iterator, batches: int) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    it = make_iterator()
    tokens = 0
    for _ in range(batches):
        tokens += int(next(it)["loss_mask"].sum())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"tokens": tokens, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "tokens_per_s": round(tokens / wall), "tokens_per_s_per_core": round(tokens / cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs-per-language", type=int, default=300)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data-shards", type=int, nargs="+", default=[1, 8, 64],
                        help="cache path: one host building this many data shards (batch size must divide)")
    args = parser.parse_args()

    from sailor2_jax.data import tasks  # noqa: F401  (imports TensorFlow and seqio before the clock starts)
    from sailor2_jax.data.cache import cache
    from sailor2_jax.data.loader import PretrainIterator

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_corpus(root, args.docs_per_language)
        path = write_config(root)
        batching = Batching(batch_size=args.batch_size, seq_len=args.seq_len)
        raw_cfg = load_data_config(path, ["loader.source=seqio"])
        cache_cfg = load_data_config(path, ["loader.source=cache"])
        t = time.perf_counter()
        stats = cache(cache_cfg)
        cache_s = time.perf_counter() - t
        corpus_tokens = sum(s["tokens"] for s in stats.values())
        # the raw-text path tokenises the whole corpus up front: time it over one pass of the corpus
        raw_batches = max(1, corpus_tokens // (args.batch_size * args.seq_len))
        raw = timed(lambda: PretrainIterator(raw_cfg, batching), raw_batches)
        cached = timed(lambda: PretrainIterator(cache_cfg, batching), args.batches)
        # one host building all of many data shards (the most a host ever builds): B/S rows from each shard
        by_shards = {str(n): timed(lambda n=n: PretrainIterator(cache_cfg.replace(
            loader=cache_cfg.loader.replace(data_shards=n)), batching), args.batches) for n in args.data_shards}
    result = {
        "corpus": {"languages": len(LANGUAGES), "documents": sum(s["documents"] for s in stats.values()),
                   "tokens": corpus_tokens},
        "batch": f"{args.batch_size} x {args.seq_len}",
        "raw_text_tokenise_pack_batch": raw,
        "beam_cache_build": {"wall_s": round(cache_s, 1), "tokens_per_s": round(corpus_tokens / cache_s)},
        "cache_load_pack_batch": cached,
        "cache_load_pack_batch_by_data_shards": by_shards,
        "target_tokens_per_s_per_core": TARGET,
        "cache_meets_target": cached["tokens_per_s_per_core"] >= TARGET,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
