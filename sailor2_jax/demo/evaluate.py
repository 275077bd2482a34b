"""The base, expanded and final (DPO, exported) models on the embedded held-out UDHR tasks (configs/eval/demo.yaml:
perplexity, multiple choice, translation; one record per language and task), through `eval` and `eval-report`."""

from __future__ import annotations

import json
import math

from sailor2_jax.demo.stage import Context, StageResult

TITLE = "evaluate the base, expanded and final models on held-out UDHR tasks in 15 languages"
MODELS = (("base", "base"), ("expanded", "expanded"), ("final", "hf_final"))  # (run name, directory under out)


def run(ctx: Context) -> StageResult:
    # Windows of 512 tokens: rolling windows still score every token once, and the tiny model's attention at 1,024
    # positions on CPU made each model's `eval` half again as long (37.9 → 25.6 s, the same metrics at 4 digits)
    runs = []
    for name, directory in MODELS:
        ctx.run_command(["eval", "--model", str(ctx.out / directory), "--tasks", "demo", "--output-dir",
                         str(ctx.out / "eval" / name), "--name", name, "--dtype", "float32", "limit=15",
                         "max_length=512"])
        runs.append(str(ctx.out / "eval" / name))
    ctx.run_command(["eval-report", *runs, "--output-dir", str(ctx.out / "eval" / "report")])
    report = json.loads((ctx.out / "eval" / "report" / "report.json").read_text())
    values = {f"{r['task']}/{r['metric']}": r["values"] for r in report["rows"]}  # metric → {run name: value}
    ppl = values["udhr_ppl/ppl"]
    return StageResult(
        {"report": str(ctx.out / "eval" / "report"), **values},
        {"every model scored on every task": all(len(v) == len(MODELS) for v in values.values()),
         "the expansion leaves perplexity unchanged": math.isclose(ppl["base"], ppl["expanded"], rel_tol=1e-4),
         "training lowered perplexity on held-out text": ppl["final"] < ppl["expanded"]})
