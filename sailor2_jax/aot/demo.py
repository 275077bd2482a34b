"""The demo's TPU stage: the demo's own pre-training step, and the generation engine's prefill and decode loop,
compiled for a v5p-8 slice by the real TPU compiler, here, with no TPU (`sailor2-jax compile --decode`, in its own
process so libtpu loads compile-only)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path


def tpu_compile_stage(out: Path, summary: dict, console) -> None:
    if importlib.util.find_spec("libtpu") is None:
        console.print("[yellow]libtpu is not installed (pip install -e '.[tpu]'): TPU compilation skipped")
        summary["tpu_compile"] = {"skipped": "libtpu not installed"}
        return
    cmd = [sys.executable, "-m", "sailor2_jax.cli", "compile", "--config", "demo_pretrain", "--topology", "v5p-8",
           "--json", "--decode", "--decode-batch", "8", "--prompt-len", "64", "--max-new-tokens", "32",
           "data.seq_len=512"]  # Splash tiles sequences of 128·k
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"TPU compilation failed:\n{done.stderr[-3000:]}")
    reports = json.loads(done.stdout)
    (out / "tpu_compile.json").write_text(json.dumps(reports, indent=1))
    report = reports["train_step"]
    if not report["attention"]["lowered"].startswith("splash"):
        raise RuntimeError(f"Splash did not lower for the TPU slice: {report['attention']}")
    hbm, flops = report["hbm"], report["flops"]
    console.print(f"[bold green]{report['topology']}: fits, {hbm['compiler_total'] / 2 ** 20:.0f} MiB of "
                  f"{hbm['compiler_limit'] / 2 ** 30:.2f} GiB per chip; attention {report['attention']['lowered']}; "
                  f"{flops['total']:.3g} FLOPs per chip and step ({flops['ratio_to_model']:.2f}× the model's)")
    decode = reports["decode"]
    console.print(f"[bold green]generation engine on the same mesh: prefill and decode fit, decode "
                  f"{decode['hbm']['compiler_total'] / 2 ** 20:.0f} MiB per chip, at most "
                  f"{decode['roofline']['tokens_per_s']:,.0f} new tokens/s by the roofline")
    summary["tpu_compile"] = {"topology": report["topology"], "fits": report["fits"],
                              "hbm_per_chip": hbm["compiler_total"], "attention": report["attention"]["lowered"],
                              "flops_per_chip": flops["total"], "decode_fits": decode["fits"],
                              "report": str(out / "tpu_compile.json")}
