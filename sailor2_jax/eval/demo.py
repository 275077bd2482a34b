"""The demo's evaluation stage: the base, the expanded and the final (DPO, exported) model on the embedded UDHR tasks
(configs/eval/demo.yaml, one record per language and task), through the `eval` and `eval-report` commands."""

from __future__ import annotations

import json
from pathlib import Path

MODELS = (("base", "base"), ("expanded", "expanded"), ("final", "hf_final"))  # (run name, directory under out)


def eval_stage(out: Path, summary: dict, console) -> None:
    from sailor2_jax.cli import main

    runs = []
    for name, directory in MODELS:
        argv = ["eval", "--model", str(out / directory), "--tasks", "demo", "--output-dir", str(out / "eval" / name),
                "--name", name, "--dtype", "float32", "limit=15", "max_length=1024"]
        console.print(f"sailor2-jax {' '.join(argv)}")
        if main(argv) != 0:
            raise RuntimeError(f"the eval command failed on {out / directory}")
        runs.append(str(out / "eval" / name))
    argv = ["eval-report", *runs, "--output-dir", str(out / "eval" / "report")]
    console.print(f"sailor2-jax {' '.join(argv)}")
    if main(argv) != 0:
        raise RuntimeError("the eval-report command failed")
    report = json.loads((out / "eval" / "report" / "report.json").read_text())
    summary["eval"] = {"report": str(out / "eval" / "report"),
                       **{f"{r['task']}/{r['metric']}": r["values"] for r in report["rows"]}}
