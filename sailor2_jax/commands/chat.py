"""`sailor2-jax chat`: an interactive terminal chat that streams the reply as it is decoded."""

from __future__ import annotations

import argparse
import sys

from sailor2_jax.commands._args import (add_draft_arguments, add_model_arguments, add_sampling_arguments,
                                        model_source, sampling_from)

NAME = "chat"
HELP = "chat with a model in the terminal (tokens stream as they are produced; /reset, /system TEXT, Ctrl-D quits)"

COMMANDS_HELP = "commands: /reset (forget the conversation), /system TEXT (new system prompt, resets), Ctrl-D quits"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--system", help="system prompt (default: Sailor2's)")
    add_sampling_arguments(p, max_new_tokens=512)
    add_draft_arguments(p)


class TextStream:
    """Incremental detokenisation: the text of the ids so far, released once its last character is complete (a
    byte-level token can end inside a multi-byte character, which decodes as U+FFFD until the rest arrives)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.shown = tokenizer, [], 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=False)
        if text.endswith("\ufffd"):
            return ""
        new, self.shown = text[self.shown:], len(text)
        return new

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=False)


def run(args: argparse.Namespace) -> int:
    from sailor2_jax.generate.speculative import make_generator, stats_line
    from sailor2_jax.model.source import open_model
    from sailor2_jax.post.chat import SAILOR2_SYSTEM_PROMPT, encode
    from sailor2_jax.tokenizer import IM_END_ID

    sampling = sampling_from(args)
    source = model_source(args)
    opened = open_model(source)
    generator = make_generator(opened, args.draft_model, args.draft_tokens, source=source)
    eos_ids = tuple(dict.fromkeys(opened.eos_ids + (IM_END_ID,)))  # a chat turn ends with <|im_end|>
    system = SAILOR2_SYSTEM_PROMPT if args.system is None else args.system
    interactive = sys.stdin.isatty()
    print(f"chatting with {opened.description}; {COMMANDS_HELP}", file=sys.stderr)
    messages: list[dict[str, str]] = [{"role": "system", "content": system}]
    turn = 0
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            print(file=sys.stderr)
            if line := stats_line(generator):
                print(line, file=sys.stderr)
            return 0
        line = line.strip()
        if not line:
            continue
        if line == "/reset":
            messages = messages[:1]
            print("(conversation reset)", file=sys.stderr)
            continue
        if line.startswith("/system"):
            system = line[len("/system"):].strip()
            messages = [{"role": "system", "content": system}]
            print("(system prompt set; conversation reset)", file=sys.stderr)
            continue
        messages.append({"role": "user", "content": line})
        prompt = encode(messages, add_generation_prompt=True, tokenizer=opened.tokenizer).ids
        print("assistant> ", end="", flush=True)
        stream = TextStream(opened.tokenizer)
        stopped = False
        for token in generator.stream(prompt.tolist(), sampling=sampling, max_new_tokens=args.max_new_tokens,
                                             seed=args.seed + turn, eos_ids=eos_ids):
            if token in eos_ids:
                stopped = True
                break
            print(stream.push(token), end="", flush=True)
        reply = stream.text()
        print(reply[stream.shown:] + ("" if stopped else " [max new tokens reached]"), flush=True)
        messages.append({"role": "assistant", "content": reply})
        turn += 1
