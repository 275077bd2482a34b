"""`summary.json`, its PNG chart, and the final accounting check (kept + rejected = read)."""

from __future__ import annotations

import json
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolder
from datatrove.pipeline.base import PipelineStep

from sailor2_jax.data.stages.accounting import AccountingError, count_records, merge_stats, step_totals

# The steps of the cleaning pipeline, in order; summary.json and the chart list them this way (translation and quality
# selection count their own steps with the same counters).
STEPS = ("read", "normalise", "url_dedup", "exact_dedup", "heuristics", "lid", "minhash", "substring_dedup",
         "frequent_lines", "second_pass", "kenlm")


def write_summary(out_dir: Path, stats: dict[str, dict[str, dict]]) -> dict:
    """Count the outputs, check them against what was read, write summary.json and summary.png."""
    totals = step_totals(stats)
    read = totals.get("read", {}).get("docs_in", 0)
    kept = count_records(out_dir / "kept")
    rejected = count_records(out_dir / "rejected")
    summary = {
        "documents": {"read": read, "kept": kept, "rejected": rejected, "balanced": kept + rejected == read},
        "totals": totals,
        "steps": stats,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    plot_summary(summary, out_dir / "summary.png")
    return summary


def check_balance(summary: dict, where: Path) -> str:
    """The closing line of a run; raises AccountingError when kept + rejected ≠ read."""
    d = summary["documents"]
    if not d["balanced"]:
        raise AccountingError(f"kept {d['kept']} + rejected {d['rejected']} = {d['kept'] + d['rejected']}"
                              f" ≠ read {d['read']}: see {where}")
    return f"accounting holds: kept {d['kept']} + rejected {d['rejected']} = read {d['read']}"


class Summarise(PipelineStep):
    """Last stage (one task): summary.json, summary.png and the balance check, so Slurm and Ray runs get them too.
    Needs the output directory on a local or mounted file system."""

    name = "summary and accounting check"
    type = "📊 - STATS"

    def __init__(self, out_dir: DataFolder):
        super().__init__()
        self.out_dir = out_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = Path(self.out_dir.path)
        check_balance(write_summary(path, merge_stats(self.out_dir, STEPS)), path / "summary.json")
        return
        yield  # a PipelineStep's run is a generator; this stage yields no documents


def plot_summary(summary: dict, path: Path) -> None:
    """Left: documents and bytes left after each step, as a share of what was read. Right: documents left per
    language and step (colour: share of the language's documents; number: count)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = [s for s in STEPS if s in summary["steps"]]
    tot = summary["totals"]
    read_docs = max(tot["read"]["docs_in"], 1)
    read_bytes = max(tot["read"]["bytes_in"], 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [1, 1.4]})
    x = np.arange(len(steps))
    left.bar(x - 0.2, [100 * tot[s]["docs_out"] / read_docs for s in steps], 0.4, label="documents")
    left.bar(x + 0.2, [100 * tot[s]["bytes_out"] / read_bytes for s in steps], 0.4, label="bytes")
    for i, s in enumerate(steps):
        left.text(i - 0.2, 100 * tot[s]["docs_out"] / read_docs + 1, f"{tot[s]['docs_out']:,}", ha="center",
                  fontsize=7, rotation=90, va="bottom")
    left.set_xticks(x, steps, rotation=45, ha="right")
    left.set_ylabel("% of what was read")
    left.set_ylim(0, 118)
    left.legend(loc="upper right")
    left.set_title("left after each step")

    langs = sorted({lang for s in steps for lang in summary["steps"][s]})
    counts = np.array([[summary["steps"][s].get(lang, {}).get("docs_out", 0) for s in steps] for lang in langs])
    first = np.array([max(summary["steps"]["read"].get(lang, {}).get("docs_in", 0), 1) for lang in langs])
    right.imshow(counts / first[:, None], cmap="Greens", vmin=0, vmax=1, aspect="auto")
    for (r, c), n in np.ndenumerate(counts):
        right.text(c, r, f"{n:,}", ha="center", va="center", fontsize=7)
    right.set_xticks(range(len(steps)), steps, rotation=45, ha="right")
    right.set_yticks(range(len(langs)), langs)
    right.set_title("documents left, per language")
    d = summary["documents"]
    fig.suptitle(f"read {d['read']:,} · kept {d['kept']:,} · rejected {d['rejected']:,}"
                 f" · {'balanced' if d['balanced'] else 'NOT BALANCED'}")
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.2, top=0.9, wspace=0.15)  # tight_layout costs 0.25 s
    fig.savefig(path, dpi=100)
    plt.close(fig)
