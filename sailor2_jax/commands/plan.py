"""`sailor2-jax plan`: search mesh, remat, micro-batches and logits chunk for a TPU slice with the real compiler."""

from __future__ import annotations

import argparse
import json
import os
import sys

NAME = "plan"
HELP = ("find the training configurations that fit a TPU slice, fastest first: an analytic search over mesh shapes "
        "(data/fsdp/tensor), remat policies, micro-batches and logits chunks, then real TPU compilations of the "
        "best few on this machine; prints the overrides to use")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True,
                   help="a train config: YAML path or packaged name (e.g. sailor2-8b_stage1)")
    p.add_argument("--topology", required=True,
                   help="the TPU slice: v5p-128 (TensorCores), v6e-64 / v5e-16 (chips), or v5p:4x4x4")
    p.add_argument("--model", help="the architecture when the config's init.hf_dir/init.checkpoint is not on this "
                                   "machine: a packaged model (sailor2-1b), a model YAML, or an HF config.json")
    p.add_argument("--keep", type=int, default=3, help="stop once this many candidates fit (default 3)")
    p.add_argument("--compiles", type=int, default=4,
                   help="at most this many real compilations, about a minute each at Sailor2 sizes (default 4)")
    p.add_argument("--headroom", type=float, default=0.9,
                   help="a candidate fits when the compiler's HBM total is within this share of its limit")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides, e.g. data.batch_size=512")


def run(args: argparse.Namespace) -> int:
    from sailor2_jax.aot.topology import configure_libtpu, parse_slice

    target = parse_slice(args.topology)
    if not 0 < args.headroom <= 1 or args.keep < 1 or args.compiles < 1:
        raise ValueError("--headroom must be in (0, 1], --keep and --compiles at least 1")
    configure_libtpu()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # nothing runs here: this machine's accelerators stay free

    from sailor2_jax.aot.compile import resolve_model
    from sailor2_jax.aot.plan import no_fit_message, plan
    from sailor2_jax.config import find_config, load
    from sailor2_jax.train.config import TrainConfig

    cfg = load(TrainConfig, find_config("train", args.config), args.overrides)
    result = plan(cfg, resolve_model(cfg, args.model), target, keep=args.keep, max_compiles=args.compiles,
                  headroom=args.headroom, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(result.to_json()), flush=True)
    else:
        print(f"{target.name} ({target.topology}, {target.chips} chips): {result.considered} candidates, "
              f"{result.shortlisted} left by the estimate, {len(result.compiled)} compiled, "
              f"{len(result.fitting)} fit within {args.headroom:.0%} of HBM")
        for i, (c, r) in enumerate(result.fitting, 1):
            ro = r.roofline
            print(f"{i}. HBM {r.hbm['compiler_total'] / 2 ** 30:.1f} GiB ({r.hbm['headroom_used']:.0%}), "
                  f"step ≥ {ro['step_s']:.2f} s ({ro['bound']}-bound), {ro['tokens_per_s']:,.0f} tokens/s, "
                  f"MFU ≤ {ro['mfu'] * 100:.1f} %\n   {' '.join(c.overrides())}")
    if not result.fitting:
        raise ValueError(no_fit_message(result, target, args.headroom))
    return 0
