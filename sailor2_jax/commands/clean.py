"""`sailor2-jax clean`: Sailor2's data cleaning (datatrove pipeline) on JSONL or Parquet documents."""

from __future__ import annotations

import argparse

from sailor2_jax.commands._args import (EXECUTOR_FLAGS, add_executor_arguments, add_overrides_argument, flag_overrides,
                                        renamed, run_and_report)

NAME = "clean"
HELP = ("clean JSONL/Parquet documents as Sailor2 did: normalise, URL and exact dedup, sailcraft heuristics, "
        "language ID, MinHash near-dedup, exact-substring dedup, frequent-line removal, the per-document filters "
        "again on changed texts, optional KenLM")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="JSONL (.jsonl, .jsonl.gz, .json) or Parquet files, or directories of them; records "
                             "have `text` and optionally `url`, `id`, `language`")
    renamed(parser, "--output", "--output-dir")
    parser.add_argument("--output-dir", required=True, metavar="DIR",
                        help="writes DIR/kept/, DIR/rejected/, DIR/summary.json and DIR/summary.png")
    parser.add_argument("--config", metavar="CFG",
                        help="a clean config: YAML path or packaged name (default, demo, ray)")
    parser.add_argument("--language", metavar="LANG",
                        help="expected language of records without a `language` field (e.g. th, ms, fil)")
    add_executor_arguments(parser)
    add_overrides_argument(parser, "lid_model=/models/lid.176.bin languages.id.lid_min=0.6")


def run(args: argparse.Namespace) -> int:
    from sailor2_jax.data.clean import load_clean_config, run_clean

    config = load_clean_config(args.config, flag_overrides(args, {"language": "language", **EXECUTOR_FLAGS}))

    def report(summary: dict) -> None:
        for step, t in summary["totals"].items():
            removed = ", ".join(f"{k} {v}" for k, v in sorted(t["removed"].items())) or "-"
            print(f"{step:<16}{t['docs_in']:>10} → {t['docs_out']:<10} {removed}")
        print(summary["message"])
    return run_and_report(NAME, lambda: run_clean(args.input, args.output_dir, config), report)
