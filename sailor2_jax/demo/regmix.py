"""A RegMix search of the demo's stage-1 mixture (configs/regmix/demo.yaml): 64 proxies trained as one vmapped
program, LightGBM fitted to their losses, 100,000 simulated mixtures; stage 1 then trains on the rates it found."""

from __future__ import annotations

import json
import math
import shutil

from sailor2_jax.demo.stage import Context, StageResult

TITLE = "RegMix: 64 proxies trained as one program, LightGBM, the stage-1 mixture searched"


def run(ctx: Context) -> StageResult:
    from sailor2_jax.regmix.config import load_regmix_config
    from sailor2_jax.regmix.run import run_regmix

    where = ctx.out / "regmix"
    shutil.rmtree(where, ignore_errors=True)  # a rerun of the demo searches again
    result = run_regmix(load_regmix_config("demo"), where, progress=False)
    fit = json.loads((where / "fit.json").read_text())
    rates = json.loads((where / "rates.json").read_text())
    spearman = fit["targets"]["objective"]["spearman"]
    return StageResult(
        {"rates": result["rates"], "prior": result["prior"], "predicted": result["predicted"],
         "spearman_objective": spearman, "rates_file": str(where / "rates.json"), "plot": str(where / "regmix.png")},
        {"the search wrote rates over the stage-1 languages": set(rates) == set(result["prior"])
         and math.isclose(sum(rates.values()), 1.0, rel_tol=1e-6) and min(rates.values()) >= 0,
         "the regressor ranks held-out proxies (Spearman > 0)": spearman > 0})
