"""The demo's TPU stage: the demo's own pre-training step compiled for a v5p-8 slice by the real TPU compiler, here,
with no TPU (`sailor2-jax compile`, in its own process so libtpu loads compile-only)."""

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
           "--json", "data.seq_len=512"]  # Splash tiles sequences of 128·k
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"TPU compilation failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    (out / "tpu_compile.json").write_text(json.dumps(report, indent=1))
    if not report["attention"]["lowered"].startswith("splash"):
        raise RuntimeError(f"Splash did not lower for the TPU slice: {report['attention']}")
    hbm, flops = report["hbm"], report["flops"]
    console.print(f"[bold green]{report['topology']}: fits, {hbm['compiler_total'] / 2 ** 20:.0f} MiB of "
                  f"{hbm['compiler_limit'] / 2 ** 30:.2f} GiB per chip; attention {report['attention']['lowered']}; "
                  f"{flops['total']:.3g} FLOPs per chip and step ({flops['ratio_to_model']:.2f}× the model's)")
    summary["tpu_compile"] = {"topology": report["topology"], "fits": report["fits"],
                              "hbm_per_chip": hbm["compiler_total"], "attention": report["attention"]["lowered"],
                              "flops_per_chip": flops["total"], "report": str(out / "tpu_compile.json")}
