"""`sailor2-jax judge`: chat evaluation as Sea-WildBench does it (eval/judge.py): the model answers each prompt, a
judge compares its answer with a reference answer; per-language scores with bootstrap intervals and language
consistency."""

from __future__ import annotations

import argparse

from sailor2_jax.commands._args import add_model_runtime_arguments, add_sampling_arguments, non_negative_int

NAME = "judge"
HELP = ("pairwise chat evaluation (WildBench / Sea-WildBench): the model's answers vs reference answers, judged by "
        "an OpenAI-compatible endpoint or a local reward model; writes DIR/results.json and DIR/judge.jsonl")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", default="data/eval/judge_prompts.jsonl", help="judge prompts (eval/judge_data.py; "
                   "default: the embedded set, 15 languages; `eval-import sea-wildbench` converts the public release)")
    p.add_argument("--output-dir", required=True, help="where results.json, judge.jsonl and the judge cache go")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", metavar="HF_DIR", help="the model under test, run by our engine")
    who.add_argument("--checkpoint", metavar="RUN_DIR", help="a training run, run by our engine")
    who.add_argument("--answers-url", metavar="URL", help="the model under test behind an OpenAI-compatible endpoint")
    p.add_argument("--step", type=non_negative_int, help="with --checkpoint: that step")
    p.add_argument("--answers-model", help="the endpoint's model name (with --answers-url)")
    p.add_argument("--answers-key-env", metavar="VAR", help="environment variable holding the endpoint's API key")
    add_model_runtime_arguments(p, dtype="bfloat16")
    add_sampling_arguments(p, max_new_tokens=4096)
    p.add_argument("--reference-url", metavar="URL", help="the reference model behind an OpenAI-compatible endpoint "
                   "(default: the prompts' `reference` answers)")
    p.add_argument("--reference-model", help="the reference endpoint's model name")
    p.add_argument("--reference-key-env", metavar="VAR")
    judge = p.add_mutually_exclusive_group(required=True)
    judge.add_argument("--judge-url", metavar="URL", help="the judge: an OpenAI-compatible endpoint")
    judge.add_argument("--judge-reward", metavar="HF_DIR", help="the judge: a local reward model (a cheap stand-in)")
    p.add_argument("--judge-model", help="the judge endpoint's model name")
    p.add_argument("--judge-key-env", metavar="VAR", help="environment variable holding the judge's API key")
    p.add_argument("--judge-no-json-mode", action="store_true", help="do not ask the judge endpoint for JSON mode "
                   "(response_format), for servers that do not support it; the choice is parsed from the text")
    p.add_argument("--reward-backend", choices=("jax", "transformers"), default="jax")
    p.add_argument("--tie", type=float, default=0.1, help="reward judge: |margin| below this is a tie")
    p.add_argument("--much", type=float, default=1.0, help="reward judge: |margin| from this on is a much-better")
    p.add_argument("--k", type=int, default=500, help="length rule: a slight win by a response longer by more than "
                   "K characters is a tie (-1: off)")
    p.add_argument("--max-words", type=int, default=1000, help="responses are cut at this many words for the judge")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the score intervals")
    p.add_argument("--limit", type=int, help="judge only the first N prompts")
    p.add_argument("--keep-truncated", action="store_true", help="judge answers cut by the length limit instead of "
                   "dropping them (Sea-WildBench drops them; for smoke runs of models that seldom stop)")
    p.add_argument("--concurrency", type=int, default=4, help="parallel endpoint calls")
    p.add_argument("--batch-size", type=int, default=16, help="engine generation batch")
    p.add_argument("--name", help="the model's name in results.json and reports")


def _endpoint(url, model, key_env, flag):
    from sailor2_jax.eval.judge_backends import Endpoint
    if not model:
        raise ValueError(f"{flag} needs its model name ({flag.replace('-url', '-model')})")
    return Endpoint(url, model, key_env)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sailor2_jax.commands._args import model_source, sampling_from
    from sailor2_jax.config import resolve_path
    from sailor2_jax.eval.judge_backends import EndpointAnswerer, EndpointJudge, EngineAnswerer, JudgeCache, RewardJudge
    from sailor2_jax.eval.judge_data import read_judge_prompts
    from sailor2_jax.eval.judge_run import run_judge

    out = Path(args.output_dir)
    prompts, rejected = read_judge_prompts(resolve_path(args.prompts), args.limit)
    for line in rejected:
        print(f"{line}; prompt skipped")
    answers_cache = JudgeCache(out / "answers_cache.jsonl")
    if args.answers_url:
        answerer = EndpointAnswerer(_endpoint(args.answers_url, args.answers_model, args.answers_key_env,
                                              "--answers-url"), answers_cache, max_tokens=args.max_new_tokens,
                                    temperature=args.temperature, concurrency=args.concurrency)
    else:
        from sailor2_jax.model.source import open_model
        answerer = EngineAnswerer(open_model(model_source(args)), sampling=sampling_from(args),
                                  max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed)
    reference = None
    if args.reference_url:
        reference = EndpointAnswerer(_endpoint(args.reference_url, args.reference_model, args.reference_key_env,
                                               "--reference-url"), answers_cache, max_tokens=args.max_new_tokens,
                                     concurrency=args.concurrency)
    if args.judge_url:
        judge = EndpointJudge(_endpoint(args.judge_url, args.judge_model, args.judge_key_env, "--judge-url"),
                              JudgeCache(out / "judge_cache.jsonl"), concurrency=args.concurrency,
                              json_mode=not args.judge_no_json_mode)
    else:
        from sailor2_jax.post.reward import load_reward_model
        judge = RewardJudge(load_reward_model(args.judge_reward, args.reward_backend, progress=False), tie=args.tie,
                            much=args.much)
    summary = run_judge(prompts, answerer, judge, out, reference=reference, k=args.k, seed=args.seed,
                        max_words=args.max_words, bootstrap=args.bootstrap, model_name=args.name,
                        rejected=len(rejected), keep_truncated=args.keep_truncated)
    print(render_summary(summary))
    print(f"wrote {out / 'results.json'} and {out / 'judge.jsonl'} (judge: {summary['judge']})")
    return 0


def render_summary(summary: dict) -> str:
    """Per language and overall: judged, dropped, score [95% interval], win rate, language consistency."""
    m = summary["tasks"]["judge"]
    langs = sorted({k.split("/", 1)[1] for k in m if "/" in k})
    lines = [f"{'language':<9} {'judged':>6} {'dropped':>7} {'score':>6} {'95% interval':>15} {'win':>5} "
             f"{'lang ok %':>9}"]
    for lang, suffix in [*((x, f"/{x}") for x in langs), ("all", "")]:
        row = {k.removesuffix(suffix): v for k, v in m.items() if k.endswith(suffix) and ("/" in k) == bool(suffix)}
        scored = row.get("score") is not None
        score = f"{row['score']:.3f}" if scored else "–"
        interval = f"[{row['score_ci_low']:.3f}, {row['score_ci_high']:.3f}]" if scored else "–"
        win = f"{row['win_rate']:.2f}" if scored else "–"
        consistency = "–" if row.get("language_consistency") is None else f"{row['language_consistency']:.0f}"
        lines.append(f"{lang:<9} {int(row.get('judged', 0)):>6} {int(row.get('dropped', 0)):>7} {score:>6} "
                     f"{interval:>15} {win:>5} {consistency:>9}")
    if summary.get("dropped"):
        lines.append("dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["dropped"].items())))
    return "\n".join(lines)
