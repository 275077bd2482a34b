"""`sailor2-jax filter-ppl`: drop translated preference pairs whose responses a base model finds implausible
(post/filter_ppl.py; the perplexity scorer of SFT selection)."""

from __future__ import annotations

import argparse

from sailor2_jax.commands._args import renamed

NAME = "filter-ppl"
HELP = ("filter preference pairs by the perplexity of their responses under a base model (low-quality "
        "translations out), per language")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="HF_DIR|RUN_DIR", help="the scoring model: an HF Qwen2 "
                   "directory (e.g. the Sailor2 base) or a training run")
    p.add_argument("--input", required=True, nargs="+", help="preference files or directories (JSONL/Parquet: "
                   "prompt, chosen, rejected)")
    renamed(p, "--output", "--output-dir")
    p.add_argument("--output-dir", required=True, help="directory: kept.jsonl, removed.jsonl, summary.json")
    cut = p.add_mutually_exclusive_group()
    cut.add_argument("--keep", type=float, help="the fraction kept per language (default 0.9)")
    cut.add_argument("--max-ppl", type=float, help="an absolute perplexity cut instead")
    p.add_argument("--max-tokens", type=int, default=4096, help="longer conversations are removed (too_long)")
    p.add_argument("--system", default="sailor2", help="system prompt of the rendered chats: sailor2 | qwen | none "
                   "| text")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from sailor2_jax.config import MeshConfig
    from sailor2_jax.files import write_jsonl
    from sailor2_jax.model.source import ModelSource, open_model
    from sailor2_jax.post import filter_ppl
    from sailor2_jax.post.onpolicy import write_summary
    from sailor2_jax.post.conversation_files import Accounting, Rejection, read_preferences
    from sailor2_jax.post.select import score_policy
    from sailor2_jax.post.sft_data import system_prompt, tokenize_conversations

    keep = 0.9 if args.keep is None and args.max_ppl is None else args.keep
    opened = open_model(ModelSource(path=args.model, dtype=args.dtype, mesh=MeshConfig(data=-1, fsdp=1, tensor=1)))
    model, mesh = opened.model, opened.mesh
    system = system_prompt(args.system)

    acc = Accounting()
    pairs = list(read_preferences(args.input, acc))
    conversations = filter_ppl.pair_conversations(pairs)
    examples = tokenize_conversations(conversations, args.max_tokens, overlong="drop", system=system)
    fitted = {id(e.conversation): e for e in examples}
    scored, sides = [], []
    for i, p in enumerate(pairs):
        both = [fitted.get(id(c)) for c in conversations[2 * i:2 * i + 2]]
        if None in both:
            acc.reject(Rejection(p.source, "too_long", f"a side is over {args.max_tokens} tokens"))
            continue
        scored.append(p)
        sides.extend(both)
    ppl = np.exp(score_policy(model, sides, mesh, system=system, batch_size=args.batch_size).nll).reshape(-1, 2)
    result = filter_ppl.filter_pairs(scored, ppl[:, 0], ppl[:, 1], keep=keep, max_ppl=args.max_ppl, acc=acc)
    if not acc.balanced:
        raise AssertionError(f"pairs lost: read {acc.read}, kept {acc.kept}, removed {dict(acc.rejected)}")

    def record(p, c, r):
        return {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "language": p.language,
                "chosen_ppl": c, "rejected_ppl": r, "source": str(p.source)}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "kept.jsonl", [record(*k) for k in result.kept])
    write_jsonl(out / "removed.jsonl", [record(*k) for k in result.removed])
    write_summary(out / "summary.json", acc.metrics("pairs"), cut=result.cut, keep=keep, max_ppl=args.max_ppl,
                  model=str(args.model))
    for line in acc.lines():
        print(line)
    print(f"wrote {out}: {len(result.kept)} pairs kept, {len(result.removed)} above the perplexity cut "
          f"({json.dumps({k: round(v, 2) for k, v in result.cut.items()})})")
    return 0
