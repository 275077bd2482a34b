"""`sailor2-jax compile`: ahead-of-time compile a training config for a TPU slice, here, with no TPU."""

from __future__ import annotations

import argparse
import json
import os
import sys

from sailor2_jax.commands._args import add_slice_arguments, positive_int

NAME = "compile"
HELP = ("compile a config's training step (and with --decode the generation engine) for a TPU slice with the real "
        "TPU compiler, on this machine (no TPU, no checkpoint needed): HBM per chip and whether it fits, the attention "
        "kernel lowered, FLOPs per step and a roofline step time and MFU")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_slice_arguments(p)
    p.add_argument("--decode", action="store_true",
                   help="also compile the generation engine's prefill and decode loop on the same mesh (what "
                        "`generate` and on-policy sampling run where the policy trains)")
    p.add_argument("--decode-batch", type=positive_int, default=128, help="prompts per generation call (default 128)")
    p.add_argument("--prompt-len", type=positive_int, default=128,
                   help="prompt tokens (rounded up to the engine's length bucket; default 128)")
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="new tokens per prompt (default 256)")
    p.add_argument("--prefill-chunk", type=positive_int, default=None,
                   help="prefill the prompt this many tokens at a time (a power of two; `generate --prefill-chunk`)")
    p.add_argument("--samples", type=positive_int, default=1,
                   help="samples per prompt sharing one prefill (on-policy DPO draws 4-8; default 1)")
    p.add_argument("--decode-fsdp-weights", action="store_true",
                   help="decode from the FSDP-sharded weights, gathered again at every step (where the gathered "
                        "weights do not fit; the default gathers them once per call)")
    p.add_argument("--draft-model", metavar="MODEL|self",
                   help="with --decode: also compile speculative decoding with this draft (a packaged model such as "
                        "sailor2-1b, a model YAML or an HF config.json; `self`: the model with its inserted layers "
                        "skipped) and give its roofline at --acceptance")
    p.add_argument("--draft-tokens", type=positive_int, default=4, metavar="γ", help="draft tokens per round")
    p.add_argument("--acceptance", type=float, default=0.7, metavar="α",
                   help="the acceptance rate the speculative roofline assumes (measure it: generate prints it)")
    p.add_argument("--expanded-from", type=positive_int, metavar="LAYERS",
                   help="with --draft-model self on a model config without an expansion record: the base model's "
                        "layer count (Sailor2-1B 24, 8B 28, 20B 48), which gives the inserted layers")
    p.add_argument("--serve", action="store_true",
                   help="also compile the server's programs (`sailor2-jax serve`: prefill and insert per prompt "
                        "bucket, the decode dispatch per decode batch bucket, full slots last) on the same mesh: HBM "
                        "per chip and roofline tokens/s")
    p.add_argument("--serve-slots", type=positive_int, default=128, help="--max-slots of the server (default 128)")
    p.add_argument("--serve-max-len", type=positive_int, default=2048, help="--max-len of the server (default 2048)")
    p.add_argument("--json", action="store_true",
                   help="print the report as one JSON object on stdout (with --decode: one per program, by name)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. mesh.fsdp=32")


def run(args: argparse.Namespace) -> int:
    from sailor2_jax.aot.topology import configure_libtpu, parse_slice

    target = parse_slice(args.topology)  # a bad name fails before anything loads
    configure_libtpu()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # nothing runs here: this machine's accelerators stay free

    from sailor2_jax.aot.compile import compile_generation, compile_serving, compile_train_step, resolve_model
    from sailor2_jax.config import find_config, load
    from sailor2_jax.train.config import TrainConfig

    cfg = load(TrainConfig, find_config("train", args.config), args.overrides)
    model = resolve_model(cfg, args.model)
    reports = [compile_train_step(cfg, model, target)]
    if args.decode:
        reports += compile_generation(cfg, model, target, rows=args.decode_batch, prompt_len=args.prompt_len,
                                      max_new=args.max_new_tokens, samples=args.samples,
                                      gather=not args.decode_fsdp_weights, prefill_chunk=args.prefill_chunk)
    if args.draft_model:
        if not args.decode:
            raise ValueError("--draft-model compiles speculative decoding: give --decode too")
        from sailor2_jax.aot.compile import compile_speculative

        draft = None
        if args.draft_model == "self":
            if args.expanded_from:
                from sailor2_jax.model.expand import inserted_layers
                model = model.replace(inserted_layers=inserted_layers(
                    model.replace(num_layers=args.expanded_from, inserted_layers=None), model.num_layers))
        else:
            draft = resolve_model(cfg, args.draft_model)
        reports.append(compile_speculative(cfg, model, target, draft, draft_tokens=args.draft_tokens,
                                           acceptance=args.acceptance, rows=args.decode_batch,
                                           prompt_len=args.prompt_len, max_new=args.max_new_tokens,
                                           samples=args.samples, gather=not args.decode_fsdp_weights))
        plain = next(r for r in reports if r.program == "decode")
        if plain.roofline and reports[-1].roofline:
            speedup = reports[-1].roofline["tokens_per_s"] / plain.roofline["tokens_per_s"]
            print(f"speculative decode at acceptance {args.acceptance}, γ = {args.draft_tokens}: "
                  f"{speedup:.2f}× the decode loop's roofline tokens/s", file=sys.stderr)
    if args.serve:
        reports += compile_serving(cfg, model, target, slots=args.serve_slots, max_len=args.serve_max_len)
    if args.json:
        out = reports[0].to_json() if len(reports) == 1 else {r.program: r.to_json() for r in reports}
        print(json.dumps(out), flush=True)
    else:
        print("\n\n".join(r.summary() for r in reports), flush=True)
    return 0 if all(r.fits for r in reports) else 1
