"""`sailor2-jax select-sft`: pick the SFT stage-2 set by perplexity, reward and embedding diversity, balanced per
language (recipe.md §5.1; post/select.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sailor2_jax.commands._args import add_model_arguments, model_source, positive_int, renamed

NAME = "select-sft"
HELP = ("score SFT conversations (assistant-token perplexity under a model, optional reward model, embedding "
        "near-duplicates) and select a balanced subset for SFT stage 2")


def _weights(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT[,NAME=WEIGHT] (perplexity, reward), got {text!r}"
                                             ) from None
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)  # --model HF_DIR | --checkpoint RUN_DIR, --tokenizer, --dtype, --mesh
    p.add_argument("--input", nargs="+", required=True, metavar="FILE_OR_DIR",
                   help="conversation files (JSONL/Parquet, messages or ShareGPT) or directories of them")
    renamed(p, "--output", "--output-dir")
    p.add_argument("--output-dir", required=True, help="directory for scores.jsonl, selected.jsonl, summary.json, "
                   "selection.png")
    p.add_argument("--format", choices=("auto", "messages", "sharegpt"), default="auto")
    p.add_argument("--keep", type=float, default=0.2, help="fraction of the examples to select (default 0.2)")
    p.add_argument("--per-language", action=argparse.BooleanOptionalAction, default=True,
                   help="rank and fill quotas within each language (default: on)")
    p.add_argument("--per-domain", action="store_true", help="... and within each domain (the records' `domain`)")
    p.add_argument("--balance", choices=("proportional", "equal"), default="proportional",
                   help="quotas in proportion to the groups' sizes, or equal (small groups give all they have)")
    p.add_argument("--weights", type=_weights, default={"perplexity": 1.0, "reward": 1.0},
                   help="rank = sum of weight x percentile rank per metric, e.g. perplexity=1,reward=2")
    p.add_argument("--similarity", type=float, default=0.9,
                   help="cosine similarity above which an example near-duplicates a kept one (default 0.9)")
    p.add_argument("--reward-model", metavar="HF_DIR",
                   help="a Qwen2ForSequenceClassification directory (one score) to score the conversations with")
    p.add_argument("--seq-len", type=positive_int, default=4096, help="longest conversation scored (tokens)")
    p.add_argument("--overlong", choices=("truncate", "drop"), default="truncate",
                   help="a longer conversation: cut after its last assistant turn that fits, or skipped")
    p.add_argument("--system", default="sailor2", help="system prompt of conversations without one: sailor2 | qwen "
                   "| none | any text (as training renders them)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="conversations per forward pass")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from sailor2_jax.model.source import open_model
    from sailor2_jax.post.conversation_files import Accounting, read_conversations
    from sailor2_jax.post.select import SelectConfig, score_all, select
    from sailor2_jax.post.select_report import summary, write_outputs
    from sailor2_jax.post.sft_data import system_prompt, tokenize_conversations

    try:
        cfg = SelectConfig(keep=args.keep, per_language=args.per_language, per_domain=args.per_domain,
                           balance=args.balance, weights=args.weights, similarity_threshold=args.similarity,
                           batch_size=args.batch_size)
    except Exception as e:  # pydantic names the field
        raise ValueError(f"invalid selection flags: {e}") from None
    system = system_prompt(args.system)
    acc = Accounting()
    examples = tokenize_conversations(read_conversations(args.input, args.format, acc), args.seq_len + 1,
                                      overlong=args.overlong, system=system, acc=acc)
    for line in acc.lines():
        print(line)
    if not examples:
        raise ValueError("no conversations left to score")
    opened = open_model(model_source(args))
    model, mesh, source = opened.model, opened.mesh, opened.description
    reward_model = None
    if args.reward_model:
        reward_model = open_model(model_source(args, path=args.reward_model, head="reward"), mesh).model
    scores = score_all(model, examples, mesh, cfg, system=system, reward_model=reward_model)
    languages = [e.conversation.language for e in examples]
    sel = select(scores, languages, [e.conversation.domain for e in examples], cfg)
    out = Path(args.output_dir)
    write_outputs(out, examples, scores, sel, summary(examples, scores, sel, acc, cfg, args.input, source,
                                                      args.reward_model))
    print(f"scored {len(examples)} conversations with {source}: {int((sel.duplicate_of >= 0).sum())} near-duplicates,"
          f" {int(sel.selected.sum())} selected (median perplexity {np.median(scores.perplexity):.3g} → "
          f"{np.median(scores.perplexity[sel.selected]) if sel.selected.any() else float('nan'):.3g}); "
          f"wrote {out}/selected.jsonl, scores.jsonl, summary.json, selection.png")
    return 0
