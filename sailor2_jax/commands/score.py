"""`sailor2-jax score`: reward scores for conversations (`score`) or preference pairs (`chosen_score`,
`rejected_score`), with the reward model's own chat template (post/reward.py)."""

from __future__ import annotations

import argparse

from sailor2_jax.commands.onpolicy import add_reward_arguments

NAME = "score"
HELP = ("add reward-model scores to a JSONL file: `score` to each conversation (`messages` ending with the "
        "assistant turn), `chosen_score`/`rejected_score` to each preference pair")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_reward_arguments(p)
    p.add_argument("--input", required=True, help="JSONL or Parquet: conversations (`messages` or ShareGPT "
                   "`conversations`) or preference pairs (`prompt`, `chosen`, `rejected`)")
    p.add_argument("--output", required=True, help="JSONL: each good record with its score(s); skipped records "
                   "are reported with file:line and reason")


def run(args: argparse.Namespace) -> int:
    from sailor2_jax.data.stages.inputs import read_rows
    from sailor2_jax.post import conversation_files as rec
    from sailor2_jax.files import write_jsonl
    from sailor2_jax.post.reward import load_reward_model

    files = rec.input_files([args.input])
    first = next((r for f in files for _, _, r, _ in read_rows(f, text_key=None) if r is not None), None)
    if first is None:
        raise ValueError(f"{args.input}: no readable record")
    preference = "prompt" in first
    acc = rec.Accounting()
    if preference:
        items = list(rec.read_preferences([args.input], acc))
        conversations = [c for p in items for c in (p.prompt + p.chosen, p.prompt + p.rejected)]
    else:
        items = [c for c in rec.read_conversations([args.input], acc=acc)]
        for c in items:  # the score is the last assistant turn's: the conversation must end with it
            if c.messages[-1]["role"] != "assistant":
                acc.reject(rec.Rejection(c.source, "no_final_assistant_turn",
                                         f"last role {c.messages[-1]['role']}"))
        items = [c for c in items if c.messages[-1]["role"] == "assistant"]
        conversations = [c.messages for c in items]
    acc.kept = len(items)
    raw = {rec.Source(f, line): r for f in files for line, _, r, _ in read_rows(f, text_key=None) if r is not None}
    reward = load_reward_model(args.reward_model, args.reward_backend, batch_size=args.reward_batch_size,
                               dtype=args.reward_dtype)
    scores = reward.score(conversations)
    if preference:
        out = [raw[p.source] | {"chosen_score": float(scores[2 * i]), "rejected_score": float(scores[2 * i + 1])}
               for i, p in enumerate(items)]
    else:
        out = [raw[c.source] | {"score": float(s)} for c, s in zip(items, scores)]
    write_jsonl(args.output, out)
    for line in acc.lines():
        print(line)
    print(f"wrote {args.output}: {len(out)} {'pairs' if preference else 'conversations'} scored by {reward.source}")
    return 0
