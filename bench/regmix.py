"""RegMix proxy throughput: P proxies as one vmapped program against the same P trained one after another.

    .venv/bin/python bench/regmix.py [--proxies 64] [--shape demo|1m] [--batch-size B] [--seq-len T]
                                     [--steps 4] [--rounds 3] [--devices 1] [--profile] [--synthetic]

Both sides train the same proxies on the same data (the demo's stage 1: UDHR text in nine languages through the
real tokenizer, seqio and grain, each proxy under its own sampled mixture), from the same initial weights:

- vmapped: `regmix.program.ProxyProgram` (the project's step under jax.vmap, the proxy axis over the devices), fed
  by `ProxyBatches` (every proxy's grain pipeline);
- one after another: for each proxy its own grain pipeline and the project's ordinary jitted step
  (`setup_step(...).compile`, one device), compiled once and reused by every proxy (the strongest sequential
  baseline).

Timed after a warm-up step (compilation excluded, reported separately), best of `rounds` rounds run alternately.
"end to end" includes building the batches; "step only" feeds batches built beforehand. Proxy tokens/s counts every
proxy's tokens (P x B x T per step).

Whole runs (`--separate-runs N`): N proxies each trained as its own run of `proxy.steps` steps, as RegMix's reference
runs its 1,000 proxies (one job each): a fresh step function (so a compilation), a fresh state, its batches; against
the one program's whole run (build, compile, `proxy.steps` steps) for all P. Data loading and process start-up, which
a separate job would also pay, are left out of both.

`--profile` traces one round of each side (jax.profiler) and reports the time XLA's CPU ops were running, summed
over threads, per proxy step: what the proxies' kernels cost, without dispatch and waiting. Where batching does not
make the kernels cheaper per proxy (compare the two sides' op times), the sequential side's wall time over its op
time per core (`no_overhead_bound`) bounds what running the proxies as one program could gain on this machine.

`--synthetic` feeds random packed rows (the project's SyntheticLM, one seed per proxy, the same rows on both sides)
instead of the demo's data, so the bench runs where seqio/grain are not installed (the lent GPU's image); its
host-side row generation is slow Python, so compare the step-only figures.

Shapes: `demo` is configs/regmix/demo.yaml's proxy (d 64, 4 x 64 tokens per step); `1m` is RegMix's 1M proxy
(configs/model/regmix-1m.yaml, d 256) with the compact vocabulary, at a CPU-sized batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--proxies", type=int, default=64)
    p.add_argument("--shape", choices=("demo", "1m"), default="demo")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--steps", type=int, default=4, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--devices", type=int, default=1, help="CPU devices the vmapped program spreads proxies over")
    p.add_argument("--separate-runs", type=int, default=2, help="whole single-proxy runs timed (0: none)")
    p.add_argument("--profile", action="store_true", help="also report XLA op time per proxy step of each side")
    p.add_argument("--synthetic", action="store_true", help="random token rows instead of the demo's stage-1 data "
                   "(no seqio/grain needed: machines without the data stack, e.g. the lent GPU)")
    p.add_argument("--vocab", type=int, default=1088, help="--synthetic: vocabulary rows (default: the demo's "
                   "compact vocabulary's size)")
    args = p.parse_args()
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import jax
    import numpy as np
    from flax import nnx

    from sailor2_jax.config import MeshConfig
    from sailor2_jax.model.init import create_model
    from sailor2_jax.regmix.config import load_regmix_config
    from sailor2_jax.regmix.program import ProxyProgram, proxy_mesh, proxy_train_config
    from sailor2_jax.sharding import global_batch, make_mesh
    from sailor2_jax.train.objectives import Objective
    from sailor2_jax.train.step import init_state, setup_step

    over = [] if args.shape == "demo" else ["proxy.model=regmix-1m", "proxy.batch_size=4", "proxy.seq_len=128"]
    over += [f"proxy.batch_size={args.batch_size}"] * bool(args.batch_size)
    over += [f"proxy.seq_len={args.seq_len}"] * bool(args.seq_len)
    cfg = load_regmix_config("demo", over)
    P, S, proxy = args.proxies, args.steps, cfg.proxy
    if args.synthetic:  # random packed rows over the vocabulary: no seqio/grain (e.g. the device image)
        from sailor2_jax.train.batches import SyntheticLM

        vocab = args.vocab

        def proxy_batches(i: int, name: str):
            return SyntheticLM(proxy.batch_size, proxy.seq_len, vocab, seed=i, process_index=0, process_count=1)

        def stacked():  # every proxy's batch of one step, stacked on the proxy axis (as ProxyBatches gives them)
            its_v = [proxy_batches(i, "") for i in range(P)]
            while True:
                batches = [next(it) for it in its_v]
                yield {k: np.stack([b[k] for b in batches]) for k in batches[0]}
        feed = stacked()
    else:
        from sailor2_jax.regmix.data import ProxyBatches, ProxyData
        from sailor2_jax.regmix.sample import normalised, sample_mixtures

        data = ProxyData.load(cfg)
        prior = normalised(data.train_tokens)
        weights, _ = sample_mixtures([prior[lang] for lang in data.languages], cfg.sample, P, cfg.sample.seed)
        vocab = data.vocab.size

        def proxy_batches(i: int, name: str):
            return map(data.vocab.remap, data.iterator(weights[i], name))
        feed = ProxyBatches(data, [f"m{i}" for i in range(P)], weights)
    model_cfg = proxy.model.replace(vocab_size=vocab)
    train_cfg = proxy_train_config(proxy, model_cfg)
    tokens = P * proxy.batch_size * proxy.seq_len  # proxy tokens per step of all P

    # vmapped: one program
    t = time.perf_counter()
    program = ProxyProgram(train_cfg, model_cfg, proxy_mesh(), P)
    state = program.init()
    state, m = program.step(state, next(feed))
    jax.block_until_ready(m)
    vmapped_compile = time.perf_counter() - t
    prebuilt_v = [next(feed) for _ in range(S)]

    # one after another: the ordinary single-proxy step, compiled once
    mesh1 = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    setup = setup_step(train_cfg, model_cfg, mesh1)
    t = time.perf_counter()
    step1 = setup.compile(Objective(train_cfg.objective), mesh1, proxy.micro_batches, with_reference=False)
    params = nnx.to_pure_dict(nnx.state(create_model(model_cfg, mesh1, proxy.seed, proxy.compute)))
    first_state = jax.jit(lambda p: init_state(p, setup.tx, proxy.seed), out_shardings=setup.shardings)
    s1 = first_state(params)
    its = [proxy_batches(i, f"s{i}") for i in range(P)]
    with jax.set_mesh(mesh1):  # as the training loop runs it
        s1, m1 = step1(s1, global_batch(next(its[0]), mesh1), None)
        jax.block_until_ready(m1)
    sequential_compile = time.perf_counter() - t
    prebuilt_s = [[global_batch(next(it), mesh1) for _ in range(S)] for it in its]

    def vmapped(end_to_end: bool) -> float:
        nonlocal state
        t0 = time.perf_counter()
        for k in range(S):
            state, out = program.step(state, next(feed) if end_to_end else prebuilt_v[k])
        jax.block_until_ready(out)
        return time.perf_counter() - t0

    def sequential(end_to_end: bool) -> float:
        t0 = time.perf_counter()
        with jax.set_mesh(mesh1):
            for i, it in enumerate(its):
                s = first_state(params)  # each proxy starts from the shared initial weights
                for k in range(S):
                    batch = global_batch(next(it), mesh1) if end_to_end else prebuilt_s[i][k]
                    s, out = step1(s, batch, None)
                jax.block_until_ready(out)
        return time.perf_counter() - t0

    best = {k: float("inf") for k in ("vmapped_e2e", "sequential_e2e", "vmapped_step", "sequential_step")}
    for _ in range(args.rounds):
        best["vmapped_e2e"] = min(best["vmapped_e2e"], vmapped(True))
        best["sequential_e2e"] = min(best["sequential_e2e"], sequential(True))
        best["vmapped_step"] = min(best["vmapped_step"], vmapped(False))
        best["sequential_step"] = min(best["sequential_step"], sequential(False))
    per_s = {k: tokens * S / v for k, v in best.items()}

    def separate_run(i: int) -> float:
        t0 = time.perf_counter()
        # a copy of the setup holds no compiled step: this run compiles its own, as a separate job would
        fresh = dataclasses.replace(setup_step(train_cfg, model_cfg, mesh1)).compile(
            Objective(train_cfg.objective), mesh1, proxy.micro_batches, with_reference=False)
        it = proxy_batches(i, f"run{i}")
        with jax.set_mesh(mesh1):
            s = first_state(params)
            for _ in range(proxy.steps):
                s, out = fresh(s, global_batch(next(it), mesh1), None)
            jax.block_until_ready(out)
        return time.perf_counter() - t0

    runs = [separate_run(i) for i in range(args.separate_runs)]
    op_ms = {}
    if args.profile:
        op_ms = {"vmapped": op_seconds(lambda: vmapped(False)) * 1e3 / (S * P),
                 "sequential": op_seconds(lambda: sequential(False)) * 1e3 / (S * P)}
    one_program = vmapped_compile + (proxy.steps - 1) * best["vmapped_e2e"] / S
    report = {
        "machine": f"{os.cpu_count()} CPU cores, {jax.device_count()} JAX CPU devices",
        "proxies": P, "shape": args.shape, "data": "synthetic" if args.synthetic else "demo stage 1",
        "proxy": {"layers": model_cfg.num_layers, "d": model_cfg.hidden_size, "vocab_rows": model_cfg.vocab_size,
                  "batch": proxy.batch_size, "seq_len": proxy.seq_len, "dtype": proxy.compute.dtype},
        "proxy_tokens_per_s": {k: round(v) for k, v in per_s.items()},
        "speedup_end_to_end": round(per_s["vmapped_e2e"] / per_s["sequential_e2e"], 2),
        "speedup_step_only": round(per_s["vmapped_step"] / per_s["sequential_step"], 2),
        "compile_s": {"vmapped": round(vmapped_compile, 1), "sequential": round(sequential_compile, 1)},
        "whole_runs": {"steps": proxy.steps, "one_program_s": round(one_program, 1),
                       "separate_run_s": [round(r, 1) for r in runs],
                       "speedup": round(P * min(runs) / one_program, 1) if runs else None},
        "op_ms_per_proxy_step": {k: round(v, 2) for k, v in op_ms.items()},
        "wall_ms_per_proxy_step": {k: round(1e3 * best[f"{k}_step"] / (S * P), 2) for k in ("vmapped", "sequential")},
        "no_overhead_bound": (round(1e3 * best["sequential_step"] / (S * P) / (op_ms["sequential"] / os.cpu_count()), 2)
                              if op_ms else None),
        "load_average": os.getloadavg(),
    }
    json.dump(report, sys.stdout, indent=2)
    print()


def op_seconds(fn) -> float:
    """Seconds XLA's CPU ops ran during `fn()`, summed over threads (per thread the union of its op events, so ops
    nested in loops count once; dispatch, waiting and Python are not ops)."""
    import jax

    wrappers = ("ThunkExecutor", "$", "PjitFunction", "CommonPjRt", "SlinkyThreadPool")
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        fn()
        jax.profiler.stop_trace()
        with gzip.open(next(Path(d).rglob("*.trace.json.gz"))) as f:
            events = json.load(f)["traceEvents"]
    spans: dict[tuple, list[tuple[float, float]]] = {}
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(wrappers):
            spans.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    busy = 0.0
    for intervals in spans.values():
        end = -math.inf
        for a, b in sorted(intervals):
            busy += max(0.0, b - max(a, end))
            end = max(end, b)
    return busy * 1e-6


if __name__ == "__main__":
    main()
