"""`sailor2-jax <command>`: one entry point; each command lives in its own module under `sailor2_jax/commands/`.

A command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int | None`. Modules are found by
name, so adding a command never touches this file, and a command's heavy imports (jax, datatrove, seqio) happen only
when that command runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from sailor2_jax import commands


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{commands.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sailor2-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    # TensorFlow is only seqio's host-side engine here; its C++ start-up chatter hides our own output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:  # user errors: one clear line, no traceback
        print(f"sailor2-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
