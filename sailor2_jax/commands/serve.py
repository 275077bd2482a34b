"""`sailor2-jax serve`: an OpenAI-compatible HTTP API with continuous batching, from an HF directory or a run."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sailor2_jax.commands._args import add_draft_arguments, add_model_arguments, comma_list, model_source, positive_int

NAME = "serve"
HELP = ("serve the model over HTTP with OpenAI's API (/v1/chat/completions, /v1/completions, /v1/models, /health, "
        "/metrics), decoding requests together in a fixed set of slots (continuous batching)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-slots", type=positive_int, default=16, metavar="N",
                   help="requests (samples) decoded together; a multiple of the mesh's data-parallel size")
    p.add_argument("--max-len", type=positive_int, default=2048, metavar="T",
                   help="KV-cache columns per slot: prompt plus max_tokens must fit")
    p.add_argument("--prefill-buckets", type=comma_list, metavar="P,P,...",
                   help="prompt lengths compiled for prefill (the last must equal --max-len); default: powers of "
                        "two from 16, and --max-len")
    p.add_argument("--decode-steps", type=positive_int, default=None, metavar="K",
                   help="decode steps per dispatch: each slot's next K tokens come back in one host round trip "
                        "(eos and max_tokens stop a slot on the device; a new request waits at most one dispatch); "
                        "with a draft, K // (γ + 1) speculative rounds, at least one. Default: 8")
    add_draft_arguments(p)
    p.add_argument("--max-queue", type=positive_int, default=256, metavar="N",
                   help="requests waiting for slots before new ones get HTTP 429")
    p.add_argument("--served-model-name", help="the `model` name clients use (default: the model directory's name)")
    p.add_argument("--system", help="system prompt for chats that have none (default: Sailor2's)")
    p.add_argument("--api-key-env", metavar="VAR", help="require `Authorization: Bearer $VAR` on /v1 requests (the "
                   "key is read from this environment variable, never from the command line, and never logged)")
    p.add_argument("--drain-seconds", type=positive_int, default=30,
                   help="on SIGTERM: how long in-flight requests may take to finish")


def run(args: argparse.Namespace) -> int:
    import signal

    from sailor2_jax.generate.speculative import open_draft
    from sailor2_jax.model.source import open_model
    from sailor2_jax.serve.server import Server

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ValueError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    try:
        buckets = [int(b) for b in args.prefill_buckets] if args.prefill_buckets else None
    except ValueError:
        raise ValueError(f"--prefill-buckets: expected integers, got {','.join(args.prefill_buckets)}") from None
    source = model_source(args)
    opened = open_model(source)
    name = args.served_model_name or Path(source.path.rstrip("/")).name
    draft, drafted = None, ""
    if args.draft_model is not None:
        model, description = open_draft(opened, args.draft_model, source)
        draft = "self" if model is None else model
        drafted = f", speculative with draft {description or 'self'} (γ = {args.draft_tokens})"
    server = Server(opened, model_name=name, host=args.host, port=args.port, max_slots=args.max_slots,
                    max_len=args.max_len, max_queue=args.max_queue, buckets=buckets, api_key=api_key,
                    **({} if args.decode_steps is None else {"decode_steps": args.decode_steps}),
                    draft=draft, draft_tokens=args.draft_tokens,
                    system=args.system, drain_seconds=args.drain_seconds)
    print(f"serving {opened.description} as {name!r} on http://{args.host}:{args.port}/v1 "
          f"({args.max_slots} slots x {args.max_len} tokens{drafted}); /health is 503 until compiled", flush=True)
    # uvicorn takes SIGTERM/SIGINT while it serves (stop accepting, finish in-flight requests) and re-raises the
    # signal after its shutdown: that re-raise must not turn a clean drain into the CLI's exit 143
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("stopped: in-flight requests finished", flush=True)
    return 0
