"""`sailor2-jax quality train|select`: fastText quality classifiers per language and top-fraction selection."""

from __future__ import annotations

import argparse
import json
import sys

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
    t.add_argument("--out", required=True, metavar="MODEL", help="model path, e.g. runs/quality/th.bin")
    t.add_argument("--max-per-class", type=int, default=10_000, metavar="N", help="examples per class (10K)")
    t.add_argument("--held-out", type=float, default=0.1, metavar="F", help="share held out for the metrics")
    t.add_argument("--dim", type=int, default=128)
    t.add_argument("--epoch", type=int, default=10)
    t.add_argument("--lr", type=float, default=0.2)
    t.add_argument("--word-ngrams", type=int, default=2)
    t.add_argument("--bucket", type=int, default=200_000, help="hash buckets of the word n-grams")
    t.add_argument("--threads", type=int, default=1, help="fastText threads (more is faster, not reproducible)")
    t.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("select", help="add quality_score to every record; keep the top fraction per language",
                       description="Writes DIR/kept/<lang>/, DIR/rejected/<lang>/, DIR/quality.png, "
                       "DIR/summary.json.")
    s.add_argument("--model", nargs="+", required=True, metavar="MODEL", help="one or more models (one per language)")
    s.add_argument("--input", nargs="+", required=True, metavar="PATH")
    s.add_argument("--output", required=True, metavar="DIR")
    s.add_argument("--keep", type=float, required=True, metavar="F", help="fraction kept per language, e.g. 0.15")
    s.add_argument("--language", metavar="LANG", help="language of records without a `language` field")
    s.add_argument("--tasks", type=int, default=1, metavar="N", help="executor.tasks: input shards")
    s.add_argument("--workers", type=int, default=1, metavar="N", help="executor.workers (local executor)")
    s.add_argument("--executor", choices=["local", "slurm", "ray"], default="local")


def run(args: argparse.Namespace) -> int:
    if args.action == "train":
        return _train(args)
    return _select(args)


def _train(args: argparse.Namespace) -> int:
    from sailor2_jax.data.quality import TrainSettings, train

    settings = TrainSettings(dim=args.dim, epoch=args.epoch, lr=args.lr, word_ngrams=args.word_ngrams,
                             bucket=args.bucket, threads=args.threads, seed=args.seed, held_out=args.held_out,
                             max_per_class=args.max_per_class)
    info = train(args.positive, args.negative, args.language, args.out, settings)
    m = info["held_out_metrics"]
    print(json.dumps({"model": args.out, "language": info["language"], "examples": info["examples"],
                      "held_out": m}, indent=1))
    return 0


def _select(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from sailor2_jax.data.clean.summary import AccountingError
    from sailor2_jax.data.quality import SelectConfig, run_select

    try:
        config = SelectConfig(models=args.model, keep=args.keep, language=args.language,
                              executor={"kind": args.executor, "tasks": args.tasks, "workers": args.workers})
    except ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    try:
        summary = run_select(args.input, args.output, config)
    except AccountingError as e:
        print(f"sailor2-jax quality: error: {e}", file=sys.stderr)
        return 1
    if summary.get("submitted"):
        print(f"submitted to Slurm; logs under {summary['logs']}")
        return 0
    for lang, c in summary["languages"].items():
        print(f"{lang}: kept {c['kept']} of {c['documents']} (cut {c['cut']})")
    d = summary["documents"]
    print(f"accounting holds: kept {d['kept']} + rejected {d['rejected']} = read {d['read']}; "
          f"histogram: {args.output}/quality.png")
    return 0
