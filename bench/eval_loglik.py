"""Evaluation scoring benchmark: lm-eval `loglikelihood` requests/s of our model (the `sailor2_jax` bridge: jitted,
bucketed, sharded) and of lm-eval's own `hf` model (transformers/torch) on the same requests, same machine, same run.

  python bench/eval_loglik.py                      # the demo's tiny model (real vocabulary), fp32, batch 16
  python bench/eval_loglik.py --model HF_DIR --dtype bfloat16 --batch-size 32
  python bench/eval_loglik.py --limit 96             # a small CPU
  python bench/eval_loglik.py --answers letter       # letter answers (" A" .. " D") after each context

Requests: every (context, choice) pair of the embedded UDHR continuation task (150 records × 4 choices = 600
requests, all 15 languages); with `--answers letter` each choice is a letter instead, as in SailCompass'
lettered multiple choice (Belebele, M3Exam): one scored token after a long context. Each engine runs the whole list
once to warm up (ours compiles its buckets there, reported as `first_call_s`), then once timed. Both return the
same log-likelihoods (the largest difference is printed: a check that the two did the same work). Markdown table
on stdout, JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def requests(answers: str = "full"):
    from lm_eval.api.instance import Instance

    from sailor2_jax.config import DATA_DIR
    out = []
    for line in (DATA_DIR / "eval" / "udhr_continuation.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        for k, c in enumerate(r["choices"]):
            c = c if answers == "full" else f" {'ABCDEFGH'[k]}"
            out.append(Instance(request_type="loglikelihood", doc={}, arguments=(r["context"], c), idx=len(out)))
    return out


def timed(lm, reqs) -> tuple[float, float, list[float]]:
    t0 = time.perf_counter()
    lm.loglikelihood(reqs, disable_tqdm=True)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = lm.loglikelihood(reqs, disable_tqdm=True)
    return first, time.perf_counter() - t0, [ll for ll, _ in out]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="an HF directory (default: the demo's random tiny base, made here)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--answers", default="full", choices=("full", "letter"),
                   help="score each choice's text (default) or a letter after the context")
    p.add_argument("--limit", type=int, help="only the first N requests (a busy small CPU)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    import jax
    import torch
    from lm_eval.models.huggingface import HFLM

    from sailor2_jax.eval.lm_eval_model import Sailor2JaxLM

    model_dir = args.model
    if model_dir is None:
        from sailor2_jax.demo.fixtures import make_base_checkpoint
        model_dir = str(make_base_checkpoint(Path(tempfile.mkdtemp()) / "base"))
    reqs = requests(args.answers)[:args.limit]
    rows = []
    ours = Sailor2JaxLM(path=model_dir, dtype=args.dtype, batch_size=args.batch_size)
    first, seconds, ll_ours = timed(ours, reqs)
    rows.append({"engine": f"ours (JAX {jax.__version__}, {jax.default_backend()}, {jax.device_count()} devices)",
                 "first_call_s": round(first, 2), "seconds": round(seconds, 2),
                 "requests_per_s": round(len(reqs) / seconds, 1)})
    hf = HFLM(pretrained=model_dir, dtype=args.dtype, batch_size=args.batch_size, device="cpu"
              if not torch.cuda.is_available() else "cuda")
    first, seconds, ll_hf = timed(hf, reqs)
    rows.append({"engine": f"lm-eval hf (torch {torch.__version__}, {torch.get_num_threads()} threads)",
                 "first_call_s": round(first, 2), "seconds": round(seconds, 2),
                 "requests_per_s": round(len(reqs) / seconds, 1)})
    diff = max(abs(a - b) for a, b in zip(ll_ours, ll_hf))
    ratio = rows[0]["requests_per_s"] / rows[1]["requests_per_s"]
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "model": model_dir, "dtype": args.dtype, "batch_size": args.batch_size, "answers": args.answers,
              "requests": len(reqs),
              "rows": rows, "ours_over_hf": round(ratio, 2), "max_abs_loglik_diff": diff}
    print(f"{len(reqs)} loglikelihood requests ({args.answers} answers), {args.dtype}, batch {args.batch_size}; "
          f"largest |Δ loglik| between the engines: {diff:.2e}\n")
    print("| engine | first call (s) | timed call (s) | requests/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['first_call_s']} | {r['seconds']} | {r['requests_per_s']} |")
    print(f"\nours / hf: {ratio:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
