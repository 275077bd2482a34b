"""`sailor2-jax eval`: perplexity, multiple-choice and generation tasks on an HF directory or a training run."""

from __future__ import annotations

import argparse

from sailor2_jax.commands._args import add_model_arguments, model_source

NAME = "eval"
HELP = ("evaluate a model on the tasks of a tasks file (perplexity, multiple choice, generation; SailCompass tasks "
        "from eval-import); writes "
        "DIR/results.json and DIR/<task>.jsonl")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--tasks", default="demo", help="a tasks YAML, or the name of a packaged one under "
                   "configs/eval/ (default: demo, the embedded UDHR tasks)")
    p.add_argument("--output-dir", required=True, help="where results.json and <task>.jsonl go")
    p.add_argument("--only", nargs="+", metavar="TASK", help="run only these tasks of the file")
    p.add_argument("--name", help="the model's name in results.json and reports (default: the path given)")
    p.add_argument("overrides", nargs="*", help="top-level fields of the tasks file, e.g. batch_size=8 "
                   "max_length=2048 data_dir=~/sailcompass")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sailor2_jax.eval.config import load_tasks
    from sailor2_jax.eval.run import Evaluator
    from sailor2_jax.model.source import open_model

    tasks = load_tasks(args.tasks, args.overrides, args.only)
    summary = Evaluator(open_model(model_source(args)), tasks).run(Path(args.output_dir), args.name or args.model or args.checkpoint)
    width = max(len(n) for n in summary["tasks"])
    for name, values in summary["tasks"].items():
        head = {k: v for k, v in values.items() if "/" not in k}
        print(f"{name:<{width}}  " + "  ".join(f"{k} {v:.4g}" for k, v in head.items()))
    skipped = sum(c["skipped"] for c in summary["records"].values())
    print(f"wrote {Path(args.output_dir) / 'results.json'} ({len(summary['tasks'])} tasks, {skipped} malformed "
          f"records skipped, {summary['seconds']}s)")
    return 0
