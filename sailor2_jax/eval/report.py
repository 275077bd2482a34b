"""Compare evaluation runs (`sailor2-jax eval` and `sailor2-jax judge` output directories): one table of every task's
metrics across runs, one PNG per metric (a bar per run), `report.json` (the table as data), and the benchmarks
Sailor2 published numbers for side by side with those numbers (`data/eval/sailor2_published.jsonl`: each row names
its source, the tasks and metric of ours it corresponds to, and how sure that correspondence is)."""

from __future__ import annotations

import json
from pathlib import Path

# lower is better for these; every other metric (accuracy, chrF++, BLEU, EM, F1) is higher-better
LOWER_IS_BETTER = ("ppl", "bpb", "dropped")
PUBLISHED = "data/eval/sailor2_published.jsonl"


def published(path: str | Path = PUBLISHED) -> list[dict]:
    """The published Sailor2 numbers (module docstring)."""
    from sailor2_jax.config import resolve_path

    file = resolve_path(str(path))
    rows = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            missing = {"benchmark", "tasks", "metric", "values", "source"} - set(row)
            if missing:
                raise ValueError(f"{file}:{number}: missing {sorted(missing)}")
            rows.append(row)
    return rows


def published_table(runs: dict[str, dict], rows: list[dict]) -> list[dict]:
    """Per published benchmark: each run's value (the mean of the metric over the benchmark's tasks, when the run
    has all of them) beside the published values."""
    out = []
    for row in rows:
        ours = {}
        for name, results in runs.items():
            values = [results["tasks"].get(t, {}).get(row["metric"]) for t in row["tasks"]]
            ours[name] = sum(values) / len(values) if values and None not in values else None
        out.append({**row, "runs": ours})
    return out


def render_published(runs: dict[str, dict], table: list[dict]) -> str:
    models = list(dict.fromkeys(m for r in table for m in r["values"]))
    header = ["benchmark", "metric", *runs, *models]
    body = [[r["benchmark"], r["metric"], *("–" if r["runs"][n] is None else f"{r['runs'][n]:.4g}" for n in runs),
             *("–" if m not in r["values"] else f"{r['values'][m]:.4g}" for m in models)] for r in table]
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(x, widths)) for x in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"- {r['benchmark']}: {r['note']}" for r in table if r.get("note")]
    sources = sorted({r["source"] for r in table})
    return "\n".join([*lines, *notes, *(f"source: {s}" for s in sources)])


def load_runs(dirs: list[str | Path]) -> dict[str, dict]:
    """{run name (the directory's name, made unique): its results.json}, in the order given."""
    runs: dict[str, dict] = {}
    for d in map(Path, dirs):
        file = d / "results.json"
        if not file.is_file():
            raise FileNotFoundError(f"{d}: no results.json (is it a `sailor2-jax eval` output directory?)")
        try:
            results = json.loads(file.read_text())
            results["tasks"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{file}: not an eval results file ({e})") from None
        name, k = d.resolve().name, 2
        while name in runs:
            name, k = f"{d.resolve().name}#{k}", k + 1
        runs[name] = results
    return runs


def table(runs: dict[str, dict], languages: bool = False) -> list[tuple[str, str, list[float | None]]]:
    """(task, metric, a value per run) for every metric of any run; per-language metrics only if asked."""
    keys: dict[tuple[str, str], None] = {}
    for results in runs.values():
        for task, metrics in results["tasks"].items():
            for metric in metrics:
                if languages or "/" not in metric:
                    keys[task, metric] = None
    return [(task, metric, [r["tasks"].get(task, {}).get(metric) for r in runs.values()]) for task, metric in keys]


def plot(runs: dict[str, dict], rows, out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for task, metric, values in rows:
        if "/" in metric:
            continue
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(runs), 3.2))
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(list(runs), heights, color="#4c72b0")
        for bar, v in zip(bars, values):
            ax.annotate("–" if v is None else f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        better = "lower" if metric.split("/")[0] in LOWER_IS_BETTER else "higher"
        ax.set_title(f"{task}: {metric} ({better} is better)", fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        fig.tight_layout()
        path = out_dir / f"{task}.{metric}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


def render(runs: dict[str, dict], rows) -> str:
    """The table as aligned text (what the command prints)."""
    header = ["task", "metric", *runs]
    body = [[task, metric, *("–" if v is None else f"{v:.4g}" for v in values)] for task, metric, values in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
