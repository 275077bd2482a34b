"""Training-step benchmark: our jitted step (the one the trainer runs) against transformers eager and torch.compile.

  python bench/train_step.py                       # on one H100/H200: Sailor2-1B shape (seq 4096) and an 8B slice
  python bench/train_step.py --compile-time        # AOT compile time, 64-layer 20B config vs 8 layers (any backend)
  python bench/train_step.py --optimizer-memory    # 20B (LlamaPro 48 -> 64): train-state bytes, all vs new layers
  python bench/train_step.py --compile-time --topology v5p-128   # either, for a TPU slice (libtpu, no TPU needed)
  python bench/train_step.py --case tiny --seq 256 --batch 2 --steps 3   # smoke test on CPU
  python bench/train_step.py --context-attention --seq 8192 --context 4  # the sequence split over `context` (8
                                                   # fake CPU devices): K/V all-gathered vs passed round a ring

Each configuration runs in its own process (JAX preallocates most of the GPU; torch must not share it). The
PyTorch peer is `hf_torch_baseline.py` (from the shared bench; pass --baseline PATH, or copy it next to this file
when ../shared is not on the machine). MFU uses the PaLM convention: 6 x matmul parameters (LM head included) +
12·L·N·H·T attention FLOPs per token, over --peak FLOP/s (989e12: H100/H200 SXM dense bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# case -> (model config, layers (None: all), batch, micro-batches)
CASES = {
    "sailor2-1b": ("sailor2-1b", None, 8, 1),
    "sailor2-8b-slice": ("sailor2-8b", 4, 2, 1),
    "tiny": ("tiny", None, 2, 1),
}


def _baseline_path(arg: str | None) -> Path | None:
    for p in ([Path(arg)] if arg else [Path(__file__).with_name("hf_torch_baseline.py"),
                                       ROOT.parent / "shared" / "bench" / "hf_torch_baseline.py"]):
        if p.is_file():
            return p
    return None


# --- one JAX configuration (runs in a child process) --------------------------------------------------------------

def _devices(topology: str | None) -> list:
    """This machine's devices, or a TPU slice's compile-only ones (`sailor2_jax.aot`)."""
    import jax

    if topology is None:
        return jax.devices()
    from sailor2_jax.aot.topology import parse_slice

    return parse_slice(topology).devices()


def _setup(model_name: str, layers: int | None, batch: int, seq: int, micro: int, remat: str, attention: str,
           packed: bool, abstract: bool, optimizer_cfg: dict | None = None, devices: list | None = None,
           mesh_cfg: dict | None = None, context_attention: str = "all_gather", model_overrides: tuple = ()):
    import jax
    import numpy as np
    from flax import nnx

    from sailor2_jax.config import ComputeConfig, MeshConfig, load_model_config
    from sailor2_jax.model.init import create_model
    from sailor2_jax.sharding import global_batch, make_mesh
    from sailor2_jax.model.run_dir import abstract_target
    from sailor2_jax.train.config import TrainConfig
    from sailor2_jax.train.objectives import Objective
    from sailor2_jax.train.step import init_state, setup_step

    model_cfg = load_model_config(model_name, ([f"num_layers={layers}"] if layers else []) + list(model_overrides))
    cfg = TrainConfig(model=model_cfg, compute=ComputeConfig(remat=remat, attention=attention,
                                                             context_attention=context_attention),
                      mesh=MeshConfig(**(mesh_cfg or {})),
                      data={"batch_size": batch, "seq_len": seq, "micro_batches": micro},
                      optimizer=optimizer_cfg or {}, steps=1000)
    mesh = make_mesh(cfg.mesh, devices)
    setup = setup_step(cfg, model_cfg, mesh)
    step = setup.compile(Objective(cfg.objective), mesh, micro, with_reference=False)
    keys = ("tokens", "targets", "loss_mask") + (("segment_ids", "positions") if packed else ())
    if abstract:
        state = abstract_target(setup.shardings, setup.abstract_state())
        batch_arrays = {k: jax.ShapeDtypeStruct((batch, seq), np.int32) for k in keys}
    else:
        params = nnx.to_pure_dict(nnx.state(create_model(model_cfg, mesh, seed=0, compute=cfg.compute)))
        state = jax.jit(lambda p: init_state(p, setup.tx, 0), out_shardings=setup.shardings)(params)
        rng = np.random.default_rng(1)
        tokens = rng.integers(0, model_cfg.vocab_size, (batch, seq + 1)).astype(np.int32)
        host = {"tokens": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": np.ones((batch, seq), np.int32),
                "segment_ids": np.ones((batch, seq), np.int32),
                "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy()}
        batch_arrays = global_batch({k: host[k] for k in keys}, mesh)
    return mesh, model_cfg, step, state, batch_arrays


def run_jax(args: argparse.Namespace) -> dict:
    import jax

    from sailor2_jax.train.metrics import flops_per_token

    model_name, layers, batch, micro = CASES[args.case]
    batch, layers = args.batch or batch, args.layers or layers
    mesh, model_cfg, step, state, batch_arrays = _setup(model_name, layers, batch, args.seq, args.micro_batches or
                                                        micro, args.remat, args.attention, args.packed, False)
    with jax.set_mesh(mesh):
        t0 = time.perf_counter()
        for _ in range(2):
            state, metrics = step(state, batch_arrays, None)
            float(metrics["loss"])
        warmup = time.perf_counter() - t0
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            state, metrics = step(state, batch_arrays, None)
            float(metrics["loss"])
            times.append(time.perf_counter() - t)
    dt = statistics.median(times)
    tps = batch * args.seq / dt
    stats = jax.devices()[0].memory_stats() or {}
    return {"impl": "sailor2_jax", "case": args.case, "layers": model_cfg.num_layers, "batch": batch,
            "seq": args.seq, "remat": args.remat, "attention": args.attention, "packed": args.packed,
            "step_s_median": dt, "tokens_per_s": tps,
            "mfu": tps * flops_per_token(model_cfg, args.seq) / args.peak / jax.device_count(),
            "warmup_s": warmup, "peak_mem_gb": stats.get("peak_bytes_in_use", 0) / 1e9 or None,
            "device": jax.devices()[0].device_kind, "devices": jax.device_count(), "jax": jax.__version__}


def context_attention(args: argparse.Namespace) -> dict:
    """The whole train step with each row split over `context` of the fake CPU devices (fsdp takes the rest), K/V
    all-gathered vs passed round a ring: step time (median, the two interleaved so drifting load hits both alike)
    and the compiled step's temporaries per device (where the all-gather's saved [T/n, T] scores show). A 256-row
    vocabulary, so that the LM head and its optimiser state do not hide the attention."""
    import jax

    case = args.case or "tiny"
    model_name, layers, batch, _ = CASES[case]
    batch, layers = args.batch or batch, args.layers or layers
    mesh_cfg = {"data": 1, "fsdp": -1, "context": args.context, "tensor": 1}
    runs = {}
    for strategy in ("all_gather", "ring"):
        mesh, _, step, state, batch_arrays = _setup(model_name, layers, batch, args.seq, 1, args.remat, "xla",
                                                    True, False, mesh_cfg=mesh_cfg, context_attention=strategy,
                                                    model_overrides=("vocab_size=256",))
        with jax.set_mesh(mesh):
            memory = step.lower(state, batch_arrays, None).compile().memory_analysis()
            state, metrics = step(state, batch_arrays, None)
            float(metrics["loss"])
        runs[strategy] = {"mesh": mesh, "step": step, "state": state, "batch": batch_arrays, "times": [],
                          "temp_gb": memory.temp_size_in_bytes / 1e9}
    for _ in range(args.steps):
        for run in runs.values():
            with jax.set_mesh(run["mesh"]):
                t = time.perf_counter()
                run["state"], metrics = run["step"](run["state"], run["batch"], None)
                float(metrics["loss"])
                run["times"].append(time.perf_counter() - t)
    out = {"case": case, "layers": layers, "batch": batch, "seq": args.seq, "context": args.context,
           "devices": jax.device_count(), "remat": args.remat, "load_average": os.getloadavg()}
    for strategy, run in runs.items():
        out[strategy] = {"step_s_median": statistics.median(run["times"]), "temp_gb": run["temp_gb"]}
    out["ring_vs_all_gather_time"] = out["ring"]["step_s_median"] / out["all_gather"]["step_s_median"]
    return out


def compile_time(args: argparse.Namespace) -> dict:
    """AOT lower + compile of the full train step with abstract inputs: no parameter memory is allocated."""
    import jax

    devices = _devices(args.topology)
    batch = len(devices)  # one row per device (FSDP over all of them)
    out = {"device": devices[0].device_kind, "devices": len(devices), "jax": jax.__version__,
           "model": "sailor2-20b", "batch": batch, "seq": args.seq}
    times: dict[int, list[tuple[float, float]]] = {8: [], 64: []}
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        for layers in (8, 64):
            mesh, _, step, state, batch_arrays = _setup("sailor2-20b", layers, batch, args.seq, 1, args.remat,
                                                        args.attention, args.packed, True, devices=devices)
            with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):  # compile-only devices hold no arrays
                t0 = time.perf_counter()
                lowered = step.lower(state, batch_arrays, None)
                t1 = time.perf_counter()
                lowered.compile()
                t2 = time.perf_counter()
            times[layers].append((t1 - t0, t2 - t1))
    for layers, runs in times.items():
        lower, comp = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        out[f"L{layers}"] = {"lower_s": lower, "compile_s": comp, "total_s": lower + comp,
                             "runs_total_s": [sum(r) for r in runs]}
    out["ratio_64_vs_8"] = out["L64"]["total_s"] / out["L8"]["total_s"]
    return out


def optimizer_memory(args: argparse.Namespace) -> dict:
    """The 20B train state per device under FSDP over all devices, training every parameter vs only the 16 layers
    LlamaPro inserts (48 -> 64): what XLA's compiled step takes as arguments (state + batch), from AOT compilation
    on abstract inputs (no memory is allocated)."""
    import jax

    from sailor2_jax.model.expand import expansion_plan

    _, is_new = expansion_plan(48, 64)
    devices = _devices(args.topology)
    batch = len(devices)
    out = {"device": devices[0].device_kind, "devices": len(devices), "jax": jax.__version__,
           "model": "sailor2-20b", "batch": batch, "seq": args.seq}
    for name, opt in (("all", {}), ("new_layers", {"trainable": "new_layers", "new_layers": is_new})):
        mesh, _, step, state, batch_arrays = _setup("sailor2-20b", None, batch, args.seq, 1, args.remat,
                                                    args.attention, args.packed, True, opt, devices)
        moments = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.opt_state))
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            memory = step.lower(state, batch_arrays, None).compile().memory_analysis()
        # (temporaries are left out: on CPU they are dominated by the XLA attention's saved score matrices)
        out[name] = {"optimizer_state_gb": moments / 1e9,
                     "arguments_per_device_gb": memory.argument_size_in_bytes / 1e9}
    out["state_saved_gb"] = out["all"]["optimizer_state_gb"] - out["new_layers"]["optimizer_state_gb"]
    return out


# --- the orchestrator ---------------------------------------------------------------------------------------------

def _child(argv: list[str], json_path: Path) -> dict | None:
    done = subprocess.run([sys.executable, *argv, "--json", str(json_path)], cwd=ROOT, text=True, check=False,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        print(f"FAILED: {' '.join(argv)}\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(json_path.read_text())


def orchestrate(args: argparse.Namespace) -> None:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    baseline = None if args.no_baseline else _baseline_path(args.baseline)
    if baseline is None and not args.no_baseline:
        print("hf_torch_baseline.py not found: pass --baseline PATH (or --no-baseline)", file=sys.stderr)
    results = {}
    for case in args.cases:
        model_name, layers, batch, _ = CASES[case]
        batch, layers = args.batch or batch, args.layers or layers
        rows = {"jax": _child([__file__, "--worker", "--case", case, "--seq", str(args.seq), "--steps",
                               str(args.steps), "--remat", args.remat, "--attention", args.attention, "--peak",
                               str(args.peak), "--batch", str(batch)] + (["--layers", str(layers)] if layers else [])
                              + (["--packed"] if args.packed else []), out_dir / f"{case}-jax.json")}
        if baseline is not None:
            for mode in ("eager", "compile"):
                cmd = [str(baseline), "--shape", model_name, "--batch", str(batch), "--seq",
                       str(args.seq), "--steps", str(args.steps), "--peak", str(args.peak)]
                cmd += (["--layers", str(layers)] if layers else []) + (["--compile"] if mode == "compile" else [])
                rows[mode] = _child(cmd, out_dir / f"{case}-torch-{mode}.json")
        results[case] = rows
        jax_row = rows["jax"]
        for mode in ("eager", "compile"):
            if jax_row and rows.get(mode):
                jax_row[f"speedup_vs_torch_{mode}"] = jax_row["tokens_per_s"] / rows[mode]["tokens_per_s"]
        print(json.dumps({case: {k: (v or {}).get("tokens_per_s") for k, v in rows.items()}}))
    (out_dir / "summary.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out_dir / 'summary.json'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=sorted(CASES), help="one configuration (with --worker)")
    p.add_argument("--cases", nargs="+", default=["sailor2-1b", "sailor2-8b-slice"], choices=sorted(CASES))
    p.add_argument("--layers", type=int, help="override the layer count of the case")
    p.add_argument("--batch", type=int, help="override the batch of the case")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--micro-batches", type=int)
    p.add_argument("--remat", default="dots_saveable")
    p.add_argument("--attention", default="auto", help="xla | cudnn | auto")
    p.add_argument("--packed", action="store_true", help="feed segment ids (the packed, segment-aware path)")
    p.add_argument("--peak", type=float, default=989e12, help="dense bf16 FLOP/s of one device")
    p.add_argument("--baseline", help="path to hf_torch_baseline.py")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--compile-time", action="store_true", help="AOT compile time: 20B config, 64 vs 8 layers")
    p.add_argument("--repeats", type=int, default=3, help="--compile-time: measurements per layer count (median)")
    p.add_argument("--optimizer-memory", action="store_true",
                   help="20B train state per device: trainable all vs the 16 layers LlamaPro adds")
    p.add_argument("--topology", help="--compile-time/--optimizer-memory: compile for this TPU slice (e.g. v5p-128; "
                                      "needs libtpu) instead of this machine's devices")
    p.add_argument("--context-attention", action="store_true",
                   help="the train step with the sequence split over --context fake CPU devices: all_gather vs ring")
    p.add_argument("--context", type=int, default=4, help="--context-attention: the context axis size")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", help="write this run's results here")
    p.add_argument("--out", default="runs/bench", help="orchestrator: where the per-run JSON files go")
    args = p.parse_args()
    if args.context_attention:
        os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # before jax is imported
        res = context_attention(args)
    elif args.compile_time:
        res = compile_time(args)
    elif args.optimizer_memory:
        res = optimizer_memory(args)
    elif args.worker:
        res = run_jax(args)
    else:
        if args.case:
            args.cases = [args.case]
        orchestrate(args)
        return
    print(json.dumps(res), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
