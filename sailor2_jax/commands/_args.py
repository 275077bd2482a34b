"""What the commands share: the program's name, argument types (a bad value is refused by argparse in one line
naming the flag), the model flags (→ a `ModelSource`) and sampling flags of the commands that read a model, the
flags of the TPU-slice commands (compile, plan), and the flags and reporting of the commands that run as datatrove
stages (clean, translate, quality select)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sailor2_jax.config import MeshConfig
    from sailor2_jax.generate.sampling import SamplingConfig
    from sailor2_jax.model.source import ModelSource

PROG = "sailor2-jax"


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


def mesh_sizes(text: str) -> MeshConfig:
    """`DATA,FSDP,TENSOR` (or `DxFxT`; -1 takes the remaining devices) as a typed mesh."""
    from sailor2_jax.config import MeshConfig

    try:
        return MeshConfig.parse(text)
    except ValueError as e:  # it names the text and what is wrong
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model HF_DIR | --checkpoint RUN_DIR [--step N], --tokenizer, --dtype, --mesh: see `model_source`."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="HF_DIR", help="a Hugging Face Qwen2 directory (e.g. what export writes)")
    src.add_argument("--checkpoint", metavar="RUN_DIR", help="a training run's output dir (latest checkpoint), "
                     "its checkpoints/ dir or one step's dir")
    p.add_argument("--step", type=non_negative_int, help="with --checkpoint: that step (default: the latest)")
    add_model_runtime_arguments(p)


def add_model_runtime_arguments(p: argparse.ArgumentParser, dtype: str = "bfloat16") -> None:
    """How a model given by path runs: --tokenizer, --dtype, --mesh."""
    p.add_argument("--tokenizer", help="tokenizer.json (or a directory holding one); default: the model "
                   "directory's, else the Qwen2.5 tokenizer")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default=dtype, help="weights, activations, KV cache")
    p.add_argument("--mesh", type=mesh_sizes, default=mesh_sizes("-1,1,1"), metavar="DATA,FSDP,TENSOR",
                   help="device mesh sizes (-1: the remaining devices); default: rows split over all devices")


def model_source(args: argparse.Namespace, path: str | None = None, head: str = "lm") -> ModelSource:
    """The `ModelSource` of the model flags: `--model`/`--checkpoint` (or `path`, an HF directory or a run, for
    commands that take one path such as --policy), `--step`, `--tokenizer`, `--dtype`, `--mesh`."""
    from sailor2_jax.model.source import ModelSource

    step = None
    if path is None:
        path, step = args.model or args.checkpoint, args.step
        if args.model and step is not None:
            raise ValueError("--step selects a step of --checkpoint RUN_DIR; --model is a Hugging Face directory")
    return ModelSource(path=str(path), step=step, dtype=args.dtype, mesh=args.mesh, tokenizer=args.tokenizer,
                       head=head)


def add_sampling_arguments(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1: off")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--seed", type=int, default=0)


def add_draft_arguments(p: argparse.ArgumentParser) -> None:
    """--draft-model DIR|self and --draft-tokens: speculative decoding (generate/speculative.py)."""
    p.add_argument("--draft-model", metavar="DIR|self", help="speculative decoding with a draft: an HF directory or "
                   "a training run sharing the model's tokenizer (e.g. Sailor2-1B for 8B/20B), or `self`: the model "
                   "with the layers block expansion inserted skipped (needs the expansion record in its config). "
                   "The output is the model's own (greedy: identical; sampled: the same distribution)")
    p.add_argument("--draft-tokens", type=positive_int, default=4, metavar="γ",
                   help="tokens the draft proposes per target step (default 4)")


def sampling_from(args: argparse.Namespace) -> SamplingConfig:
    from sailor2_jax.generate.sampling import SamplingConfig

    try:
        return SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              repetition_penalty=args.repetition_penalty)
    except Exception as e:  # pydantic's message names the field
        raise ValueError(f"invalid sampling flags: {e}") from None
def comma_list(text: str) -> list[str]:
    """`th,vi, id` → ["th", "vi", "id"]."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


class _Renamed(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is now {self.default}")


def renamed(p: argparse.ArgumentParser, old: str, new: str) -> None:
    """Refuse the old spelling of a flag in one line naming the new one (not an alias: one spelling per kind of
    output, `--output FILE` and `--output-dir DIR`, across all commands)."""
    p.add_argument(old, action=_Renamed, nargs="?", default=new, help=argparse.SUPPRESS)


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


def run_and_report(command: str, run: Callable[[], dict], report: Callable[[dict], None]) -> int:
    """Run a staged command and report its summary; a broken accounting (kept + rejected != read) exits 1, a Slurm
    submission says where its jobs log."""
    from sailor2_jax.data.stages.accounting import AccountingError

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
