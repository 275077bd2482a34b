"""`sailor2-jax cache --config CFG`: tokenise every task of a stage once (Apache Beam) into ArrayRecord shards."""

from __future__ import annotations

import argparse
import json
import logging

NAME = "cache"
HELP = "tokenise a stage's seqio tasks with Apache Beam into ArrayRecord shards plus token statistics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="a data config: YAML path or packaged name (stage1, stage2, demo_stage1, demo_stage2)")
    parser.add_argument("--overwrite", action="store_true", help="re-cache tasks that are already cached")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. cache_dir=/tmp/c")
    parser.add_argument("--pipeline-option", action="append", default=[], metavar="OPT",
                        help="a Beam pipeline option, repeatable: --pipeline-option=--runner=DataflowRunner "
                             "(default runner: DirectRunner)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sailor2_jax.data.cache import cache
    from sailor2_jax.data.config import load_data_config

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_data_config(args.config, args.overrides)
    with tqdm(total=1, desc=f"caching {cfg.mixture.name} (Beam)", unit="pipeline") as bar:
        stats = cache(cfg, args.pipeline_option, overwrite=args.overwrite)
        bar.update(1)
    summary = {name: {k: s[k] for k in ("language", "documents", "tokens", "skipped")} for name, s in stats.items()}
    print(json.dumps({"cache_dir": cfg.cache_dir, "tasks": summary}, indent=2))
    return 0
