"""`sailor2-jax compile`: ahead-of-time compile a training config for a TPU slice, here, with no TPU."""

from __future__ import annotations

import argparse
import json
import os

NAME = "compile"
HELP = ("compile a config's training step for a TPU slice with the real TPU compiler, on this machine (no TPU, no "
        "checkpoint needed): HBM per chip and whether it fits, the attention kernel lowered, FLOPs per step and a "
        "roofline step time and MFU")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True,
                   help="a train config: YAML path or packaged name (e.g. sailor2-1b_stage1)")
    p.add_argument("--topology", required=True,
                   help="the TPU slice: v5p-128 (TensorCores), v6e-64 / v5e-16 (chips), or v5p:4x4x4")
    p.add_argument("--model", help="the architecture when the config's init.hf_dir/init.checkpoint is not on this "
                                   "machine: a packaged model (sailor2-1b), a model YAML, or an HF config.json")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. mesh.fsdp=32")


def run(args: argparse.Namespace) -> int:
    from sailor2_jax.aot.topology import configure_libtpu, parse_slice

    target = parse_slice(args.topology)  # a bad name fails before anything loads
    configure_libtpu()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # nothing runs here: this machine's accelerators stay free

    from sailor2_jax.aot.compile import compile_train_step, resolve_model
    from sailor2_jax.config import find_config, load
    from sailor2_jax.train.config import TrainConfig

    cfg = load(TrainConfig, find_config("train", args.config), args.overrides)
    report = compile_train_step(cfg, resolve_model(cfg, args.model), target)
    print(json.dumps(report.to_json()) if args.json else report.summary(), flush=True)
    return 0 if report.fits else 1
