"""`sailor2-jax demo`: the whole pipeline on the embedded data with a tiny model (what `make demo` runs)."""

from __future__ import annotations

import argparse
import os

from sailor2_jax.commands._args import positive_int

NAME = "demo"
HELP = "run the whole Sailor2 pipeline on the embedded data with a tiny model (what `make demo` runs)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output directory")
    p.add_argument("--devices", type=positive_int, default=8,
                   help="fake CPU devices to shard over when running on CPU (the mesh is real either way)")


def run(args: argparse.Namespace) -> int:
    if "jax" not in __import__("sys").modules:  # must be set before JAX initialises its backends
        os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")
    from sailor2_jax.demo import run_demo

    run_demo(args.out)
    return 0
