"""Does JAX's persistent compilation cache work for our multi-device CPU programs? (Why tests and the demo go without.)

  python bench/compilation_cache.py              # 8 fake CPU devices, the tiny demo pre-training config
  python bench/compilation_cache.py --devices 1

Runs the same short `sailor2-jax train` three times in fresh processes: once without the cache, then twice sharing
one fresh cache directory (the first writes it, the second loads every program from it). Prints each run's exit code
and seconds. With JAX 0.10.2 on CPU and 8 devices, the run that loads from the cache hangs in its first all-reduce
until XLA's 40 s rendezvous timeout aborts it (exit code -6); the day this prints three zeros on the locked JAX, the
cache can come back to tests/conftest.py and `sailor2-jax demo`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--steps", "12", "data.source=synthetic", "model.vocab_size=256", "data.seq_len=64", "data.batch_size=8",
        "checkpoint.every=100", "log.eval_every=0", "log.progress=false", "log.tensorboard=false"]


def train(out: Path, devices: int, cache: Path | None, timeout: float) -> tuple[int, float, str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if cache is not None:
        env |= {"JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "sailor2_jax.cli", "train", "--config", "demo_pretrain",
                               "--output-dir", str(out), *ARGS], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        code, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        code, err = -9, "timed out"
    last = next((line for line in reversed(err.splitlines()) if "Termination timeout" in line), "")
    return code, time.perf_counter() - start, last[:200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("no cache", None), ("cache, cold (writes it)", Path(tmp) / "cache"),
                ("cache, warm (loads every program)", Path(tmp) / "cache")]
        for i, (label, cache) in enumerate(runs):
            code, seconds, hang = train(Path(tmp) / f"run{i}", args.devices, cache, args.timeout)
            print(f"{label:36s} exit {code:4d}  {seconds:6.1f} s  {hang}")


if __name__ == "__main__":
    main()
