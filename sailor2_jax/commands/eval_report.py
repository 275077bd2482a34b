"""`sailor2-jax eval-report`: compare `sailor2-jax eval` runs in one table, with one PNG per metric."""

from __future__ import annotations

import argparse

NAME = "eval-report"
HELP = "compare eval output directories (e.g. base, expanded, stage 1, stage 2, SFT, DPO): a table and a PNG per metric"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="DIR", help="eval output directories (each with results.json); "
                   "columns are named after the directories")
    p.add_argument("--output-dir", help="write report.json, report.txt and <task>.<metric>.png here")
    p.add_argument("--languages", action="store_true", help="also the per-language metrics (metric/<lang>)")
    p.add_argument("--published", default="data/eval/sailor2_published.jsonl", help="published Sailor2 numbers to "
                   "compare with (benchmark, our tasks and metric, values, source); 'none' to leave them out")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from sailor2_jax.eval.report import load_runs, plot, published, published_table, render, render_published, table
    from sailor2_jax.files import write_atomic

    runs = load_runs(args.runs)
    rows = table(runs, args.languages)
    text = render(runs, rows)
    compared = [] if args.published == "none" else published_table(runs, published(args.published))
    if compared:
        text += "\n\nSide by side with the published Sailor2 numbers\n" + render_published(runs, compared)
    print(text)
    if args.output_dir:
        out = Path(args.output_dir)
        write_atomic(out / "report.txt", text + "\n")
        write_atomic(out / "report.json", json.dumps(
            {"runs": {name: {"model": r.get("model"), "time": r.get("time")} for name, r in runs.items()},
             "rows": [{"task": t, "metric": m, "values": dict(zip(runs, v))} for t, m, v in rows],
             "published": compared}, indent=2, ensure_ascii=False) + "\n")
        files = plot(runs, rows, out)
        print(f"wrote {out / 'report.txt'}, {out / 'report.json'} and {len(files)} charts")
    return 0
