"""`sailor2-jax expand`: LlamaPro block expansion of a HF Qwen2.5 directory into a new HF directory."""

from __future__ import annotations

import argparse
import json

NAME = "expand"
HELP = "Block-expand a Qwen2.5 checkpoint (LlamaPro): insert identity-initialised layers; output is a HF directory."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="HF directory of the base model (config.json + safetensors)")
    p.add_argument("--layers", required=True, type=int, help="layer count after expansion (e.g. 48 for Sailor2-1B)")
    p.add_argument("--out", required=True, help="output HF directory (written atomically)")
    p.add_argument("--vocab-size", type=int, help="resize embedding rows (e.g. 151936 for Sailor2-8B/20B)")
    p.add_argument("--untie-embeddings", action="store_true", help="give the model its own LM head (Sailor2-1B)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from sailor2_jax.model.expand import expand_hf_dir

    summary = expand_hf_dir(args.base, args.out, args.layers, vocab_size=args.vocab_size,
                            untie=args.untie_embeddings, overwrite=args.overwrite)
    new = [i for i, n in enumerate(summary["is_new_layer"]) if n]
    print(json.dumps({"out": args.out, "base_layers": summary["base_layers"], "layers": summary["layers"],
                      "new_layers": new, "vocab_size": summary["vocab_size"], "untied": summary["untied"]}))
    return 0
