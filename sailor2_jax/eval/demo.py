"""The demo's evaluation stage: the base, the expanded and the final (DPO, exported) model on the embedded UDHR tasks
(configs/eval/demo.yaml, one record per language and task), through the `eval` and `eval-report` commands."""

from __future__ import annotations

import json
from pathlib import Path

MODELS = (("base", "base"), ("expanded", "expanded"), ("final", "hf_final"))  # (run name, directory under out)


def eval_stage(out: Path, summary: dict, console) -> None:
    from sailor2_jax.cli import run_command

    runs = []
    for name, directory in MODELS:
        run_command(["eval", "--model", str(out / directory), "--tasks", "demo", "--output-dir",
                     str(out / "eval" / name), "--name", name, "--dtype", "float32", "limit=15", "max_length=1024"],
                    console)
        runs.append(str(out / "eval" / name))
    run_command(["eval-report", *runs, "--output-dir", str(out / "eval" / "report")], console)
    report = json.loads((out / "eval" / "report" / "report.json").read_text())
    summary["eval"] = {"report": str(out / "eval" / "report"),
                       **{f"{r['task']}/{r['metric']}": r["values"] for r in report["rows"]}}
