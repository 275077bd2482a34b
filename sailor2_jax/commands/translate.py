"""`sailor2-jax translate`: documents or preference records into SEA languages with an NLLB/M2M100 model."""

from __future__ import annotations

import argparse

from sailor2_jax.commands._args import (EXECUTOR_FLAGS, add_executor_arguments, add_overrides_argument, comma_list,
                                        flag_overrides, positive_int, renamed, run_and_report)

NAME = "translate"
HELP = ("translate JSONL/Parquet records with an NLLB/M2M100 model (CTranslate2 or transformers), on the cleaning "
        "executors (local, Slurm, Ray)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="NLLB/M2M100 model: a Hugging Face directory (converted once for CTranslate2) or a "
                             "CTranslate2 directory with the tokenizer files")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH", help="JSONL/Parquet files or dirs")
    renamed(parser, "--output", "--output-dir")
    parser.add_argument("--output-dir", required=True, metavar="DIR",
                        help="writes DIR/<target>/*.jsonl.gz, DIR/rejected/ and DIR/summary.json")
    parser.add_argument("--target", required=True, type=comma_list, metavar="LANGS",
                        help="comma-separated targets, e.g. th,vi,id")
    parser.add_argument("--source", metavar="LANG", help="source language (default en)")
    parser.add_argument("--fields", type=comma_list, metavar="NAMES",
                        help="comma-separated fields to translate (default text; preference records: "
                             "prompt,chosen,rejected — strings or chat messages)")
    parser.add_argument("--engine", choices=["auto", "ctranslate2", "transformers"])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compute-type", metavar="TYPE", help="int8, bfloat16, float32, ... (default auto)")
    parser.add_argument("--beam-size", type=positive_int, metavar="N")
    parser.add_argument("--config", metavar="CFG", help="YAML config (keys of TranslateConfig: executor, batch_size, "
                        "max_segment_tokens, ...); flags override it")
    add_executor_arguments(parser)
    add_overrides_argument(parser, "batch_size=64 max_segment_tokens=160")


def run(args: argparse.Namespace) -> int:
    from sailor2_jax.data.translate import load_translate_config, run_translate

    config = load_translate_config(args.config, flag_overrides(args, {
        "model": "model", "target": "targets", "source": "source", "fields": "fields", "engine": "engine",
        "device": "device", "compute_type": "compute_type", "beam_size": "beam_size", **EXECUTOR_FLAGS}))

    def report(summary: dict) -> None:
        for target, t in summary["targets"].items():
            rejected = ", ".join(f"{k} {v}" for k, v in sorted(t["rejected"].items())) or "-"
            print(f"{config.source} → {target}: translated {t['translated']}, rejected: {rejected}")
        engine = summary["engine"]
        print(f"{summary['records']['read']} records read ({summary['records']['unreadable']} unreadable); "
              f"{summary['segments']} segments at {summary['segments_per_second']} segments/s "
              f"({engine['engine']}, {engine['device']}, {engine['compute_type']})")
    return run_and_report(NAME, lambda: run_translate(args.input, args.output_dir, config), report)
