"""`sailor2-jax translate`: documents or preference records into SEA languages with an NLLB/M2M100 model."""

from __future__ import annotations

import argparse
import sys

NAME = "translate"
HELP = ("translate JSONL/Parquet records with an NLLB/M2M100 model (CTranslate2 or transformers), on the cleaning "
        "executors (local, Slurm, Ray)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="NLLB/M2M100 model: a Hugging Face directory (converted once for CTranslate2) or a "
                             "CTranslate2 directory with the tokenizer files")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH", help="JSONL/Parquet files or dirs")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="writes DIR/<target>/*.jsonl.gz, DIR/rejected/ and DIR/summary.json")
    parser.add_argument("--target", required=True, metavar="LANGS", help="comma-separated targets, e.g. th,vi,id")
    parser.add_argument("--source", metavar="LANG", help="source language (default en)")
    parser.add_argument("--fields", metavar="NAMES",
                        help="comma-separated fields to translate (default text; preference records: "
                             "prompt,chosen,rejected — strings or chat messages)")
    parser.add_argument("--engine", choices=["auto", "ctranslate2", "transformers"])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compute-type", metavar="TYPE", help="int8, bfloat16, float32, ... (default auto)")
    parser.add_argument("--beam-size", type=int, metavar="N")
    parser.add_argument("--config", metavar="CFG", help="YAML config (keys of TranslateConfig: executor, batch_size, "
                        "max_segment_tokens, ...); flags override it")
    parser.add_argument("--tasks", type=int, metavar="N", help="executor.tasks: input shards")
    parser.add_argument("--workers", type=int, metavar="N", help="executor.workers (local executor)")


def run(args: argparse.Namespace) -> int:
    from sailor2_jax.data.clean.summary import AccountingError
    from sailor2_jax.data.translate import load_translate_config, run_translate

    split = (lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None)
    config = load_translate_config(args.config, model=args.model, targets=split(args.target), source=args.source,
                                   fields=split(args.fields), engine=args.engine, device=args.device,
                                   compute_type=args.compute_type, beam_size=args.beam_size)
    executor = {k: v for k, v in (("tasks", args.tasks), ("workers", args.workers)) if v is not None}
    if executor:
        config = load_translate_config(args.config, **{**config.model_dump(), "executor": {
            **config.executor.model_dump(), **executor}})
    try:
        summary = run_translate(args.input, args.output, config)
    except AccountingError as e:
        print(f"sailor2-jax translate: error: {e}", file=sys.stderr)
        return 1
    if summary.get("submitted"):
        print(f"submitted to Slurm; logs under {summary['logs']}")
        return 0
    for target, t in summary["targets"].items():
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(t["rejected"].items())) or "-"
        print(f"{config.source} → {target}: translated {t['translated']}, rejected: {rejected}")
    print(f"{summary['records']['read']} records read ({summary['records']['unreadable']} unreadable); "
          f"{summary['segments']} segments at {summary['segments_per_second']} segments/s "
          f"({summary['engine']['engine']}, {summary['engine']['device']}, {summary['engine']['compute_type']})")
    return 0
