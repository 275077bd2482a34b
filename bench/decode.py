"""Decoding benchmark: new tokens/s of our engine and of `transformers`' `generate`, same shape, same machine, same run.

  python bench/decode.py                               # GPU default: Sailor2-1B shape, prompt 128, 256 new tokens,
                                                       # batch 1, 32, 128; random bf16 weights; both engines
  python bench/decode.py --new 16 --batches 1,32       # what fits a small CPU
  python bench/decode.py --engines ours --batches 128  # one engine only

Both engines sample (temperature 1, top-k 50: transformers' default top-k) and ignore eos (transformers with
`min_new_tokens`, ours with an empty eos list), so every row decodes exactly `--new` tokens after a `--prompt`-token
prompt. After warm-up calls (ours compiles there; reported as `first_call_s`), each engine is timed on a call with
`--new` tokens (t_N) and one with a single new token (t_1, which is prefill and the first token):
  tokens/s        = batch × new / t_N                    (the whole call, prefill included: what a user waits for)
  decode tokens/s = batch × (new − 1) / (t_N − t_1)      (the decode loop alone)
`--draft` benchmarks speculative decoding instead (greedy, see `draft_main`).

Each (engine, batch) runs in its own process: JAX preallocates most of an accelerator's memory, and torch must not
share it. `--ours-compute-dtype float32` keeps the weights in --dtype but computes in fp32 (XLA:CPU has no fast bf16
matmul; torch uses the CPU's AMX/AVX512-BF16 units). Results go to stdout as a markdown table and, with --out, to a
JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _prompts(batch: int, length: int, vocab: int):
    import numpy as np
    return np.random.RandomState(0).randint(0, vocab, (batch, length))


def run_ours(model_name: str, batch: int, prompt: int, new: int, dtype: str, compute_dtype: str) -> dict:
    import jax

    from sailor2_jax.config import ComputeConfig, MeshConfig, load_model_config
    from sailor2_jax.generate.engine import Generator
    from sailor2_jax.generate.sampling import SamplingConfig
    from sailor2_jax.model.init import create_model
    from sailor2_jax.sharding import make_mesh

    cfg = load_model_config(model_name)
    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    model = create_model(cfg, mesh, seed=0, compute=ComputeConfig(param_dtype=dtype, dtype=compute_dtype,
                                                                  remat="none"))
    gen = Generator(model, mesh)
    prompts = _prompts(batch, prompt, cfg.vocab_size).tolist()
    sampling = SamplingConfig(temperature=1.0, top_k=50)

    def call(n, seed=0):
        t = time.perf_counter()
        out = gen.generate(prompts, sampling=sampling, max_new_tokens=n, seed=seed, eos_ids=(), batch_size=batch)
        seconds = time.perf_counter() - t
        assert all(len(c.token_ids) == n for r in out for c in r)
        return seconds
    first = call(new) + call(1)  # compiles both programs of both lengths
    return {"first_call_s": round(first, 2), "t_1": call(1, 1), "t_n": call(new, 1),
            "device": str(jax.devices()[0].device_kind), "compute_dtype": compute_dtype}


def run_transformers(model_name: str, batch: int, prompt: int, new: int, dtype: str, compute_dtype: str,
                     threads: int | None = None) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sailor2_jax.config import load_model_config

    cfg = load_model_config(model_name)
    hf_cfg = Qwen2Config(**{k: v for k, v in cfg.to_hf(dtype).items() if k not in ("architectures", "model_type")})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(hf_cfg).to(getattr(torch, dtype)).eval()
    ids = torch.tensor(_prompts(batch, prompt, cfg.vocab_size), device=device)
    mask = torch.ones_like(ids)

    def call(n):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=50,
                                 top_p=1.0, max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
        if device == "cuda":
            torch.cuda.synchronize()
        assert out.shape == (batch, prompt + n)
        return time.perf_counter() - t
    first = call(2)
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    return {"first_call_s": round(first, 2), "t_1": call(1), "t_n": call(new), "device": name,
            "torch_threads": torch.get_num_threads()}


ENGINES = {"ours": run_ours, "transformers": run_transformers}


# --- speculative decoding (--draft) --------------------------------------------------------------------------------
# A target/draft pair that agrees, built the same way (seeded) in both engines' processes: a random `--draft-layers`
# draft, and a target with the draft's layers spread over `--target-layers` layers and random layers inserted between
# them whose output projections (o_proj, down_proj) are scaled by `--eps` — a block-expanded model some way into
# continual pre-training (eps 0 is the expansion at step 0: acceptance 1). The target's config records the inserted
# layers, so the same pair gives both draft kinds: the separate draft model, and `self` (the target with the
# inserted layers skipped: the same function, no second copy of the weights).
DRAFT_SHAPE = dict(vocab_size=32768, hidden_size=1024, intermediate_size=2816, num_attention_heads=16,
                   num_key_value_heads=4)  # a Qwen2.5-like block; a 32k vocabulary keeps the LM head from dominating


def draft_pair(args):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    def config(layers):
        return Qwen2Config(**DRAFT_SHAPE, num_hidden_layers=layers, tie_word_embeddings=False, rope_theta=1e6,
                           max_position_embeddings=4096, initializer_range=args.init_std, bos_token_id=0,
                           eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    draft = Qwen2ForCausalLM(config(args.draft_layers)).eval()
    target = Qwen2ForCausalLM(config(args.target_layers)).eval()
    kept = [round(i * args.target_layers / args.draft_layers) for i in range(args.draft_layers)]
    inserted = [i for i in range(args.target_layers) if i not in kept]
    with torch.no_grad():
        target.model.embed_tokens.weight.copy_(draft.model.embed_tokens.weight)
        target.lm_head.weight.copy_(draft.lm_head.weight)
        target.model.norm.weight.copy_(draft.model.norm.weight)
        for j, i in enumerate(kept):
            target.model.layers[i].load_state_dict(draft.model.layers[j].state_dict())
        for i in inserted:
            target.model.layers[i].self_attn.o_proj.weight.mul_(args.eps)
            target.model.layers[i].mlp.down_proj.weight.mul_(args.eps)
    target.config.sailor2_inserted_layers = inserted
    return target, draft


def _timed(call, *a):
    t = time.perf_counter()
    out = call(*a)
    return time.perf_counter() - t, out


def run_ours_draft(args) -> dict:
    import tempfile

    import jax

    from sailor2_jax.config import ComputeConfig, MeshConfig
    from sailor2_jax.generate.engine import Generator
    from sailor2_jax.generate.speculative import SpeculativeGenerator
    from sailor2_jax.model.hf import import_hf
    from sailor2_jax.sharding import make_mesh

    target_hf, draft_hf = draft_pair(args)
    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    compute = ComputeConfig(param_dtype=args.dtype, dtype=args.ours_compute_dtype or args.dtype, remat="none")
    with tempfile.TemporaryDirectory() as tmp:
        target_hf.save_pretrained(f"{tmp}/t")
        draft_hf.save_pretrained(f"{tmp}/d")
        del target_hf, draft_hf
        target, draft = import_hf(f"{tmp}/t", mesh, compute), import_hf(f"{tmp}/d", mesh, compute)
    prompts = _prompts(args.batch, args.prompt, DRAFT_SHAPE["vocab_size"]).tolist()
    gens = {"target alone": Generator(target, mesh),
            "draft model": SpeculativeGenerator(target, mesh, draft, draft_tokens=args.draft_tokens),
            "self draft": SpeculativeGenerator(target, mesh, draft_tokens=args.draft_tokens)}
    def call(gen):
        out = gen.generate(prompts, max_new_tokens=args.new, eos_ids=(), batch_size=args.batch)
        return [c.token_ids for r in out for c in r]
    first = {name: _timed(call, gen)[0] for name, gen in gens.items()}  # compiles
    for gen in gens.values():
        if isinstance(gen, SpeculativeGenerator):
            gen.reset_stats()
    best, tokens = _interleaved(gens, call, args.reps)
    rows = []
    for name, gen in gens.items():
        row = {"engine": f"ours, {name}", "first_call_s": round(first[name], 2), "t_n": round(best[name], 3),
               "tokens_per_s": round(args.batch * args.new / best[name], 2),
               "same_tokens": tokens[name] == tokens["target alone"]}
        if isinstance(gen, SpeculativeGenerator):
            st = gen.stats
            row.update(acceptance=round(st["acceptance"], 3), tokens_per_target_step=round(st["tokens_per_step"], 2))
        rows.append(row)
    return {"rows": rows, "device": str(jax.devices()[0].device_kind)}


def _interleaved(engines: dict, call, reps: int) -> tuple[dict, dict]:
    """The fastest of `reps` timed calls of each engine, the engines taking turns (on a shared machine the load
    drifts between minutes: turns expose every engine to the same drift), and each engine's output token lists."""
    best, tokens = {}, {}
    for _ in range(reps):
        for name, engine in engines.items():
            seconds, out = _timed(call, engine)
            best[name] = min(best.get(name, seconds), seconds)
            tokens[name] = out
    return best, tokens


def run_transformers_draft(args) -> dict:
    import torch

    if args.torch_thread:
        torch.set_num_threads(args.torch_thread)
    target, draft = draft_pair(args)
    dtype = getattr(torch, args.dtype)
    target, draft = target.to(dtype), draft.to(dtype)
    ids = torch.tensor(_prompts(args.batch, args.prompt, DRAFT_SHAPE["vocab_size"]))
    kinds = {"target alone": {}, "assisted (draft model)": dict(
        assistant_model=draft, num_assistant_tokens=args.draft_tokens, num_assistant_tokens_schedule="constant",
        assistant_confidence_threshold=0.0)}
    if args.batch > 1:
        del kinds["assisted (draft model)"]  # transformers' assisted generation takes batch 1 only

    def call(extra):
        with torch.no_grad():
            out = target.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                  max_new_tokens=args.new, min_new_tokens=args.new, pad_token_id=0,
                                  eos_token_id=None, **extra)
        return out[:, args.prompt:].tolist()
    first = {name: _timed(call, extra)[0] for name, extra in kinds.items()}
    best, tokens = _interleaved(kinds, call, args.reps)
    rows = [{"engine": f"transformers, {name}", "first_call_s": round(first[name], 2), "t_n": round(best[name], 3),
             "tokens_per_s": round(args.batch * args.new / best[name], 2),
             "same_tokens": tokens[name] == tokens["target alone"]} for name in kinds]
    return {"rows": rows, "device": platform.processor() or "cpu", "torch_threads": torch.get_num_threads()}


DRAFT_ENGINES = {"ours": run_ours_draft, "transformers": run_transformers_draft}


def run_child(cmd: list[str], label: str, timeout: float) -> dict | None:
    """One configuration in its own process; the JSON it prints after `RESULT `, or None (said on stderr) when it
    fails or outlives `timeout`."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        print(f"{label}: over {timeout}s, skipped", file=sys.stderr)
        return None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        print(f"{label} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT "):])


def draft_main(args) -> None:
    """Greedy decoding of `--new` tokens from a `--prompt`-token random prompt at each batch: the target alone, with
    the draft model, with the self draft (ours), and transformers' plain and assisted generation on the same
    weights (batch 1). Reports new tokens/s (the whole call, prefill included, after a warm-up call), the acceptance
    rate, tokens per target step, and whether every engine produced the target's own tokens."""
    results = []
    for batch in [int(b) for b in args.batches.split(",")]:
        for engine in args.engines.split(","):
            cmd = [sys.executable, __file__, "--draft", "--engine", engine, "--batch", str(batch),
                   *sys.argv[1:]]
            result = run_child(cmd, f"{engine} batch {batch}", args.timeout)
            if result is None:
                continue
            for row in result["rows"]:
                results.append({**row, "batch": batch, "device": result["device"]})
    print(f"\ntarget {args.target_layers} layers, draft {args.draft_layers} layers ({DRAFT_SHAPE}), inserted layers' "
          f"outputs × {args.eps}; {args.dtype}, greedy, prompt {args.prompt}, {args.new} new tokens, "
          f"γ = {args.draft_tokens}")
    print("| batch | engine | tokens/s | speed-up over the same engine's target alone | acceptance | tokens per "
          "target step | target's own tokens |")
    print("|---|---|---|---|---|---|---|")
    for batch in sorted({r["batch"] for r in results}):
        rows = [r for r in results if r["batch"] == batch]
        for r in rows:
            alone = next(x for x in rows if x["engine"].split(",")[0] == r["engine"].split(",")[0]
                         and x["engine"].endswith("target alone"))
            print(f"| {batch} | {r['engine']} | {r['tokens_per_s']} | {r['tokens_per_s'] / alone['tokens_per_s']:.2f}× "
                  f"| {r.get('acceptance', '–')} | {r.get('tokens_per_target_step', '–')} | "
                  f"{'yes' if r['same_tokens'] else 'NO'} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


def child(args) -> None:
    if args.draft:
        result = DRAFT_ENGINES[args.engine](args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    extra = {"threads": args.torch_thread} if args.engine == "transformers" else {}
    result = ENGINES[args.engine](args.model, args.batch, args.prompt, args.new, args.dtype,
                                  args.ours_compute_dtype or args.dtype, **extra)
    t_1, t_n = result["t_1"], result["t_n"]
    result.update(engine=args.engine, batch=args.batch, prompt=args.prompt, new=args.new, dtype=args.dtype,
                  t_1=round(t_1, 3), t_n=round(t_n, 3), tokens_per_s=round(args.batch * args.new / t_n, 2),
                  decode_tokens_per_s=round(args.batch * (args.new - 1) / (t_n - t_1), 2) if args.new > 1 else None)
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sailor2-1b", help="a packaged model config (the shape; weights are random)")
    p.add_argument("--batches", default="1,32,128")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=256)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--engines", default="ours,transformers")
    p.add_argument("--ours-compute-dtype", choices=("bfloat16", "float32"), help="default: --dtype")
    p.add_argument("--torch-threads", default="", help="CPU: comma-separated torch thread counts to try (the best "
                   "is compared; on an oversubscribed machine OpenMP spinning can make 1 thread faster than 2)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per (engine, batch) process")
    p.add_argument("--draft", action="store_true", help="benchmark speculative decoding (greedy; see draft_main)")
    p.add_argument("--draft-tokens", type=int, default=4, help="--draft: γ")
    p.add_argument("--reps", type=int, default=3, help="--draft: timed calls per engine, taking turns (the fastest)")
    p.add_argument("--target-layers", type=int, default=24, help="--draft: the target's layers")
    p.add_argument("--draft-layers", type=int, default=2, help="--draft: the draft's layers (the target's kept ones)")
    p.add_argument("--eps", type=float, default=0.05, help="--draft: scale of the inserted layers' outputs")
    p.add_argument("--init-std", type=float, default=0.05, help="--draft: weight init std of the random pair")
    p.add_argument("--engine", help=argparse.SUPPRESS)  # internal: run one configuration in this process
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--torch-thread", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.engine:
        return child(args)
    if args.draft:
        return draft_main(args)

    results = []
    for batch in [int(b) for b in args.batches.split(",")]:
        runs = [(engine, None) for engine in args.engines.split(",") if engine != "transformers"]
        if "transformers" in args.engines.split(","):
            runs += [("transformers", int(t)) for t in args.torch_threads.split(",")] if args.torch_threads else \
                [("transformers", None)]
        for engine, threads in runs:
            cmd = [sys.executable, __file__, "--engine", engine, "--batch", str(batch), "--model", args.model,
                   "--prompt", str(args.prompt), "--new", str(args.new), "--dtype", args.dtype]
            cmd += ["--ours-compute-dtype", args.ours_compute_dtype] if args.ours_compute_dtype else []
            cmd += ["--torch-thread", str(threads)] if threads else []
            result = run_child(cmd, f"{engine} batch {batch}", args.timeout)
            if result is None:
                continue
            results.append(result)
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)

    compute = f", ours computing in {args.ours_compute_dtype}" if args.ours_compute_dtype else ""
    print(f"\n{args.model} shape, {args.dtype} weights{compute}, prompt {args.prompt}, {args.new} new tokens, "
          "sampling (T=1, top-k 50)")
    print("| batch | ours tokens/s | transformers tokens/s | ratio | ours decode tokens/s | transformers decode "
          "tokens/s | ratio | ours first calls (compile) s |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in sorted({r["batch"] for r in results}):
        row = {}
        for r in sorted((r for r in results if r["batch"] == batch), key=lambda r: r["tokens_per_s"]):
            row[r["engine"]] = r  # the fastest run of each engine (transformers: over --torch-threads)
        ours, hf = row.get("ours"), row.get("transformers")
        cells = []
        for key in ("tokens_per_s", "decode_tokens_per_s"):
            a, b = (r[key] if r and r[key] else None for r in (ours, hf))
            cells += [a or "–", b or "–", f"{a / b:.1f}×" if a and b else "–"]
        print(f"| {batch} | " + " | ".join(str(c) for c in cells) + f" | {ours['first_call_s'] if ours else '–'} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
