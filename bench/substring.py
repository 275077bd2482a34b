"""Exact-substring dedup: MB/s and peak memory per input MB, ours against two peers on the same bytes.

    .venv/bin/python bench/substring.py [--mb 8 32] [--shards 4] [--out runs/bench-substring]

Corpus: English documents of ~3 KB built from UDHR words (sailor2_jax.embedded.synthetic), 5 % of them carrying a
planted 300-byte paragraph shared with other documents; sizes in MB of UTF-8 text. Every measurement runs in a fresh
process (spawned), so its peak resident memory is its own: "peak/MB" is (peak RSS − RSS after imports and corpus) /
corpus MB. "MB/s per core" divides by the process's CPU time (robust on a shared machine), "MB/s" by the wall clock;
each row is the best of --repeats runs. Rows:
- ours, one shard: `suffix.repeated_ranges` (libdivsufsort suffix array + Kasai LCP + marking), the find stage's work;
- ours, N shards: the index, exchange and find work of N shards, run one after another (anchors, the exchange,
  the imported snippets, N suffix arrays), checked to mark exactly the bytes the one-shard run marks;
- peer 1, the suffix array alone: `pydivsufsort.divsufsort` + `kasai` (the floor of any suffix-array method);
- peer 2, hash every window: a 64-bit rolling hash of every 100-byte window (numpy prefix sums) and `np.unique`
  counts, the usual alternative to a suffix array (exact up to hash collisions), checked against ours.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import resource
import time
from pathlib import Path

import numpy as np

MIN_BYTES = 100


def corpus(mb: float, seed: int = 0) -> list[bytes]:
    from sailor2_jax.embedded.synthetic import synthetic_document

    rng = random.Random(seed)
    shared = [synthetic_document("en", rng, 50)[:300] for _ in range(20)]
    docs, size = [], 0
    while size < mb * 1e6:
        text = synthetic_document("en", rng, 500)
        if rng.random() < 0.05:
            lines = text.split("\n")
            lines.insert(rng.randrange(len(lines)), rng.choice(shared))
            text = "\n".join(lines)
        docs.append(text.encode())
        size += len(docs[-1])
    return docs


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def ours_one_shard(docs: list[bytes]) -> dict:
    from sailor2_jax.data.clean import suffix

    buf, starts, ends = suffix.build_buffer(docs)
    base = _current_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    ranges = suffix.repeated_ranges(buf, starts, ends, MIN_BYTES)
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "base_mb": base,
            "marked": int((ranges[:, 1] - ranges[:, 0]).sum()), "ranges": ranges.tolist()}


def ours_sharded(docs: list[bytes], shards: int) -> dict:
    """Index (buffers and anchors), exchange and find for `shards` shards, as the pipeline's stages do them."""
    from sailor2_jax.data.clean import suffix
    from sailor2_jax.data.clean.substring import ANCHOR, _to_send

    parts = [docs[len(docs) * s // shards:len(docs) * (s + 1) // shards] for s in range(shards)]
    base = _current_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    buffers, rows, owner = [], [], []
    for s, p in enumerate(parts):
        buf, starts, ends = suffix.build_buffer(p)
        buffers.append((buf, starts, ends))
        a = suffix.anchors(buf, starts, ends, MIN_BYTES, 50)
        rec = np.empty(len(a["hash"]), dtype=ANCHOR)
        for key in ANCHOR.names:
            rec[key] = a[key]
        rows.append(rec)
        owner.append(np.full(len(rec), s, dtype=np.uint64))
    t_index = time.perf_counter() - t0
    sent = _to_send(np.concatenate(rows), np.concatenate(owner))
    t_exchange = time.perf_counter() - t0 - t_index
    marked, imported, offset, ranges_all = 0, 0, 0, []
    for s, (buf, starts, ends) in enumerate(buffers):
        mine = sent[sent["dest"] == s]
        imports = [buffers[int(t)][0][int(a):int(b)].tobytes() for t, a, b in zip(mine["shard"], mine["start"],
                                                                                    mine["end"])]
        imported += sum(map(len, imports))
        ibuf, istarts, iends = suffix.build_buffer(imports)
        full = np.concatenate([buf, ibuf])
        ranges = suffix.repeated_ranges(full, np.concatenate([starts, istarts + len(buf)]),
                                        np.concatenate([ends, iends + len(buf)]), MIN_BYTES, limit=len(buf))
        marked += int((ranges[:, 1] - ranges[:, 0]).sum())
        ranges_all += (ranges + offset).tolist()
        offset += len(buf)
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "index_seconds": t_index,
            "exchange_seconds": t_exchange,
            "base_mb": base, "marked": marked, "anchors": int(sum(map(len, rows))), "imported_mb": imported / 1e6,
            "ranges": ranges_all}


def peer_suffix_array(docs: list[bytes]) -> dict:
    from pydivsufsort import divsufsort, kasai

    from sailor2_jax.data.clean import suffix

    buf, _, _ = suffix.build_buffer(docs)
    base = _current_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    sa = divsufsort(buf)
    kasai(buf, sa)
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "base_mb": base}


def peer_hash_windows(docs: list[bytes]) -> dict:
    """Every 100-byte window hashed (no window crosses a document), counted with np.unique, marked."""
    from sailor2_jax.data.clean import hashing, suffix

    buf, starts, ends = suffix.build_buffer(docs)
    base = _current_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    prefix = hashing.prefix_hashes(buf.astype(np.uint64))
    pos = np.arange(len(buf) - MIN_BYTES + 1)
    seg_end = np.repeat(ends, np.diff(np.append(starts, len(buf))))[: len(pos)]
    pos = pos[pos + MIN_BYTES <= seg_end]
    h = hashing.substring_hashes(prefix, pos, pos + MIN_BYTES)
    _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
    dup = pos[counts[inverse] > 1]
    mark = np.zeros(len(buf) + 1, dtype=np.int32)
    np.add.at(mark, dup, 1)
    np.add.at(mark, dup + MIN_BYTES, -1)
    marked = int((np.cumsum(mark)[:-1] > 0).sum())
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "base_mb": base, "marked": marked}


def _child(fn_name: str, mb: float, shards: int, queue) -> None:
    docs = corpus(mb)
    fn = globals()[fn_name]
    r = fn(docs, shards) if fn_name == "ours_sharded" else fn(docs)
    r["peak_mb"] = _rss_mb()
    r["input_mb"] = sum(map(len, docs)) / 1e6
    queue.put(r)


def measure(fn_name: str, mb: float, shards: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn_name, mb, shards, queue))
    p.start()
    r = queue.get()
    p.join()
    r["mb_per_s"] = r["input_mb"] / r["seconds"]
    r["mb_per_s_per_core"] = r["input_mb"] / r["cpu"]
    r["peak_per_input_mb"] = (r["peak_mb"] - r["base_mb"]) / r["input_mb"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, nargs="+", default=[8, 32])
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--out", default="runs/bench-substring")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for mb in args.mb:
        rows: dict[str, dict] = {}
        for _ in range(args.repeats):  # interleaved, best run kept
            for name in ("ours_one_shard", "ours_sharded", "peer_suffix_array", "peer_hash_windows"):
                r = measure(name, mb, args.shards)
                if name not in rows or r["mb_per_s_per_core"] > rows[name]["mb_per_s_per_core"]:
                    rows[name] = r
        one, sharded = rows["ours_one_shard"], rows["ours_sharded"]
        assert sharded["ranges"] == one["ranges"], "the sharded run must mark what the one-shard run marks"
        assert rows["peer_hash_windows"]["marked"] == one["marked"], "hashing every window must agree"
        for r in rows.values():
            r.pop("ranges", None)
        results.append({"mb": mb, **rows})
        print(f"\n{one['input_mb']:.1f} MB of text, {one['marked'] / 1e6:.2f} MB in repeated spans "
              f"(both ours and the window-hash peer mark exactly these)")
        print(f"{'':40}{'MB/s/core':>10}{'MB/s':>8}{'peak MB / input MB':>20}")
        for key, label in (("ours_one_shard", "ours, one shard"),
                           ("ours_sharded", f"ours, {args.shards} shards (all stages)"),
                           ("peer_suffix_array", "peer: divsufsort + kasai alone"),
                           ("peer_hash_windows", "peer: hash every window + np.unique")):
            r = rows[key]
            print(f"{label:40}{r['mb_per_s_per_core']:>10.2f}{r['mb_per_s']:>8.2f}{r['peak_per_input_mb']:>20.1f}")
        print(f"{args.shards} shards: {sharded['anchors']:,} anchors, {sharded['imported_mb']:.2f} MB imported; "
              f"index {sharded['index_seconds']:.1f} s, exchange {sharded['exchange_seconds']:.2f} s")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
