"""`sailor2-jax inspect-data --config CFG --batches N`: check a mixture before spending accelerator time on it."""

from __future__ import annotations

import argparse
import json

NAME = "inspect-data"
HELP = "build N batches of a stage's data and print target vs realised language token shares as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="a data config: YAML path or packaged name (stage1, stage2, demo_stage1, demo_stage2)")
    parser.add_argument("--batches", type=int, default=100, help="batches to build (default 100)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. loader.seq_len=512")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sailor2_jax.data.config import load_data_config
    from sailor2_jax.data.loader import PretrainIterator, realised_shares

    if args.batches <= 0:
        raise ValueError(f"--batches must be positive, got {args.batches}")
    # one host's view: the mixture is the same on every host
    cfg = load_data_config(args.config, [*args.overrides, "loader.shard_index=0", "loader.shard_count=1"])
    it = PretrainIterator(cfg)
    batches = (next(it) for _ in tqdm(range(args.batches), desc="batches", unit="batch"))
    realised, real, total = realised_shares(batches)
    report = {
        "config": args.config,
        "mixture": cfg.mixture.name,
        "batches": args.batches,
        "target": {k: round(v, 6) for k, v in it.target_shares.items()},
        "realised": {k: round(v, 6) for k, v in realised.items()},
        "max_abs_share_error": round(max(abs(realised.get(k, 0.0) - v) for k, v in it.target_shares.items()), 6),
        "tokens_per_batch": cfg.loader.batch_size * cfg.loader.seq_len,
        "target_tokens_per_batch": real / args.batches,
        "padding_fraction": 1.0 - real / total,
        "task_shares": {k: round(v, 6) for k, v in sorted(it.task_shares.items())},
        "skipped": it.skipped,
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0
