"""The demo's RegMix stage: search the demo's stage-1 mixture (configs/regmix/demo.yaml) before stage 1 trains on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rich.console import Console


def regmix_stage(out: Path, summary: dict) -> Path:
    """Run the demo search afresh in OUT/regmix; return the rates file the demo's stage 1 then reads."""
    from sailor2_jax.regmix.config import load_regmix_config
    from sailor2_jax.regmix.run import run_regmix

    Console().rule("[bold]4b. RegMix: 64 proxies trained as one program, LightGBM, the stage-1 mixture searched")
    where = out / "regmix"
    shutil.rmtree(where, ignore_errors=True)  # a rerun of the demo searches again
    result = run_regmix(load_regmix_config("demo"), where, progress=False)
    fit = json.loads((where / "fit.json").read_text())
    summary["regmix"] = {"rates": result["rates"], "prior": result["prior"], "predicted": result["predicted"],
                         "spearman_objective": fit["targets"]["objective"]["spearman"],
                         "rates_file": str(where / "rates.json"), "plot": str(where / "regmix.png")}
    return where / "rates.json"
