"""HF import/export: time and peak host memory for a synthetic 1-2 GB Qwen2 checkpoint.

Each phase runs in its own process so that its peak RSS is its own:
  make    write a synthetic fp32 checkpoint with the streaming writer (never holding it whole)
  import  import_hf onto all local devices (8 fake CPU devices by default)
  export  import, then export_hf into 1 GB shards
Peak host memory is reported against the checkpoint's size: "near one copy of the model" means a ratio close to 1
(on the CPU backend the imported model itself lives in host memory, so one copy is the floor).

  .venv/bin/python bench/hf_io.py [--layers 8] [--hidden 1024] [--workdir /tmp/hf_io_bench]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def config(args) -> dict:
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936,
            "hidden_size": args.hidden, "intermediate_size": 4 * args.hidden, "num_hidden_layers": args.layers,
            "num_attention_heads": args.hidden // 64, "num_key_value_heads": 2, "tie_word_embeddings": False,
            "rope_theta": 1e6, "rms_norm_eps": 1e-6, "max_position_embeddings": 4096, "hidden_act": "silu"}


def phase_make(args) -> dict:
    import numpy as np

    from sailor2_jax.config import ModelConfig
    from sailor2_jax.model.hf import hf_keys
    from sailor2_jax.model.safetensors_io import TensorSpec, atomic_dir, write_shards

    cfg = ModelConfig.from_hf(config(args))
    D, F, N, K, H, V = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                        cfg.vocab_size)
    shapes = {"embed_tokens.weight": (V, D), "lm_head.weight": (V, D), "norm.weight": (D,),
              "q_proj.weight": (N * H, D), "q_proj.bias": (N * H,), "k_proj.weight": (K * H, D),
              "k_proj.bias": (K * H,), "v_proj.weight": (K * H, D), "v_proj.bias": (K * H,),
              "o_proj.weight": (D, N * H), "gate_proj.weight": (F, D), "up_proj.weight": (F, D),
              "down_proj.weight": (D, F), "input_layernorm.weight": (D,), "post_attention_layernorm.weight": (D,)}
    rng = np.random.default_rng(0)
    specs = []
    for key in hf_keys(cfg):
        shape = next(s for suffix, s in shapes.items() if key.endswith(suffix))
        specs.append(TensorSpec(key, np.dtype(np.float32), shape,
                                lambda shape=shape: rng.standard_normal(shape, dtype=np.float32) * 0.02))
    with atomic_dir(args.workdir / "ckpt", overwrite=True) as tmp:
        (tmp / "config.json").write_text(json.dumps(config(args)))
        write_shards(tmp, specs, 1 << 30)
    return {"checkpoint_mb": sum(s.nbytes for s in specs) / 2**20}


def phase_import(args, export: bool = False) -> dict:
    import jax

    from sailor2_jax.config import MeshConfig
    from sailor2_jax.model.hf import export_hf, import_hf
    from sailor2_jax.sharding import make_mesh

    mesh = make_mesh(MeshConfig())
    base = rss_mb()
    t0 = time.perf_counter()
    model = import_hf(args.workdir / "ckpt", mesh)
    jax.block_until_ready(jax.tree.leaves(__import__("flax").nnx.state(model)))
    result = {"import_s": time.perf_counter() - t0, "rss_before_mb": base, "rss_after_import_mb": rss_mb(),
              "peak_import_mb": peak_mb()}
    if export:
        t0 = time.perf_counter()
        export_hf(model, args.workdir / "export", max_shard_size="1GB", overwrite=True)
        result.update(export_s=time.perf_counter() - t0, peak_export_mb=peak_mb())
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/hf_io_bench"))
    p.add_argument("--phase", choices=["make", "import", "export"])
    args = p.parse_args()
    if args.phase:
        out = {"make": phase_make, "import": phase_import,
               "export": lambda a: phase_import(a, export=True)}[args.phase](args)
        print(json.dumps(out))
        return
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "--xla_force_host_platform_device_count=8"),
           "JAX_PLATFORMS": "cpu"}
    results = {}
    for phase in ("make", "import", "export"):
        cmd = [sys.executable, __file__, "--phase", phase, "--layers", str(args.layers), "--hidden",
               str(args.hidden), "--workdir", str(args.workdir)]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        results[phase] = {**json.loads(run.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - t0}
    size = results["make"]["checkpoint_mb"]
    imp, exp = results["import"], results["export"]
    summary = {
        "checkpoint_mb": round(size), "import_s": round(imp["import_s"], 2), "export_s": round(exp["export_s"], 2),
        "import_MB_per_s": round(size / imp["import_s"]), "export_MB_per_s": round(size / exp["export_s"]),
        "import_peak_over_baseline_mb": round(imp["peak_import_mb"] - imp["rss_before_mb"]),
        "import_peak_ratio_to_checkpoint": round((imp["peak_import_mb"] - imp["rss_before_mb"]) / size, 2),
        "export_peak_over_baseline_mb": round(exp["peak_export_mb"] - exp["rss_before_mb"]),
        "export_peak_ratio_to_checkpoint": round((exp["peak_export_mb"] - exp["rss_before_mb"]) / size, 2),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
