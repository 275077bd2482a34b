"""`sailor2-jax expand`: LlamaPro block expansion of a HF Qwen2.5 directory into a new HF directory."""

from __future__ import annotations

import argparse
import json

from sailor2_jax.commands._args import positive_int, renamed

NAME = "expand"
HELP = ("block-expand a Qwen2.5 checkpoint (LlamaPro): insert identity-initialised layers, writing a Hugging Face "
        "directory")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="HF directory of the base model (config.json + safetensors)")
    p.add_argument("--layers", required=True, type=positive_int, help="layer count after expansion (e.g. 48 for Sailor2-1B)")
    renamed(p, "--out", "--output-dir")
    p.add_argument("--output-dir", required=True, help="output HF directory (written atomically)")
    p.add_argument("--vocab-size", type=positive_int, help="resize embedding rows (e.g. 151936 for Sailor2-8B/20B)")
    p.add_argument("--untie-embeddings", action="store_true", help="give the model its own LM head (Sailor2-1B)")
    p.add_argument("--rms-norm-eps", type=float, help="set the expanded model's RMSNorm epsilon (the released "
                   "Sailor2-20B has 1e-6, its Qwen2.5-14B base 1e-5; default: the base's)")
    p.add_argument("--max-position-embeddings", type=positive_int, help="set the expanded model's length (the "
                   "released Sailor2-20B has 4096, Qwen2.5-14B 131072; default: the base's)")
    p.add_argument("--overwrite", action="store_true", help="replace --output-dir if it exists")


def run(args: argparse.Namespace) -> int:
    from sailor2_jax.model.expand import expand_hf_dir

    if args.rms_norm_eps is not None and not args.rms_norm_eps > 0:
        raise ValueError(f"--rms-norm-eps must be positive, got {args.rms_norm_eps}")
    summary = expand_hf_dir(args.base, args.output_dir, args.layers, vocab_size=args.vocab_size,
                            untie=args.untie_embeddings, overwrite=args.overwrite, rms_norm_eps=args.rms_norm_eps,
                            max_position_embeddings=args.max_position_embeddings)
    new = [i for i, n in enumerate(summary["is_new_layer"]) if n]
    print(json.dumps({"output_dir": args.output_dir, "base_layers": summary["base_layers"], "layers": summary["layers"],
                      "new_layers": new, "vocab_size": summary["vocab_size"], "untied": summary["untied"]}))
    return 0
