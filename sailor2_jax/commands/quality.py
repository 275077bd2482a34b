"""`sailor2-jax quality train|select`: fastText quality classifiers per language and top-fraction selection."""

from __future__ import annotations

import argparse
import json

from sailor2_jax.commands._args import (EXECUTOR_FLAGS, add_executor_arguments, add_overrides_argument, flag_overrides,
                                        positive_int, renamed, run_and_report)

NAME = "quality"
HELP = "train a fastText quality classifier for a language, or score records and keep the top fraction per language"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = sub.add_parser("train", help="fastText supervised on positive/negative records; held-out precision, recall, "
                       "AUC", description="Train MODEL (fastText binary) and MODEL.json (language, settings, metrics).")
    t.add_argument("--language", required=True, metavar="LANG")
    t.add_argument("--positive", nargs="+", required=True, metavar="PATH",
                   help="high-quality records (Sailor2: translated English high-quality data)")
    t.add_argument("--negative", nargs="+", required=True, metavar="PATH", help="web records (Sailor2: raw web)")
    renamed(t, "--out", "--output")
    t.add_argument("--output", required=True, metavar="MODEL", help="model path, e.g. runs/quality/th.bin")
    t.add_argument("--max-per-class", type=positive_int, metavar="N", help="examples per class (10K)")
    t.add_argument("--held-out", type=float, metavar="F", help="share held out for the metrics (0.1)")
    t.add_argument("--dim", type=positive_int, help="(128)")
    t.add_argument("--epoch", type=positive_int, help="(10)")
    t.add_argument("--lr", type=float, help="(0.2)")
    t.add_argument("--word-ngrams", type=positive_int, help="(2)")
    t.add_argument("--bucket", type=positive_int, help="hash buckets of the word n-grams (200K)")
    t.add_argument("--threads", type=positive_int, help="fastText threads (1; more is faster, not reproducible)")
    t.add_argument("--seed", type=int, help="(0)")
    s = sub.add_parser("select", help="add quality_score to every record; keep the top fraction per language",
                       description="Writes DIR/kept/<lang>/, DIR/rejected/<lang>/, DIR/quality.png, "
                       "DIR/summary.json.")
    s.add_argument("--model", nargs="+", required=True, metavar="MODEL", help="one or more models (one per language)")
    s.add_argument("--input", nargs="+", required=True, metavar="PATH")
    renamed(s, "--output", "--output-dir")
    s.add_argument("--output-dir", required=True, metavar="DIR")
    s.add_argument("--keep", type=float, required=True, metavar="F", help="fraction kept per language, e.g. 0.15")
    s.add_argument("--language", metavar="LANG", help="language of records without a `language` field")
    s.add_argument("--config", metavar="CFG", help="a YAML config (keys of SelectConfig: executor, text_key, "
                   "compression, ...); flags override it")
    add_executor_arguments(s)
    s.add_argument("--executor", choices=["local", "slurm", "ray"], help="executor.kind (default local)")
    add_overrides_argument(s, "executor.slurm.partition=cpu compression=none")


def run(args: argparse.Namespace) -> int:
    if args.action == "train":
        return _train(args)
    return _select(args)


def _train(args: argparse.Namespace) -> int:
    from sailor2_jax.config import load
    from sailor2_jax.data.quality import TrainSettings, train

    settings = load(TrainSettings, None, flag_overrides(args, {
        "dim": "dim", "epoch": "epoch", "lr": "lr", "word_ngrams": "word_ngrams", "bucket": "bucket",
        "threads": "threads", "seed": "seed", "held_out": "held_out", "max_per_class": "max_per_class"}))
    info = train(args.positive, args.negative, args.language, args.output, settings)
    m = info["held_out_metrics"]
    print(json.dumps({"model": args.output, "language": info["language"], "examples": info["examples"],
                      "held_out": m}, indent=1))
    return 0


def _select(args: argparse.Namespace) -> int:
    from sailor2_jax.data.quality import load_select_config, run_select

    config = load_select_config(args.config, flag_overrides(args, {
        "model": "models", "keep": "keep", "language": "language", "executor": "executor.kind", **EXECUTOR_FLAGS}))

    def report(summary: dict) -> None:
        for lang, c in summary["languages"].items():
            print(f"{lang}: kept {c['kept']} of {c['documents']} (cut {c['cut']})")
        d = summary["documents"]
        print(f"accounting holds: kept {d['kept']} + rejected {d['rejected']} = read {d['read']}; "
              f"histogram: {args.output_dir}/quality.png")
    return run_and_report(NAME, lambda: run_select(args.input, args.output_dir, config), report)
