"""`sailor2-jax <command>`: one entry point; each command lives in its own module under `sailor2_jax/commands/`.

A command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int | None`. Modules are found by
name, so adding a command never touches this file, and a command's heavy imports (jax, datatrove, seqio) happen only
when that command runs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pkgutil
import signal
import sys

from sailor2_jax import commands
from sailor2_jax.commands._args import PROG


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{commands.__name__}.{info.name}")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported in one line that names the flag (not the whole usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so every `finally` and atomic writer cleans up as for Ctrl-C."""


def _terminate(signum, frame) -> None:
    raise Terminated


def _skip_absent_tpu() -> None:
    """With the TPU compiler installed (the `tpu` extra, for `compile` and `plan`) but no TPU attached, JAX would
    still start libtpu's runtime at its first device query, which fails with a screen of warnings before JAX falls
    back. Name the platforms this machine has instead; an explicit JAX_PLATFORMS always wins."""
    if "JAX_PLATFORMS" in os.environ or importlib.util.find_spec("libtpu") is None:
        return
    from sailor2_jax.aot.topology import tpu_attached  # no JAX import

    if tpu_attached():
        return
    cuda = any(importlib.util.find_spec(p) for p in ("jax_cuda12_plugin", "jax_cuda13_plugin"))
    os.environ["JAX_PLATFORMS"] = "cuda,cpu" if cuda and os.path.exists("/dev/nvidiactl") else "cpu"


def main(argv: list[str] | None = None) -> int:
    _skip_absent_tpu()
    # TensorFlow is only seqio's host-side engine here; its C++ start-up chatter hides our own output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    # `train` turns SIGTERM into a checkpoint-and-stop while it trains (train/preemption.py); everywhere else a
    # SIGTERM unwinds like Ctrl-C, removing partial output (atomic directories, the clean stages' work files)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:  # user errors: one clear line, no traceback
        import pydantic

        from sailor2_jax.config import describe
        text = f"invalid {e.title}: {describe(e)}" if isinstance(e, pydantic.ValidationError) else str(e)
        print(f"{PROG} {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _interrupted()
        print(f"{PROG} {args.command}: interrupted (Ctrl-C); partial output removed", file=sys.stderr)
        return 130
    except Terminated:
        _interrupted()
        print(f"{PROG} {args.command}: terminated (SIGTERM); partial output removed", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted() -> None:
    """The one line is the whole report of an interruption: an object the signal caught half-built (e.g. a tqdm bar
    interrupted in its constructor) may fail in its destructor when it is collected, and Python would print that
    failure's traceback after our line ("Exception ignored in ..."); such failures are dropped from here on. Progress
    bars still open are closed first: the interrupted work's frames, whose unwinding would close them, live on in the
    traceback until the handler ends, and the line would otherwise continue a half-drawn bar."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 — a bar caught in its constructor (tqdm registers it first) cannot close
            pass
    sys.unraisablehook = lambda unraisable: None


def run_command(argv: list[str], console) -> None:
    """`sailor2-jax ARGV` in this process, echoed first as a user would type it (the demo's stages run the real
    commands); a failing command raises, naming it."""
    console.print(f"{PROG} {' '.join(argv)}", soft_wrap=True, markup=False, highlight=False)
    rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"{PROG} {argv[0]} failed (exit {rc})")


if __name__ == "__main__":
    sys.exit(main())
