"""The translation run as datatrove stages, on the executors of `clean` (local, Slurm, Ray: a task per shard of the
input, each on a GPU or on CPUs):

1. translate (N tasks): read every record (lossless) → for each target language, translate the configured fields
   (segmented by segment.py, batched through the engine) → `OUT/<target>/<task>.jsonl.gz`, or a rejection with its
   reason (empty, too_long, unsupported_field, failed) in `OUT/rejected/`.
2. summarise (1 task): `OUT/summary.json` and the check that, for every target, translated + rejected = records
   read (and that unreadable lines are in `rejected/` once).

A translated record keeps every input field, with the translated fields replaced, plus `language` (the target) and
`translated_from` (the source language).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder, get_datafolder
from datatrove.pipeline.base import PipelineStep

from sailor2_jax.data.stages.accounting import StepCounter, merge_stats, step_totals
from sailor2_jax.data.stages.executor import run_stages
from sailor2_jax.data.stages.inputs import RecordReader
from sailor2_jax.data.stages.outputs import JsonlOut, rejected_record
from sailor2_jax.data.stages.accounting import AccountingError, count_records
from sailor2_jax.data.translate.config import TranslateConfig
from sailor2_jax.data.translate.engine import Engine, convert_to_ctranslate2, is_ctranslate2_model, load_engine
from sailor2_jax.data.translate.segment import join_document, split_document

STEPS = ("read", "translate")


class _Job:
    """One record's translatable texts: per field, its texts (one, or one per chat message), each as paragraphs of
    segments."""

    def __init__(self, doc: Document):
        self.doc = doc
        self.fields: dict[str, list[list[list[str]]]] = {}


def _segments(job: _Job) -> list[str]:
    return [s for texts in job.fields.values() for paras in texts for p in paras for s in p]


def _texts(value) -> list[str] | None:
    """The strings a field holds: itself, or the `content` of each chat message; None when it is neither."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                 for m in value):
        return [m["content"] for m in value]
    return None


def _replace(value, translated: list[str]):
    if isinstance(value, str):
        return translated[0]
    return [{**m, "content": t} for m, t in zip(value, translated)]


class Translate(PipelineStep):
    name = "translate (NLLB/M2M100)"
    type = "🌐 - TRANSLATE"

    def __init__(self, config: TranslateConfig, engine: str, model_dir: str, out_dir: DataFolder):
        super().__init__()
        self.config, self.engine_kind, self.model_dir, self.out_dir = config, engine, model_dir, out_dir

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        cfg = self.config
        engine = load_engine(self.engine_kind, self.model_dir, device=cfg.device, compute_type=cfg.compute_type,
                             beam_size=cfg.beam_size, batch_size=cfg.batch_size,
                             max_output_tokens=cfg.max_output_tokens, threads=cfg.threads)
        self.read, self.counter = StepCounter("read"), StepCounter("translate")
        self.kept = {t: JsonlOut(self.out_dir, f"{t}/{rank:05d}", cfg.compression) for t in cfg.targets}
        self.rejected = JsonlOut(self.out_dir, f"rejected/{rank:05d}", cfg.compression)
        self.segments, self.seconds = 0, 0.0
        pending: list[Document] = []
        for doc in data:
            meta = doc.metadata
            if meta["reject"] is not None:
                self.read.entered("unreadable", 0)
                self.read.removed("unreadable", meta["reject"]["reason"])
                self.rejected.write(rejected_record(doc, "text"))
                continue
            self.read.entered(cfg.source, 0)
            self.read.left(cfg.source, 0)
            pending.append(doc)
            if len(pending) >= cfg.records_per_batch:
                self._translate(engine, pending)
                pending = []
        self._translate(engine, pending)
        for out in [*self.kept.values(), self.rejected]:
            out.close()
        for counter in (self.read, self.counter):
            counter.save(self.out_dir, rank)
        with self.out_dir.open(f"work/speed/{rank:05d}.json", "w") as f:
            json.dump({"segments": self.segments, "seconds": self.seconds, "engine": engine.name,
                       "device": getattr(engine, "device", "?"), "compute_type": getattr(engine, "compute_type", "?")},
                      f)
        return
        yield  # a PipelineStep's run is a generator; nothing follows the writer

    def _reject(self, doc: Document, target: str, reason: str, detail: str | None = None) -> None:
        meta = doc.metadata
        rejection = {"step": "translate", "reason": reason, "target": target, "file": meta["file"],
                     "line": meta["line"]}
        if detail:
            rejection["detail"] = detail
        self.rejected.write({"_rejection": rejection, **meta["record"]})
        self.counter.removed(target, reason)
        self.stat_update(f"rejected_{reason}")

    def _prepare(self, engine: Engine, docs: list[Document]) -> tuple[list[_Job], list[tuple]]:
        """Check every record's fields and segment them (once for all targets): the jobs, and the rejections as
        (document, reason, detail)."""
        cfg = self.config
        jobs, problems = [], []
        for doc in docs:
            record = doc.metadata["record"]
            job, problem = _Job(doc), None
            for field in cfg.fields:
                texts = _texts(record.get(field))
                if record.get(field) is None or (texts is not None and not any(t.strip() for t in texts)):
                    problem = ("empty", f"field {field!r} missing or empty")
                elif texts is None:
                    problem = ("unsupported_field", f"field {field!r} is neither a string nor chat messages")
                elif sum(map(len, texts)) > cfg.max_document_chars:
                    problem = ("too_long", f"field {field!r}: {sum(map(len, texts))} characters")
                if problem:
                    break
                job.fields[field] = [split_document(t, cfg.source, engine.count_tokens, cfg.max_segment_tokens)
                                     for t in texts]
            if problem:
                problems.append((doc, *problem))
            else:
                jobs.append(job)
        return jobs, problems

    def _translate(self, engine: Engine, docs: list[Document]) -> None:
        if not docs:
            return
        cfg = self.config
        jobs, problems = self._prepare(engine, docs)
        flat = [s for j in jobs for s in _segments(j)]
        for target in cfg.targets:
            for doc in docs:
                record = doc.metadata["record"]
                self.counter.entered(target, sum(len(str(record.get(f, "")).encode()) for f in cfg.fields))
            for doc, reason, detail in problems:
                self._reject(doc, target, reason, detail)
            start = time.perf_counter()
            try:
                outputs = iter(engine.translate(flat, cfg.source, target) if flat else [])
                results = [(j, outputs) for j in jobs]  # one iterator, consumed in the order `flat` was built
            except Exception:  # noqa: BLE001 — one bad record must not sink the batch: retry record by record
                self.stat_update("batch_retried")
                results = []
                for j in jobs:
                    try:
                        results.append((j, iter(engine.translate(_segments(j), cfg.source, target))))
                    except Exception as err:  # noqa: BLE001 — reported in the record's rejection
                        self._reject(j.doc, target, "failed", f"{type(err).__name__}: {err}"[:300])
            self.seconds += time.perf_counter() - start
            self.segments += len(flat)
            for job, outputs in results:
                self._write(job, outputs, target)

    def _write(self, job: _Job, outputs, target: str) -> None:
        cfg = self.config
        record = dict(job.doc.metadata["record"])
        empty = False
        for field, texts in job.fields.items():
            translated = []
            for paras in texts:
                done = [[next(outputs) for _ in p] for p in paras]
                empty |= any(not t.strip() for p in done for t in p)
                translated.append(join_document(done, target))
            record[field] = _replace(record[field], translated)
        if empty:
            self._reject(job.doc, target, "failed", "the model returned an empty translation")
            return
        record["language"], record["translated_from"] = target, cfg.source
        self.kept[target].write(record)
        self.counter.left(target, sum(len(str(record[f]).encode()) for f in cfg.fields))


class TranslationSummary(PipelineStep):
    """Last stage: summary.json and the balance check per target."""

    name = "translation summary and accounting check"
    type = "📊 - STATS"

    def __init__(self, out_dir: DataFolder, config: TranslateConfig):
        super().__init__()
        self.out_dir, self.config = out_dir, config

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        write_translation_summary(Path(self.out_dir.path), self.config)
        return
        yield


def write_translation_summary(out: Path, config: TranslateConfig) -> dict:
    folder = get_datafolder(str(out))
    stats = merge_stats(folder, order=STEPS)
    totals = step_totals(stats)
    read = totals.get("read", {"docs_in": 0, "docs_out": 0})
    good, bad = read["docs_out"], read["docs_in"] - read["docs_out"]
    per_target, balanced = {}, True
    rejected_written = count_records(out / "rejected")
    for t in config.targets:
        c = stats.get("translate", {}).get(t, {"docs_out": 0, "removed": {}})
        written = count_records(out / t)
        per_target[t] = {"translated": written, "rejected": dict(c["removed"])}
        balanced &= written == c["docs_out"] and written + sum(c["removed"].values()) == good
    balanced &= rejected_written == bad + sum(sum(v["rejected"].values()) for v in per_target.values())
    speed = [json.loads((out / "work" / "speed" / p).read_text()) for p in sorted(
        x.name for x in (out / "work" / "speed").glob("*.json"))]
    segments, seconds = sum(s["segments"] for s in speed), sum(s["seconds"] for s in speed)
    summary = {"records": {"read": read["docs_in"], "unreadable": bad, "balanced": bool(balanced)},
               "targets": per_target, "source": config.source, "fields": config.fields,
               "engine": speed[0] if speed else None,
               "segments": segments, "segments_per_second": round(segments / seconds, 2) if seconds else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    if not balanced:
        raise AccountingError(f"translation outputs do not add up to the {read['docs_in']} records read: see "
                              f"{out / 'summary.json'}")
    return summary


def resolve_engine(config: TranslateConfig, out: Path) -> tuple[str, str]:
    """(engine, model directory it loads): `auto` picks CTranslate2 when installed; a Hugging Face model is
    converted once for it (under OUT/ct2-model, rebuilt when the source model changes)."""
    kind = config.engine
    if kind == "auto":
        try:
            import ctranslate2  # noqa: F401
            kind = "ctranslate2"
        except ImportError:
            kind = "transformers"
    model = Path(config.model)
    if not model.is_dir():
        raise FileNotFoundError(f"model directory not found: {model}")
    if kind == "ctranslate2" and not is_ctranslate2_model(model):
        target = out / "ct2-model"
        stamp = {"source": str(model.resolve()), "mtime": max(p.stat().st_mtime for p in model.iterdir())}
        marker = target / "source.json"
        if target.exists() and (not marker.is_file() or json.loads(marker.read_text()) != stamp):
            shutil.rmtree(target)
        if not target.exists():
            convert_to_ctranslate2(model, target)
            marker.write_text(json.dumps(stamp))
        model = target
    return kind, str(model)


def stages(inputs: list[str], out: Path, config: TranslateConfig, engine: str,
           model: str) -> list[tuple[str, list[PipelineStep], int]]:
    """(name, pipeline, tasks) of the two stages."""
    folder = get_datafolder(str(out))
    reader = RecordReader(inputs, "translate", config.progress)
    return [("translate", [reader, Translate(config, engine, model, folder)], config.executor.tasks),
            ("summarise", [TranslationSummary(folder, config)], 1)]


def run_translate(inputs: list[str], out_dir: str | Path, config: TranslateConfig) -> dict:
    """Translate `inputs` into `out_dir`; returns the summary (for Slurm: where the jobs log)."""
    out = Path(out_dir)
    for sub in ("rejected", "work", "logs", *config.targets):  # a rerun must not count an earlier run's files
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    kind, model = resolve_engine(config, out)
    start = time.perf_counter()
    run_stages(config.executor, stages(inputs, out, config, kind, model), out, "translate")
    if config.executor.kind == "slurm":
        return {"submitted": True, "logs": str(out / "logs")}
    summary = json.loads((out / "summary.json").read_text())
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary
