"""`sailor2-jax export`: a train checkpoint (pre-training, SFT or DPO alike) → a Hugging Face directory; a reward
run's checkpoint → a `Qwen2ForSequenceClassification` directory."""

from __future__ import annotations

import argparse

from sailor2_jax.commands._args import renamed

from sailor2_jax.train import multihost

NAME = "export"
HELP = "export the parameters of a train checkpoint as a Hugging Face Qwen2 directory (optionally push to the Hub)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="a run's output dir or its checkpoints/ dir (latest step), or one step's directory")
    renamed(p, "--out", "--output-dir")
    p.add_argument("--output-dir", required=True, help="the HF directory to write")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="tensor dtype (default: as trained)")
    p.add_argument("--tokenizer", help="a directory whose tokenizer files are copied alongside")
    p.add_argument("--max-shard-size", default="2GB")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the exported folder to this Hub repo (HF_TOKEN)")
    multihost.add_arguments(p)  # a sharded checkpoint is exported by every host of the job (process 0 writes)


def run(args: argparse.Namespace) -> int:
    multihost.initialize_from(args)

    import jax

    from sailor2_jax.config import MeshConfig
    from sailor2_jax.model.hf import export_hf, push_to_hub
    from sailor2_jax.model.reward import Qwen2Reward, export_reward
    from sailor2_jax.model.source import ModelSource, open_model

    # parameters as trained, split over every device of the job (FSDP): no process holds a whole copy
    opened = open_model(ModelSource(path=args.checkpoint, mesh=MeshConfig(), head="any"))
    model, step = opened.model, opened.step
    write = export_reward if isinstance(model, Qwen2Reward) else export_hf  # reward: Qwen2ForSequenceClassification
    out = write(model, args.output_dir, tokenizer=args.tokenizer, max_shard_size=args.max_shard_size, dtype=args.dtype,
                    overwrite=args.overwrite)
    if jax.process_index() == 0:  # the folder is process 0's; one upload, one report
        print(f"exported step {step} to {out}")
        if args.push_to_hub:
            print(f"pushed: {push_to_hub(out, args.push_to_hub)}")
    return 0
