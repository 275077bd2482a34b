"""Per-step, per-language counters (documents and bytes in and out, removals by reason), saved as JSON per task and
summed into `summary.json`. Bytes are UTF-8 bytes of the text as it enters and leaves the step."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

from datatrove.io import DataFolder

def _empty() -> dict:
    return {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0, "removed": defaultdict(int)}


class StepCounter:
    """Counts for one step in one task: `entered`, then either `left` or `removed` for each document."""

    def __init__(self, step: str):
        self.step = step
        self.by_lang: dict[str, dict] = defaultdict(_empty)

    def entered(self, lang: str, nbytes: int, docs: int = 1) -> None:
        c = self.by_lang[lang]
        c["docs_in"] += docs
        c["bytes_in"] += nbytes

    def left(self, lang: str, nbytes: int, docs: int = 1) -> None:
        c = self.by_lang[lang]
        c["docs_out"] += docs
        c["bytes_out"] += nbytes

    def removed(self, lang: str, reason: str, docs: int = 1) -> None:
        self.by_lang[lang]["removed"][reason] += docs

    def reject(self, meta: dict, reason: str) -> None:
        """Mark a document (its metadata) as removed at this step, and count it."""
        meta["reject"] = {"step": self.step, "reason": reason}
        self.removed(meta["lang"], reason)

    def to_json(self) -> dict:
        return {lang: _plain(c) for lang, c in sorted(self.by_lang.items())}

    def save(self, folder: DataFolder, rank: int) -> None:
        with folder.open(f"work/stats/{self.step}-{rank:05d}.json", "w") as f:
            json.dump(self.to_json(), f)


def _add(total: dict, c: dict) -> None:
    """Add the counts `c` into `total` (an `_empty()` dict)."""
    for key in ("docs_in", "docs_out", "bytes_in", "bytes_out"):
        total[key] += c[key]
    for reason, n in c["removed"].items():
        total["removed"][reason] += n


def _plain(c: dict) -> dict:
    return {**c, "removed": dict(c["removed"])}


def merge_stats(folder: DataFolder, order: tuple[str, ...]) -> dict[str, dict[str, dict]]:
    """Sum every task's counters (under `folder`/work/stats): {step: {language: counts}}, steps in `order`."""
    merged: dict[str, dict[str, dict]] = {}
    for path in sorted(folder.list_files("work/stats")):
        step = path.split("/")[-1].rsplit("-", 1)[0]
        with folder.open(path) as f:
            for lang, c in json.load(f).items():
                _add(merged.setdefault(step, {}).setdefault(lang, _empty()), c)
    return {step: {lang: _plain(c) for lang, c in sorted(merged[step].items())} for step in order if step in merged}


def step_totals(stats: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Per step, summed over languages."""
    out = {}
    for step, by_lang in stats.items():
        total = _empty()
        for c in by_lang.values():
            _add(total, c)
        out[step] = _plain(total)
    return out


def intern(table: list[str], value: str) -> int:
    """Index of `value` in `table`, appended if new: string columns are stored as small ints in the work files."""
    try:
        return table.index(value)
    except ValueError:
        table.append(value)
        return len(table) - 1


class AccountingError(RuntimeError):
    """kept + rejected differs from the number of documents read."""


def count_records(folder: Path) -> int:
    """Lines actually written under `folder` (the check counts files, not counters)."""
    total = 0
    for path in sorted(folder.glob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            total += sum(1 for _ in f)
    return total
