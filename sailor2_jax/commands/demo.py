"""`sailor2-jax demo`: the whole pipeline on the embedded data with a tiny model (what `make demo` runs)."""

from __future__ import annotations

import argparse
import sys

from sailor2_jax.commands._args import PROG, positive_int, renamed

NAME = "demo"
HELP = "run the whole Sailor2 pipeline on the embedded data with a tiny model (what `make demo` runs)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    renamed(p, "--out", "--output-dir")
    p.add_argument("--output-dir", default="runs/demo", help="where every stage writes (default: runs/demo)")
    p.add_argument("--devices", type=positive_int, default=8,
                   help="fake CPU devices to shard over when running on CPU (the mesh is real either way)")


def run(args: argparse.Namespace) -> int:
    import jax

    from sailor2_jax.demo.run import DemoFailed, run_demo

    try:  # before any backend starts (importing JAX starts none): the CPU's device count
        jax.config.update("jax_num_cpu_devices", args.devices)
    except RuntimeError:  # backends already up (the demo called from a running program): keep its devices
        pass
    # no persistent compilation cache: on CPU, JAX 0.10's multi-device programs loaded back from it deadlock in
    # their first collective (docs/performance.md, "Compilation cache")
    try:
        run_demo(args.output_dir)
    except DemoFailed as e:
        print(f"{PROG} {NAME}: error: {e}", file=sys.stderr)
        return 1
    return 0
