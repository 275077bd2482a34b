"""`sailor2-jax onpolicy`: one on-policy round — K samples per prompt from the policy, reward scores, language
verdicts, (chosen, rejected) pairs for DPO (post/onpolicy.py)."""

from __future__ import annotations

import argparse

from sailor2_jax.commands._args import (add_draft_arguments, add_model_runtime_arguments, add_sampling_arguments,
                                        model_source, renamed, sampling_from)

NAME = "onpolicy"
HELP = ("one on-policy round: K samples per prompt from the policy (one shared prefill), scored by a reward model, "
        "checked by the language-consistency verifier, paired (best consistent vs worst, wrong language first)")


def add_reward_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reward-model", required=True, metavar="DIR", help="a sequence-classification reward model "
                   "directory (one label); scored with its own chat template")
    p.add_argument("--reward-backend", choices=("jax", "transformers"), default="jax",
                   help="jax: the project's Qwen2 reward model on the mesh (Qwen2ForSequenceClassification); "
                   "transformers: any HF reward model in PyTorch (e.g. Gemma-2 or Llama reward models on GPUs)")
    p.add_argument("--reward-batch-size", type=int, default=8, help="conversations scored together")
    p.add_argument("--reward-dtype", choices=("float32", "bfloat16"), help="default: fp32 (jax); bf16 on CUDA, "
                   "fp32 on CPU (transformers)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, metavar="HF_DIR|RUN_DIR", help="the policy: a Hugging Face Qwen2 "
                   "directory (config.json) or a training run (its latest checkpoint)")
    add_reward_arguments(p)
    p.add_argument("--prompts", required=True, help="JSONL: `prompt` (text) or `messages` (ending with a user "
                   "turn), optional `language`, `task: translation` with `target_language`")
    p.add_argument("--samples", type=int, default=4, help="K responses per prompt (the recipe: 4-8)")
    renamed(p, "--out", "--output")
    p.add_argument("--output", required=True, help="the pairs (JSONL); OUTPUT.summary.json counts every prompt")
    p.add_argument("--language-check", choices=("on", "off"), default="on",
                   help="the language-consistency verifier (fastText lid.176)")
    p.add_argument("--system", help="system prompt of the policy's chats (default: Sailor2's)")
    p.add_argument("--batch-size", type=int, default=32, help="prompts decoded together")
    add_model_runtime_arguments(p)  # the policy's --tokenizer, --dtype, --mesh
    add_sampling_arguments(p, max_new_tokens=512)
    add_draft_arguments(p)
    p.set_defaults(temperature=0.8)


def run(args: argparse.Namespace) -> int:
    import collections
    import time

    from tqdm import tqdm

    from sailor2_jax.tokenizer import IM_END_ID
    from sailor2_jax.files import write_jsonl
    from sailor2_jax.generate.speculative import make_generator, stats_line
    from sailor2_jax.model.source import open_model
    from sailor2_jax.post import onpolicy
    from sailor2_jax.post.chat import SAILOR2_SYSTEM_PROMPT
    from sailor2_jax.post.reward import load_reward_model
    from sailor2_jax.post.verifier import LanguageVerifier

    if args.samples < 2:
        raise ValueError(f"--samples {args.samples}: a pair needs at least 2 samples per prompt")
    if args.batch_size < 1 or args.max_new_tokens < 1 or args.reward_batch_size < 1:
        raise ValueError("--batch-size, --reward-batch-size and --max-new-tokens must be at least 1")
    sampling = sampling_from(args)
    source = model_source(args, path=args.policy)
    policy = open_model(source)
    generator = make_generator(policy, args.draft_model, args.draft_tokens, source=source)
    counts: collections.Counter = collections.Counter()
    prompts = onpolicy.read_prompts(args.prompts, counts)
    verifier = LanguageVerifier() if args.language_check == "on" else None
    system = SAILOR2_SYSTEM_PROMPT if args.system is None else args.system
    eos_ids = tuple(dict.fromkeys(policy.eos_ids + (IM_END_ID,)))
    print(f"{len(prompts)} prompts from {args.prompts}; policy {policy.description}; {args.samples} samples each, "
          f"{sampling.model_dump()}; reward model {args.reward_model} ({args.reward_backend}); language check "
          f"{args.language_check}")
    start = time.perf_counter()
    with tqdm(total=len(prompts), desc="sampling", unit="prompt") as bar:
        sample = onpolicy.generator_sampler(generator, policy.tokenizer, sampling=sampling,
                                            max_new_tokens=args.max_new_tokens, seed=args.seed, eos_ids=eos_ids,
                                            batch_size=args.batch_size, on_batch=bar.update)
        responses = sample(onpolicy.encode_prompts(prompts, policy.tokenizer, system), args.samples)
    seconds = time.perf_counter() - start
    if line := stats_line(generator):
        print(line)
    reward = load_reward_model(args.reward_model, args.reward_backend, batch_size=args.reward_batch_size,
                               dtype=args.reward_dtype)
    pairs = onpolicy.make_pairs(prompts, responses, reward, verifier, counts)
    write_jsonl(args.output, pairs)
    onpolicy.write_summary(f"{args.output}.summary.json", counts, samples=args.samples, policy=policy.description,
                           reward_model=reward.source, language_check=args.language_check,
                           sampling=sampling.model_dump(), generation_seconds=round(seconds, 2))
    print(f"wrote {args.output}: {onpolicy.summary_line(counts, args.samples)}")
    return 0
