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


def child(args) -> None:
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
    p.add_argument("--engine", help=argparse.SUPPRESS)  # internal: run one configuration in this process
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--torch-thread", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.engine:
        return child(args)

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
            env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
            except subprocess.TimeoutExpired:
                print(f"{engine} batch {batch}: over {args.timeout}s, skipped", file=sys.stderr)
                continue
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{engine} batch {batch} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            results.append(json.loads(lines[-1][len("RESULT "):]))
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
