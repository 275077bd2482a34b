"""The demo's pre-training step and the generation engine's prefill and decode loop compiled for a v5p-8 slice by the
real TPU compiler, here, with no TPU (`sailor2-jax compile --decode`, in its own process so libtpu loads
compile-only)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from sailor2_jax.demo.stage import Context, StageResult
from sailor2_jax.files import write_json

TITLE = "the pre-training step and the generation engine compiled for a v5p-8 slice by the TPU compiler, here"


def run(ctx: Context) -> StageResult:
    if importlib.util.find_spec("libtpu") is None:
        ctx.console.print("[yellow]libtpu is not installed (pip install -e '.[tpu]'): TPU compilation skipped")
        return StageResult({"skipped": "libtpu not installed"}, {})
    cmd = [sys.executable, "-m", "sailor2_jax.cli", "compile", "--config", "demo_pretrain", "--topology", "v5p-8",
           "--json", "--decode", "--decode-batch", "8", "--prompt-len", "64", "--max-new-tokens", "32",
           "data.seq_len=512"]  # Splash tiles sequences of 128·k
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"TPU compilation failed:\n{done.stderr[-3000:]}")
    reports = json.loads(done.stdout)
    write_json(ctx.out / "tpu_compile.json", reports)
    report, decode = reports["train_step"], reports["decode"]
    hbm, flops = report["hbm"], report["flops"]
    ctx.console.print(f"[bold green]{report['topology']}: fits, {hbm['compiler_total'] / 2 ** 20:.0f} MiB of "
                      f"{hbm['compiler_limit'] / 2 ** 30:.2f} GiB per chip; attention {report['attention']['lowered']};"
                      f" {flops['total']:.3g} FLOPs per chip and step ({flops['ratio_to_model']:.2f}× the model's)")
    ctx.console.print(f"[bold green]generation engine on the same mesh: prefill and decode fit, decode "
                      f"{decode['hbm']['compiler_total'] / 2 ** 20:.0f} MiB per chip, at most "
                      f"{decode['roofline']['tokens_per_s']:,.0f} new tokens/s by the roofline")
    return StageResult(
        {"topology": report["topology"], "fits": report["fits"], "hbm_per_chip": hbm["compiler_total"],
         "attention": report["attention"]["lowered"], "flops_per_chip": flops["total"], "decode_fits": decode["fits"],
         "report": str(ctx.out / "tpu_compile.json")},
        {"the step fits a v5p chip": report["fits"], "Splash lowered as a TPU kernel":
         report["attention"]["lowered"].startswith("splash"), "the decode engine fits": decode["fits"],
         "compiler FLOPs at least the model's": flops["ratio_to_model"] >= 1.0})
