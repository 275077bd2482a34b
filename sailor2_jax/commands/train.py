"""`sailor2-jax train`: pre-training, SFT or DPO, as the config's objective says; rerunning resumes."""

from __future__ import annotations

import argparse
from pathlib import Path

from sailor2_jax.train import multihost

NAME = "train"
HELP = ("train a model from a config (pre-training, SFT or DPO); rerunning the same command resumes from the "
        "latest checkpoint in the output directory")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="a train config: YAML path or packaged name (e.g. demo_pretrain, sailor2-1b_stage1)")
    p.add_argument("--output-dir", help="checkpoints, metrics.jsonl and TensorBoard logs (default: runs/<config>)")
    p.add_argument("--steps", type=int, help="total steps (overrides `steps` in the config)")
    multihost.add_arguments(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. data.seq_len=512")


def run(args: argparse.Namespace) -> int:
    multihost.initialize_from(args)  # before anything touches a JAX backend: a multi-host job is joined first

    from sailor2_jax.config import find_config, load
    from sailor2_jax.train.config import TrainConfig
    from sailor2_jax.train.loop import train

    overrides = list(args.overrides) + ([f"steps={args.steps}"] if args.steps is not None else [])
    cfg = load(TrainConfig, find_config("train", args.config), overrides)
    output_dir = args.output_dir or str(Path("runs") / Path(args.config).stem)  # a bucket URL works too
    result = train(cfg, output_dir)
    where = f"resumed from step {result.resumed_from}, " if result.resumed_from is not None else ""
    if result.stopped == "non_finite":
        print(f"stopped at step {result.step}: {cfg.max_bad_steps} non-finite steps in a row; the last good "
              f"checkpoint is in {output_dir}/checkpoints")
        return 1
    print(f"trained to step {result.step} ({where}loss {result.metrics.get('loss', float('nan')):.4f}); "
          f"checkpoints in {output_dir}/checkpoints, metrics in {result.metrics_dir}")
    return 0
