"""The last stage, one task per shard: apply the decisions, cut repeated substrings (when on), drop frequent lines,
run the per-document filters again on changed texts, the optional KenLM filter, and write `kept/` and `rejected/`."""

from __future__ import annotations

import json

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from tqdm import tqdm

from sailor2_jax.data.clean.decide import DECIDE_STEPS, FIXED_REASONS
from sailor2_jax.data.clean.heuristics import check
from sailor2_jax.data.clean.langid import LanguageIdentifier
from sailor2_jax.data.clean.perplexity import PerplexityModel
from sailor2_jax.data.stages.outputs import JsonlOut, jsonl_file, kept_record, rejected_record
from sailor2_jax.data.clean.step import CleanStep, CountedStep


class ApplyDecisions(CleanStep):
    """Reads this shard's normalised documents back and marks those stage 2 removed."""

    name = "read work files, apply stage-2 decisions"
    type = "📖 - READER"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.out_dir.open(f"work/decisions/{rank:05d}.npz", "rb") as f:
            decisions = dict(np.load(f))
        with self.out_dir.open("work/decisions/reasons.json") as f:
            reasons = json.load(f)["reasons"]
        path, compression = jsonl_file(f"work/docs/{rank:05d}", self.config.compression)  # WorkWriter's file
        if not self.out_dir.exists(path):
            return
        with self.out_dir.open(path, "rt", compression=compression) as f:
            for line in tqdm(f, total=len(decisions["step"]), desc=f"write (task {rank})", unit="doc",
                             disable=not self.config.progress):
                w = json.loads(line)
                i = w["i"]
                record = w["record"]
                record[self.config.text_key] = w["text"]  # restored so that output records keep every field
                meta = {"file": w["file"], "line": w["line"], "record": record, "lang": w["lang"], "reject": None,
                        "i": i}
                step = DECIDE_STEPS[decisions["step"][i]]
                if step != "kept":
                    code = decisions["reason"][i]
                    reason = reasons[code] if code >= 0 else FIXED_REASONS[step]
                    meta["reject"] = {"step": step, "reason": reason}
                    if step == "lid":  # fastText's top two (and pycld2's verdict), for auditing
                        meta["reject"]["lid"] = w["lid"]
                yield Document(text=w["text"], id=w["id"], metadata=meta)


class SecondPass(CountedStep):
    """sailcraft's stage 4 (its `run_example.sh` cleans again after dedup): every per-document filter — the
    heuristics, then language ID — again on the texts that substring dedup or frequent-line removal changed. An
    unchanged text would get the verdicts it already passed: the filters are functions of the text. (KenLM, when on,
    runs after this step on every document.)"""

    name = "second pass: heuristics and language ID on changed texts"
    type = "🔻 - FILTER"
    step = "second_pass"

    def setup(self) -> None:
        self.lid = LanguageIdentifier(self.config.lid_model) if self.config.lid else None

    def process(self, doc: Document, lang: str) -> str | tuple[str, dict] | None:
        if not doc.metadata.get("edited"):
            return None
        params = self.config.params(lang)
        if self.config.heuristics and (reason := check(doc.text, lang, params)) is not None:
            return reason
        if self.lid is not None and params.lid_check:
            verdict = self.lid.check(doc.text, lang, params.lid_min)
            if verdict.reason is not None:
                return verdict.reason, {"lid": verdict.audit()}
        return None


class PerplexityFilter(CountedStep):
    """sailcraft's KenLM filter: keep a document whose perplexity is ≤ its language's `perplexity_max`. Languages
    without a configured model pass unchanged (counted as `no_model` in the step's stats)."""

    name = "KenLM perplexity"
    type = "🔻 - FILTER"
    step = "kenlm"

    def setup(self) -> None:
        self.models = {lang: PerplexityModel(m.kenlm, m.sentencepiece) for lang, m in self.config.kenlm.models.items()}

    def process(self, doc: Document, lang: str) -> str | None:
        model = self.models.get(lang)
        if model is None:
            self.stat_update("no_model")
            return None
        doc.metadata["perplexity"] = ppl = model.perplexity(doc.text)
        return None if ppl <= self.config.params(lang).perplexity_max else "perplexity_too_high"


class OutputWriter(CleanStep):
    name = "write kept/ and rejected/"
    type = "💽 - WRITER"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        kept = JsonlOut(self.out_dir, f"kept/{rank:05d}", self.config.compression)
        rejected = JsonlOut(self.out_dir, f"rejected/apply-{rank:05d}", self.config.compression)
        for doc in data:
            if doc.metadata["reject"] is None:
                kept.write(kept_record(doc, self.config.text_key))
            else:
                rejected.write(rejected_record(doc, self.config.text_key))
        kept.close()
        rejected.close()
        return
        yield  # a PipelineStep's run is a generator; nothing follows the writer
