"""`sailor2-jax generate`: completions for a JSONL file of prompts or chats, from an HF directory or a training run."""

from __future__ import annotations

import argparse
import sys
import time

from sailor2_jax.commands._args import (add_draft_arguments, add_model_arguments, add_sampling_arguments,
                                        model_source, sampling_from)
from sailor2_jax.files import write_jsonl

NAME = "generate"
HELP = ("generate completions for each line of a JSONL file (`prompt`: raw text, or `messages`: a chat) with the "
        "KV-cache decode engine; greedy unless a temperature is given")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--input", required=True, help="JSONL: one object per line with `prompt` or `messages`; other "
                   "fields are copied to the output")
    p.add_argument("--output", required=True, help="JSONL: each input object plus `completions`")
    p.add_argument("--chat", action="store_true", help="format `prompt` lines as a user message with the chat "
                   "template (lines with `messages` always are)")
    p.add_argument("--system", help="system prompt for chats that have none (default: Sailor2's)")
    p.add_argument("--num-samples", type=int, default=1, help="completions per prompt (they share one prefill)")
    add_sampling_arguments(p, max_new_tokens=256)
    p.add_argument("--batch-size", type=int, default=32, help="prompts decoded together")
    p.add_argument("--prefill-chunk", type=int, default=None,
                   help="prefill long prompts this many tokens at a time (a power of two, e.g. 2048 for 32K prompts: "
                        "the prompt's whole attention matrix is never held; default: one pass)")
    add_draft_arguments(p)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sailor2_jax.generate.speculative import make_generator, stats_line
    from sailor2_jax.model.source import open_model
    from sailor2_jax.post.chat import SAILOR2_SYSTEM_PROMPT, encode
    from sailor2_jax.post.conversation_files import parse_prompt_line, prompt_lines
    from sailor2_jax.tokenizer import IM_END_ID

    sampling = sampling_from(args)
    if args.num_samples < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        raise ValueError("--num-samples, --batch-size and --max-new-tokens must be at least 1")
    lines = list(prompt_lines(args.input))  # (a missing file is refused before the model is read)
    source = model_source(args)
    opened = open_model(source)
    generator = make_generator(opened, args.draft_model, args.draft_tokens, source=source,
                               prefill_chunk=args.prefill_chunk)
    tok = opened.tokenizer
    system = SAILOR2_SYSTEM_PROMPT if args.system is None else args.system

    records, prompts, bad, any_chat = [], [], 0, False
    for number, raw in lines:
        try:
            record, prompt = parse_prompt_line(raw, args.chat)
            if isinstance(prompt, str):
                ids = tok.encode(prompt, add_special_tokens=False).ids
            else:
                ids = encode(prompt, add_generation_prompt=True, default_system=system, tokenizer=tok).ids
                any_chat = True
        except ValueError as e:
            print(f"{args.input}:{number}: {e}; line skipped", file=sys.stderr)
            bad += 1
            continue
        records.append(record)
        prompts.append(list(ids))
    # a chat turn ends with <|im_end|> whatever the model's generation_config says
    eos_ids = tuple(dict.fromkeys(opened.eos_ids + ((IM_END_ID,) if any_chat else ())))

    print(f"{len(prompts)} prompts from {args.input} ({bad} malformed lines skipped); model {opened.description}; "
          f"{sampling.model_dump()}, {args.num_samples} samples each, eos ids {list(eos_ids)}", file=sys.stderr)
    start = time.perf_counter()
    with tqdm(total=len(prompts), desc="generating", unit="prompt", file=sys.stderr) as bar:
        results = generator.generate(prompts, sampling=sampling, max_new_tokens=args.max_new_tokens,
                                     num_samples=args.num_samples, seed=args.seed, eos_ids=eos_ids,
                                     batch_size=args.batch_size, on_batch=bar.update)
    seconds = time.perf_counter() - start

    def text(c):
        ids = c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids
        return tok.decode(ids, skip_special_tokens=False)
    out = [{**record, "completions": [{"text": text(c), "token_ids": c.token_ids, "finish_reason": c.finish_reason}
                                      for c in completions]}
           for record, completions in zip(records, results)]
    write_jsonl(args.output, out)
    tokens = sum(len(c.token_ids) for completions in results for c in completions)
    print(f"wrote {args.output}: {len(prompts)} prompts, {tokens} generated tokens in {seconds:.1f}s "
          f"({tokens / max(seconds, 1e-9):.1f} tokens/s, compilation included); {bad} malformed lines skipped")
    if line := stats_line(generator):
        print(line)
    return 0
