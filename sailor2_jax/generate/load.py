"""What the generate and chat commands start from: a model (HF directory or training run), its tokenizer, its eos ids,
and a `Generator` on a mesh."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import tokenizers

from sailor2_jax.generate.engine import DEFAULT_EOS_IDS, Generator
from sailor2_jax.generate.sampling import SamplingConfig


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="HF_DIR", help="a Hugging Face Qwen2 directory (e.g. what export writes)")
    src.add_argument("--checkpoint", metavar="RUN_DIR", help="a training run's output dir (latest checkpoint), "
                     "its checkpoints/ dir or one step's dir")
    p.add_argument("--tokenizer", help="tokenizer.json (or a directory holding one); default: the model "
                   "directory's, else the Qwen2.5 tokenizer")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                   help="weights, activations and KV cache")
    p.add_argument("--mesh", type=mesh_flag, default="-1,1,1", metavar="DATA,FSDP,TENSOR",
                   help="device mesh sizes (-1: the remaining devices); default: rows split over all devices")


def mesh_flag(text: str):
    """`--mesh DATA,FSDP,TENSOR` as a typed `MeshConfig` (argparse reports a bad one in one line)."""
    from sailor2_jax.config import MeshConfig

    try:
        return MeshConfig.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_sampling_arguments(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1: off")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--seed", type=int, default=0)


def sampling_from(args: argparse.Namespace) -> SamplingConfig:
    try:
        return SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              repetition_penalty=args.repetition_penalty)
    except Exception as e:  # pydantic's message names the field
        raise ValueError(f"invalid sampling flags: {e}") from None


def eos_ids_of(model_dir: str | Path | None) -> tuple[int, ...]:
    """`eos_token_id` of the directory's generation_config.json (an id or a list), else 151643 and 151645."""
    file = None if model_dir is None else Path(model_dir) / "generation_config.json"
    if file is None or not file.is_file():
        return DEFAULT_EOS_IDS
    try:
        eos = json.loads(file.read_text()).get("eos_token_id")
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON: {e}") from None
    ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    if not ids or not all(isinstance(i, int) for i in ids):
        raise ValueError(f"{file}: eos_token_id must be an id or a list of ids, got {eos!r}")
    return tuple(ids)


def load_tokenizer_for(model_dir: str | Path | None, tokenizer: str | None) -> tokenizers.Tokenizer:
    from sailor2_jax.data.vocab import load_tokenizer

    path = Path(tokenizer) if tokenizer else (Path(model_dir) if model_dir else None)
    if path is not None and path.is_dir():
        path = path / "tokenizer.json"
        if not path.is_file():
            if tokenizer:
                raise FileNotFoundError(f"{tokenizer}: no tokenizer.json")
            return load_tokenizer()
    return load_tokenizer(None if path is None else str(path))


@dataclass
class Loaded:
    generator: Generator
    tokenizer: tokenizers.Tokenizer
    eos_ids: tuple[int, ...]
    source: str


def load(args: argparse.Namespace) -> Loaded:
    """The model of `--model`/`--checkpoint` on the `--mesh`, in `--dtype`, ready to generate."""
    model, mesh, source = load_model(args)
    return Loaded(Generator(model, mesh), load_tokenizer_for(args.model, args.tokenizer), eos_ids_of(args.model),
                  source)


def model_or_run(path: str | Path, **flags) -> argparse.Namespace:
    """`load`/`load_model`'s arguments for one path that is either a Hugging Face directory (it has config.json) or
    a training run (a run, checkpoints or step directory); `flags` are the rest (mesh, dtype, ...)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a directory (a Hugging Face model or a training run)")
    hf = (path / "config.json").is_file()
    return argparse.Namespace(model=str(path) if hf else None, checkpoint=None if hf else str(path), **flags)


def load_model(args: argparse.Namespace):
    """(model, mesh, description) of `--model`/`--checkpoint` on the `--mesh` (a `MeshConfig`), in `--dtype`."""
    from sailor2_jax.config import ComputeConfig
    from sailor2_jax.sharding import make_mesh

    mesh = make_mesh(args.mesh)  # a MeshConfig: `--mesh` is parsed where it arrives
    compute = ComputeConfig(param_dtype=args.dtype, dtype=args.dtype, remat="none")
    if args.model:
        from sailor2_jax.model.hf import import_hf
        model = import_hf(args.model, mesh, compute)
        source = args.model
    else:
        from sailor2_jax.train.export import load_checkpoint_model
        model, step = load_checkpoint_model(args.checkpoint, mesh, compute, language_model=True)
        source = f"{args.checkpoint} (step {step})"
    return model, mesh, source
