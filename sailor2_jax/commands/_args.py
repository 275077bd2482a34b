"""What the commands share: argument types (a bad value is refused by argparse in one line naming the flag), the
flags of the TPU-slice commands (compile, plan), and the flags and reporting of the commands that run as datatrove
stages (clean, translate, quality select)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {value}")
    return value


def comma_list(text: str) -> list[str]:
    """`th,vi, id` → ["th", "vi", "id"]."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def add_slice_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the commands that compile a training config for a TPU slice (compile, plan)."""
    parser.add_argument("--config", required=True,
                        help="a train config: YAML path or packaged name (e.g. sailor2-8b_stage1)")
    parser.add_argument("--topology", required=True,
                        help="the TPU slice: v5p-128 (TensorCores), v6e-64 / v5e-16 (chips), or v5p:4x4x4")
    parser.add_argument("--model", help="the architecture when the config's init.hf_dir/init.checkpoint is not on "
                                        "this machine: a packaged model (sailor2-1b), a model YAML, or an HF "
                                        "config.json")


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the commands that run as datatrove stages on the cleaning executors (local, Slurm, Ray)."""
    parser.add_argument("--tasks", type=positive_int, metavar="N", help="executor.tasks: input shards")
    parser.add_argument("--workers", type=positive_int, metavar="N", help="executor.workers (local executor)")


def add_overrides_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """Dotted `key=value` config overrides, as `train` takes them (after the flags whose values are lists)."""
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"dotted config overrides after the other flags, e.g. {example}")


def flag_overrides(args: argparse.Namespace, fields: dict[str, str]) -> list[str]:
    """`key=value` overrides for the flags given on the command line ({flag attribute: config key}); flags left
    unset leave the config's value, and they apply after the positional overrides."""
    from sailor2_jax.config import override

    flags = [override(key, getattr(args, attr)) for attr, key in fields.items() if getattr(args, attr) is not None]
    return [*getattr(args, "overrides", []), *flags]


EXECUTOR_FLAGS = {"tasks": "executor.tasks", "workers": "executor.workers"}


def run_stages(command: str, run: Callable[[], dict], report: Callable[[dict], None]) -> int:
    """Run a staged command and report its summary; a broken accounting (kept + rejected != read) exits 1, a Slurm
    submission says where its jobs log."""
    from sailor2_jax.cli import PROG
    from sailor2_jax.data.clean.summary import AccountingError

    try:
        summary = run()
    except AccountingError as e:  # records went missing: the outputs are not to be trusted
        print(f"{PROG} {command}: error: {e}", file=sys.stderr)
        return 1
    if summary.get("submitted"):
        print(f"submitted to Slurm; logs under {summary['logs']}; summary.json appears when the last stage ends")
        return 0
    report(summary)
    return 0
