"""Serving benchmark: a load generator against `sailor2-jax serve`, `transformers serve` (continuous batching) on the
same model and machine in the same run, and offline `generate` at the same batch as the ceiling.

  python bench/serve.py                                  # CPU: a tiny random model (real vocabulary), 16 slots
  python bench/serve.py --shape sailor2-1b --dtype bfloat16 --requests 256 --max-tokens 128 --rates 4,16,inf \
      --concurrency 1,16,64 --slots 64                   # a GPU (bench/device_check.sh serve)
  python bench/serve.py --model HF_DIR --peers ours      # a real model, our server only

Workload: chat requests whose user turns are the embedded conversations (`sailor2_jax/embedded/post_data.py`, the
UDHR passages in the demo's languages, cut to --prompt-chars), with an explicit system prompt (both servers then
render the same ChatML), greedy, `max_tokens` = --max-tokens, streamed with usage. Two arrival patterns, as vLLM's
`benchmark_serving.py`: Poisson arrivals at each --rates value (inf: all at once), and a closed loop of C clients
for each --concurrency value (each sends its next request when the last one ends).
Metrics per (server, pattern): request throughput, output tokens/s (usage's completion tokens over the wall time),
TTFT (request sent → first content chunk), TPOT ((last chunk − first chunk) / (tokens − 1)) and ITL (gaps between
content chunks), p50 and p99. Offline: `Generator.generate` on the same prompts at batch --slots, the same
--max-tokens (eos ignored), timed after a warm-up call: the ceiling a server can approach at saturation.
Each server and the offline run is its own process, so no two compete for the CPU at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "You are a helpful assistant."


def make_model(shape: str, dtype: str, out: Path) -> Path:
    """A random model saved as an HF directory with the Qwen2.5 tokenizer: `tiny`, or a packaged config's shape."""
    from sailor2_jax.tokenizer import EOS_ID, save_hf_tokenizer

    if shape == "tiny":
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(0)
        cfg = Qwen2Config(vocab_size=151936, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                          initializer_range=0.2, eos_token_id=EOS_ID, bos_token_id=EOS_ID)
        model = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
        model.generation_config.eos_token_id = EOS_ID
        model.save_pretrained(out)
        save_hf_tokenizer(out)
        return out
    import jax

    from sailor2_jax.config import ComputeConfig, MeshConfig, load_model_config
    from sailor2_jax.model.hf import export_hf
    from sailor2_jax.model.init import create_model
    from sailor2_jax.sharding import make_mesh

    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    model = create_model(load_model_config(shape), mesh, seed=0, compute=ComputeConfig(param_dtype=dtype,
                                                                                         dtype=dtype))
    export_hf(model, out)
    return out


def prompts(n: int, chars: int) -> list[str]:
    from sailor2_jax.embedded.post_data import conversations, passages

    users = [c["messages"][0]["content"][:chars] for c in conversations(passages())]
    return [users[i % len(users)] for i in range(n)]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}) before it was healthy")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f}s")


def start_server(peer: str, model_dir: Path, port: int, args, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if peer == "ours":
        cmd = [sys.executable, "-m", "sailor2_jax.cli", "serve", "--model", str(model_dir), "--port", str(port),
               "--max-slots", str(args.slots), "--max-len", str(args.max_len), "--dtype", args.dtype, "--mesh",
               "1,1,1", "--served-model-name", "bench", "--max-queue", "100000",
               "--decode-steps", str(args.decode_steps)]
        env["XLA_FLAGS"] = ""  # one device
    else:
        cmd = [sys.executable, "-c", "from transformers.cli.transformers import main; main()", "serve",
               str(model_dir), "--continuous-batching", "--port", str(port), "--dtype", args.dtype,
               "--device", args.torch_device, "--max-model-len", str(args.max_len)]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    _wait_healthy(f"http://127.0.0.1:{port}/health", proc, args.start_timeout)
    return proc


async def one_request(session, url: str, model: str, text: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    chunks, usage = [], None
    async with session.post(url, json=body) as r:
        if r.status != 200:
            return {"error": f"HTTP {r.status}: {(await r.text())[:200]}"}
        async for raw in r.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                usage = data["usage"]
            if any((c.get("delta") or {}).get("content") for c in data.get("choices", [])):
                chunks.append(time.perf_counter())
    tokens = usage["completion_tokens"] if usage else len(chunks)
    return {"sent": sent, "chunks": chunks, "end": time.perf_counter(), "tokens": tokens}


async def run_load(url: str, model: str, texts: list[str], max_tokens: int, *, rate: float | None = None,
                   concurrency: int | None = None) -> tuple[list[dict], float]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        if concurrency is not None:  # closed loop
            queue = list(reversed(texts))
            results: list[dict] = []

            async def client():
                while queue:
                    results.append(await one_request(session, url, model, queue.pop(), max_tokens))
            await asyncio.gather(*(client() for _ in range(concurrency)))
        else:  # Poisson arrivals (rate inf: all at once)
            gaps = np.random.RandomState(0).exponential(1.0 / rate, len(texts)) if rate != float("inf") else \
                np.zeros(len(texts))
            tasks = []
            for text, gap in zip(texts, gaps):
                await asyncio.sleep(gap)
                tasks.append(asyncio.create_task(one_request(session, url, model, text, max_tokens)))
            results = await asyncio.gather(*tasks)
        return results, time.perf_counter() - start


def summarize(results: list[dict], wall: float) -> dict:
    ok = [r for r in results if "error" not in r and r["chunks"]]
    errors = [r["error"] for r in results if "error" in r]

    def pct(values, q):
        return round(float(np.percentile(values, q)) * 1000, 2) if len(values) else None
    ttft = [r["chunks"][0] - r["sent"] for r in ok]
    tpot = [(r["chunks"][-1] - r["chunks"][0]) / (r["tokens"] - 1) for r in ok if r["tokens"] > 1]
    itl = [b - a for r in ok for a, b in zip(r["chunks"], r["chunks"][1:])]
    tokens = sum(r["tokens"] for r in ok)
    return {"requests": len(results), "errors": len(errors), "first_error": errors[0] if errors else None,
            "wall_s": round(wall, 2), "requests_per_s": round(len(ok) / wall, 3),
            "output_tokens_per_s": round(tokens / wall, 1), "ttft_ms_p50": pct(ttft, 50), "ttft_ms_p99": pct(ttft, 99),
            "tpot_ms_p50": pct(tpot, 50), "tpot_ms_p99": pct(tpot, 99), "itl_ms_p50": pct(itl, 50),
            "itl_ms_p99": pct(itl, 99)}


def offline(model_dir: Path, texts: list[str], args) -> dict:
    """The ceiling: `Generator.generate` on the same chats at batch --slots (in its own process)."""
    code = f"""
import json, sys, time
import jax
from sailor2_jax.config import MeshConfig
from sailor2_jax.generate.engine import Generator
from sailor2_jax.model.source import ModelSource, open_model
from sailor2_jax.post.chat import encode
from sailor2_jax.sharding import make_mesh
texts = json.loads(sys.stdin.read())
mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
opened = open_model(ModelSource(path={str(model_dir)!r}, dtype={args.dtype!r}), mesh=mesh)
ids = [encode([{{"role": "system", "content": {SYSTEM!r}}}, {{"role": "user", "content": t}}],
              add_generation_prompt=True, tokenizer=opened.tokenizer).ids.tolist() for t in texts]
gen = Generator(opened.model, mesh)
kw = dict(max_new_tokens={args.max_tokens}, eos_ids=(), batch_size={args.slots})
gen.generate(ids, **kw)  # compile every bucket
start = time.perf_counter()
out = gen.generate(ids, **kw)
wall = time.perf_counter() - start
tokens = sum(len(c.token_ids) for r in out for c in r)
print(json.dumps({{"wall_s": round(wall, 2), "output_tokens_per_s": round(tokens / wall, 1), "batch": {args.slots}}}))
"""
    env = {**os.environ, "XLA_FLAGS": ""}
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=3600)
    if done.returncode:
        return {"error": done.stderr[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="an HF directory (default: a random model of --shape)")
    p.add_argument("--shape", default="tiny", help="tiny, or a packaged model config (sailor2-1b)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--slots", type=int, default=16)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--decode-steps", type=int, default=8, help="our server's --decode-steps")
    p.add_argument("--prompt-chars", type=int, default=200)
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--rates", default="2,inf", help="Poisson request rates per second (inf: all at once)")
    p.add_argument("--concurrency", default="1,16", help="closed-loop client counts")
    p.add_argument("--peers", default="ours,transformers,offline")
    p.add_argument("--torch-device", default="cpu")
    p.add_argument("--start-timeout", type=float, default=600)
    p.add_argument("--out", help="a JSON file for the results")
    args = p.parse_args()
    peers = args.peers.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model_dir = Path(args.model) if args.model else make_model(args.shape, args.dtype, work / "model")
    texts = prompts(args.requests, args.prompt_chars)
    patterns = [("rate", float(r)) for r in args.rates.split(",") if r] + \
        [("concurrency", int(c)) for c in args.concurrency.split(",") if c]
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "model": args.model or args.shape,
              "dtype": args.dtype, "slots": args.slots, "max_tokens": args.max_tokens, "requests": args.requests,
              "decode_steps": args.decode_steps, "load_average": os.getloadavg(),
              "results": {}}
    for peer in [p for p in peers if p != "offline"]:
        port = 18000 + peers.index(peer)
        log = work / f"{peer}.log"
        try:
            started = time.perf_counter()
            proc = start_server(peer, model_dir, port, args, log)
            report["results"][f"{peer}_start_s"] = round(time.perf_counter() - started, 1)
        except Exception as e:
            report["results"][peer] = {"error": f"{e}; log {log}: {log.read_text()[-300:] if log.exists() else ''}"}
            continue
        model = "bench" if peer == "ours" else str(model_dir)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        try:
            asyncio.run(run_load(url, model, texts[:4], args.max_tokens, concurrency=4))  # warm-up
            for kind, value in patterns:
                results, wall = asyncio.run(run_load(url, model, texts, args.max_tokens, **{kind: value}))
                name = f"{peer} {kind}={value:g}"
                report["results"][name] = summarize(results, wall)
                print(name, json.dumps(report["results"][name]), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    if "offline" in peers:
        report["results"]["offline"] = offline(model_dir, texts, args)
        print("offline", json.dumps(report["results"]["offline"]), flush=True)
    report["load_average_end"] = os.getloadavg()
    r = report["results"]
    # saturation: every request queued at once (rate inf, benchmark_serving's default), and the most clients
    for sat in ("ours rate=inf", f"ours concurrency={max(int(c) for c in args.concurrency.split(','))}"):
        if sat in r and "output_tokens_per_s" in r.get("offline", {}):
            report[f"{sat} / offline"] = round(r[sat]["output_tokens_per_s"] / r["offline"]["output_tokens_per_s"], 3)
    peer16 = "transformers concurrency=16"
    if "ours concurrency=16" in r and "output_tokens_per_s" in r.get(peer16, {}):
        report["ours_vs_transformers_at_16"] = round(r["ours concurrency=16"]["output_tokens_per_s"] /
                                                      r[peer16]["output_tokens_per_s"], 2)
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
