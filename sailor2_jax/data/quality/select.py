"""Quality selection as datatrove stages on the executors of `clean`: score every record with its language's
classifier, keep the top `keep` fraction per language.

1. score (N tasks): read (lossless) → `quality_score` = P(positive) from the record's language's model → work files;
   records with no text, an unreadable line or no model for their language go to `rejected/unscored/`.
2. cut (1 task): per language, the `round(keep × n)` highest scores (ties by input order) are kept; the cut, counts
   and `quality.png` (a histogram per language with the cut marked).
3. split (N tasks): `kept/<language>/` and `rejected/<language>/` (reason `below_cut`), every field kept.
4. summarise (1 task): `summary.json` and the check that kept + rejected = read.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder, get_datafolder
from datatrove.pipeline.base import PipelineStep
import pydantic
from pydantic import Field

from sailor2_jax.config import Config, find_config, load
from sailor2_jax.data.stages.accounting import StepCounter, intern, merge_stats
from sailor2_jax.data.stages.executor import ExecutorConfig
from sailor2_jax.languages import canonical_language
from sailor2_jax.data.stages.executor import run_stages
from sailor2_jax.data.stages.inputs import RecordReader
from sailor2_jax.data.stages.outputs import REJECTION_KEY, JsonlOut, jsonl_file, rejected_record
from sailor2_jax.data.stages.accounting import AccountingError, count_records

STEPS = ("read", "score", "select")
_BATCH = 512  # records scored per fastText call


class SelectConfig(Config):
    models: list[Path] = Field(min_length=1, description="classifiers from `quality train` (each names its language)")
    keep: float = Field(gt=0, le=1, description="fraction kept per language (the recipe: 0.10–0.20)")
    language: str | None = Field(None, description="language of records without a `language` field")
    text_key: str = "text"
    executor: ExecutorConfig = ExecutorConfig()
    compression: Literal["gzip", "none"] = "gzip"
    progress: bool = True

    @pydantic.field_validator("language")
    @classmethod
    def _lang(cls, v: str | None) -> str | None:
        return canonical_language(v)


def load_select_config(name_or_path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> SelectConfig:
    """A YAML config (a path, or a name in `configs/quality/`; None: no file) with dotted overrides on top (the
    command's flags among them)."""
    return load(SelectConfig, find_config("quality", name_or_path) if name_or_path is not None else None, overrides)


def model_languages(paths: list[Path]) -> dict[str, str]:
    """{language: model path}, from each model's JSON; two models for one language are an error."""
    out: dict[str, str] = {}
    for p in paths:
        meta = Path(str(p) + ".json")
        if not meta.is_file():
            raise FileNotFoundError(f"{meta} missing: it names the model's language (written by `quality train`)")
        lang = json.loads(meta.read_text())["language"]
        if lang in out:
            raise ValueError(f"two models for language {lang!r}: {out[lang]} and {p}")
        out[lang] = str(p)
    return out


class Score(PipelineStep):
    name = "quality score (fastText)"
    type = "🔬 - ANALYSE"

    def __init__(self, config: SelectConfig, models: dict[str, str], out_dir: DataFolder):
        super().__init__()
        self.config, self.models, self.out_dir = config, models, out_dir

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from sailor2_jax.data.quality.classifier import QualityModel

        cfg = self.config
        models = {lang: QualityModel(p) for lang, p in self.models.items()}
        read, score = StepCounter("read"), StepCounter("score")
        scored = JsonlOut(self.out_dir, f"work/scored/{rank:05d}", cfg.compression)
        unscored = JsonlOut(self.out_dir, f"rejected/unscored/{rank:05d}", cfg.compression)
        langs: list[str] = []
        codes, scores = [], []
        batch: list[tuple[dict, str]] = []

        def flush():
            for lang in {lang for _, lang in batch}:
                mine = [r for r, lg in batch if lg == lang]
                for r, s in zip(mine, models[lang].score([r[cfg.text_key] for r in mine])):
                    r["quality_score"] = float(s)
            for r, lang in batch:
                scored.write(r)
                codes.append(intern(langs, lang))
                scores.append(r["quality_score"])
                score.left(lang, len(r[cfg.text_key].encode("utf-8")))
            batch.clear()

        for doc in data:
            meta = doc.metadata
            record = meta["record"]
            lang = None
            if record is not None:
                given = record.get("language")
                lang = canonical_language(given) if isinstance(given, str) and given.strip() else cfg.language
            key = lang or "unknown"
            read.entered(key, 0)
            if meta["reject"] is not None:
                read.removed(key, meta["reject"]["reason"])
                unscored.write(rejected_record(doc, cfg.text_key))
                continue
            read.left(key, 0)
            text = record.get(cfg.text_key)
            reason = ("empty" if not isinstance(text, str) or not text.strip()
                      else "no_language" if lang is None else "no_model" if lang not in models else None)
            score.entered(key, len(text.encode("utf-8")) if isinstance(text, str) else 0)
            if reason:
                score.removed(key, reason)
                meta["reject"] = {"step": "score", "reason": reason}
                unscored.write(_rejected(doc, reason, "score"))
                continue
            batch.append(({**record, "language": lang}, lang))
            if len(batch) >= _BATCH:
                flush()
        flush()
        scored.close()
        unscored.close()
        read.save(self.out_dir, rank)
        score.save(self.out_dir, rank)
        with self.out_dir.open(f"work/scores/{rank:05d}.npz", "wb") as f:
            np.savez(f, lang=np.asarray(codes, dtype=np.int32), score=np.asarray(scores, dtype=np.float64))
        with self.out_dir.open(f"work/scores/{rank:05d}.json", "w") as f:
            json.dump({"langs": langs}, f)
        return
        yield


def _rejected(doc: Document, reason: str, step: str) -> dict:
    meta = doc.metadata
    return {REJECTION_KEY: {"step": step, "reason": reason, "file": meta["file"], "line": meta["line"]},
            **meta["record"]}


class Cut(PipelineStep):
    """One task: the top `keep` per language, the cut score, counts and the histogram."""

    name = "quality cut per language"
    type = "🔻 - FILTER"

    def __init__(self, config: SelectConfig, out_dir: DataFolder, tasks: int):
        super().__init__()
        self.config, self.out_dir, self.tasks = config, out_dir, tasks

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        langs: list[str] = []
        codes, scores, sizes = [], [], []
        for r in range(self.tasks):
            with self.out_dir.open(f"work/scores/{r:05d}.json") as f:
                table = np.array([intern(langs, x) for x in json.load(f)["langs"]] + [-1], dtype=np.int32)
            with self.out_dir.open(f"work/scores/{r:05d}.npz", "rb") as f:
                arrays = np.load(f)
                codes.append(table[arrays["lang"]])
                scores.append(arrays["score"])
            sizes.append(len(scores[-1]))
        code, score = np.concatenate(codes), np.concatenate(scores)
        keep = np.zeros(len(score), dtype=bool)
        cuts = {}
        for li, lang in enumerate(langs):
            idx = np.flatnonzero(code == li)
            k = max(1, round(self.config.keep * len(idx))) if len(idx) else 0
            top = idx[np.lexsort((idx, -score[idx]))[:k]]  # highest first, ties in input order
            keep[top] = True
            cuts[lang] = {"documents": len(idx), "kept": k, "cut": float(score[top].min()) if k else None}
        start = 0
        for r, size in enumerate(sizes):
            with self.out_dir.open(f"work/keep/{r:05d}.npy", "wb") as f:
                np.save(f, keep[start:start + size])
            start += size
        with self.out_dir.open("work/cuts.json", "w") as f:
            json.dump(cuts, f)
        plot_scores(score, code, langs, cuts, self.config.keep, Path(self.out_dir.path) / "quality.png")
        return
        yield


class Split(PipelineStep):
    """Scored records to kept/<language>/ or rejected/<language>/."""

    name = "quality split: kept/ and rejected/"
    type = "💽 - WRITER"

    def __init__(self, config: SelectConfig, out_dir: DataFolder):
        super().__init__()
        self.config, self.out_dir = config, out_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        cfg = self.config
        with self.out_dir.open(f"work/keep/{rank:05d}.npy", "rb") as f:
            keep = np.load(f)
        counter = StepCounter("select")
        outs: dict[str, JsonlOut] = {}
        path, compression = jsonl_file(f"work/scored/{rank:05d}", cfg.compression)
        if self.out_dir.exists(path):
            with self.out_dir.open(path, "rt", compression=compression) as f:
                for i, line in enumerate(f):
                    record = json.loads(line)
                    lang = record["language"]
                    counter.entered(lang, len(record[cfg.text_key].encode("utf-8")))
                    where = "kept" if keep[i] else "rejected"
                    if keep[i]:
                        counter.left(lang, len(record[cfg.text_key].encode("utf-8")))
                    else:
                        counter.removed(lang, "below_cut")
                        record = {REJECTION_KEY: {"step": "select", "reason": "below_cut"}, **record}
                    out = outs.get(f"{where}/{lang}")
                    if out is None:
                        out = outs[f"{where}/{lang}"] = JsonlOut(self.out_dir, f"{where}/{lang}/{rank:05d}",
                                                                 cfg.compression)
                    out.write(record)
        for out in outs.values():
            out.close()
        counter.save(self.out_dir, rank)
        return
        yield


class SelectSummary(PipelineStep):
    name = "quality summary and accounting check"
    type = "📊 - STATS"

    def __init__(self, config: SelectConfig, out_dir: DataFolder):
        super().__init__()
        self.config, self.out_dir = config, out_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        out = Path(self.out_dir.path)
        stats = merge_stats(self.out_dir, order=STEPS)
        cuts = json.loads((out / "work" / "cuts.json").read_text())
        read = sum(c["docs_in"] for c in stats.get("read", {}).values())
        per_lang = {}
        for lang, c in cuts.items():
            per_lang[lang] = {**c, "written_kept": count_records(out / "kept" / lang),
                              "written_rejected": count_records(out / "rejected" / lang)}
        kept = sum(v["written_kept"] for v in per_lang.values())
        rejected = sum(v["written_rejected"] for v in per_lang.values()) + count_records(out / "rejected" / "unscored")
        unscored = {k: dict(v["removed"]) for k, v in stats.get("score", {}).items() if v["removed"]}
        summary = {"documents": {"read": read, "kept": kept, "rejected": rejected, "balanced": kept + rejected == read},
                   "keep": self.config.keep, "languages": per_lang, "unscored": unscored,
                   "unreadable": {k: dict(v["removed"]) for k, v in stats.get("read", {}).items() if v["removed"]}}
        (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
        if not summary["documents"]["balanced"] or any(v["kept"] != v["written_kept"] for v in per_lang.values()):
            raise AccountingError(f"kept {kept} + rejected {rejected} ≠ read {read}: see {out / 'summary.json'}")
        return
        yield


def plot_scores(score: np.ndarray, code: np.ndarray, langs: list[str], cuts: dict, keep: float, path: Path) -> None:
    """One histogram of P(positive) per language, the cut as a red line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(langs), 1)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (li, lang) in zip(axes.flat, enumerate(langs)):
        s = score[code == li]
        ax.hist(s, bins=np.linspace(0, 1, 41), color="tab:blue")
        c = cuts[lang]
        if c["cut"] is not None:
            ax.axvline(c["cut"], color="tab:red", label=f"cut {c['cut']:.3f}")
            ax.legend(loc="upper center", fontsize=8)
        ax.set_title(f"{lang}: kept {c['kept']:,} of {c['documents']:,}", fontsize=10)
        ax.set_xlabel("P(high quality)")
    fig.suptitle(f"quality scores, top {keep:.0%} kept per language")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_select(inputs: list[str], out_dir: str | Path, config: SelectConfig) -> dict:
    """Score and select `inputs` into `out_dir`; returns summary.json's content (for Slurm: where jobs log)."""
    out = Path(out_dir)
    models = model_languages(config.models)
    for sub in ("kept", "rejected", "work", "logs"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    folder = get_datafolder(str(out))
    tasks = config.executor.tasks
    plan = [("score", [RecordReader(inputs, "score", config.progress), Score(config, models, folder)], tasks),
            ("cut", [Cut(config, folder, tasks)], 1), ("split", [Split(config, folder)], tasks),
            ("summarise", [SelectSummary(config, folder)], 1)]
    start = time.perf_counter()
    run_stages(config.executor, plan, out, "quality")
    if config.executor.kind == "slurm":
        return {"submitted": True, "logs": str(out / "logs")}
    summary = json.loads((out / "summary.json").read_text())
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary
