"""`sailor2-jax translate`: documents or preference records into SEA languages with an NLLB/M2M100 model."""

from __future__ import annotations

import argparse

from sailor2_jax.commands._args import add_executor_arguments, executor_overrides, positive_int, run_stages

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
    parser.add_argument("--beam-size", type=positive_int, metavar="N")
    parser.add_argument("--config", metavar="CFG", help="YAML config (keys of TranslateConfig: executor, batch_size, "
                        "max_segment_tokens, ...); flags override it")
    add_executor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from sailor2_jax.data.translate import load_translate_config, run_translate

    split = (lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None)
    config = load_translate_config(args.config, model=args.model, targets=split(args.target), source=args.source,
                                   fields=split(args.fields), engine=args.engine, device=args.device,
                                   compute_type=args.compute_type, beam_size=args.beam_size)
    if executor := executor_overrides(args):
        config = load_translate_config(args.config, **{**config.model_dump(), "executor": {
            **config.executor.model_dump(), **executor}})

    def report(summary: dict) -> None:
        for target, t in summary["targets"].items():
            rejected = ", ".join(f"{k} {v}" for k, v in sorted(t["rejected"].items())) or "-"
            print(f"{config.source} → {target}: translated {t['translated']}, rejected: {rejected}")
        engine = summary["engine"]
        print(f"{summary['records']['read']} records read ({summary['records']['unreadable']} unreadable); "
              f"{summary['segments']} segments at {summary['segments_per_second']} segments/s "
              f"({engine['engine']}, {engine['device']}, {engine['compute_type']})")
    return run_stages(NAME, lambda: run_translate(args.input, args.output, config), report)
