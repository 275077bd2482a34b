"""Run a tasks file on one model: per task, its records → scores → `DIR/<task>.jsonl` (one line per record) and its
metrics in `DIR/results.json` (`{"tasks": {name: {metric: value}}, "model", "time", ...}`), both written
atomically.

Metrics (per language too, as `metric/<language>`, when records carry one):
- perplexity: `ppl` = exp(total NLL / total tokens) and `bpb` = total NLL / (total UTF-8 bytes · ln 2), over all
  tokens of all texts (not a mean of per-text values);
- multiple choice: `acc` (the choice of largest summed log-prob is the gold one) and `acc_norm` (the same after
  dividing each log-prob by the choice's UTF-8 byte length: lm-eval's `acc_bytes`; its `acc_norm` divides by
  characters), fractions in [0, 1];
- generation: the task's `metrics` (eval/metrics.py), 0-100.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sailor2_jax.eval import metrics
from sailor2_jax.eval.config import GenerationTask, MultipleChoiceTask, PerplexityTask, TaskBase, TasksFile
from sailor2_jax.eval.task_records import FewShot, choice_texts, read_records
from sailor2_jax.eval.score import Scorer, encode_pair, pair_row, rolling_rows
from sailor2_jax.files import write_json, write_jsonl
from sailor2_jax.generate.engine import Generator
from sailor2_jax.model.source import OpenModel



def _by_language(records: list[dict], metric: Callable[[list[int]], dict[str, float]]) -> dict[str, float]:
    """The metrics over all records, then over each language's as `name/<language>`."""
    out = metric(list(range(len(records))))
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        if "language" in r:
            groups.setdefault(r["language"], []).append(i)
    for lang, idx in groups.items():
        out.update({f"{k}/{lang}": v for k, v in metric(idx).items()})
    return out


class Evaluator:
    def __init__(self, opened: OpenModel, tasks: TasksFile):
        self.tasks, self.tok, self.eos_ids = tasks, opened.tokenizer, opened.eos_ids
        self.generator = Generator(opened.model, opened.mesh)
        self.max_length = min(tasks.max_length, self.generator.cfg.max_position_embeddings)
        self.scorer = Scorer(self.generator, batch_size=tasks.batch_size)
        self.prefix_id = opened.eos_ids[0]

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def run(self, out_dir: Path, model_name: str) -> dict:
        results, counts = {}, {}
        start = time.time()
        for task in self.tasks.tasks:
            records = read_records(task, self.tasks.path(task.data), self.tasks.task_limit(task))
            if not records.kept:
                raise ValueError(f"task {task.name}: no valid record in {records.path}")
            counts[task.name] = {"read": records.read, "scored": len(records.kept), "skipped": len(records.skipped)}
            with tqdm(total=len(records.kept), desc=task.name, unit="record", file=sys.stderr) as bar:
                rows, results[task.name] = getattr(self, task.type)(task, records.kept, bar)
            write_jsonl(out_dir / f"{task.name}.jsonl", rows)
        summary = {"tasks": results, "model": model_name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "seconds": round(time.time() - start, 1), "records": counts, "max_length": self.max_length}
        write_json(out_dir / "results.json", summary)
        return summary

    # --- the three kinds --------------------------------------------------------------------------------------------
    def perplexity(self, task: PerplexityTask, records: list[dict], bar: tqdm) -> tuple[list[dict], dict]:
        ids = [self.encode(r["text"]) for r in records]
        windows = [rolling_rows(x, self.max_length, self.prefix_id) for x in ids]
        flat = [w for ws in windows for w in ws]
        owner = np.repeat(np.arange(len(records)), [len(ws) for ws in windows])
        bar.reset(total=len(flat))
        bar.unit = "window"
        scores = self.scorer.score(flat, on_rows=bar.update)
        nll = np.zeros(len(records))
        np.add.at(nll, owner, [-s for s, _ in scores])
        rows = [{**r, "nll": float(nll[i]), "tokens": len(ids[i]), "bytes": len(r["text"].encode("utf-8"))}
                for i, r in enumerate(records)]

        def metric(idx):
            total, tokens, nbytes = (sum(rows[i][k] for i in idx) for k in ("nll", "tokens", "bytes"))
            return {"ppl": math.exp(total / max(tokens, 1)), "bpb": total / (nbytes * math.log(2))}
        return rows, _by_language(rows, metric)

    def multiple_choice(self, task: MultipleChoiceTask, records: list[dict], bar: tqdm) -> tuple[list[dict], dict]:
        fewshot = self._fewshot(task)
        flat, owner = [], []
        for i, r in enumerate(records):
            context = fewshot.prompt(r, i)
            for choice in choice_texts(task, r):
                flat.append(pair_row(*encode_pair(self.encode, context, choice), self.max_length, self.prefix_id))
                owner.append(i)
        bar.reset(total=len(flat))
        bar.unit = "choice"
        scores = self.scorer.score(flat, on_rows=bar.update)
        lls: list[list[float]] = [[] for _ in records]
        for i, (ll, _) in zip(owner, scores):
            lls[i].append(ll)
        rows = []
        for r, ll in zip(records, lls):
            nbytes = np.array([len(c.encode("utf-8")) for c in choice_texts(task, r)], float)
            pred, pred_norm = int(np.argmax(ll)), int(np.argmax(np.array(ll) / nbytes))
            rows.append({**r, "logliks": ll, "pred": pred, "pred_norm": pred_norm, "gold": r["gold"]})

        def metric(idx):
            return {"acc": float(np.mean([rows[i]["pred"] == rows[i]["gold"] for i in idx])),
                    "acc_norm": float(np.mean([rows[i]["pred_norm"] == rows[i]["gold"] for i in idx]))}
        return rows, _by_language(rows, metric)

    def generation(self, task: GenerationTask, records: list[dict], bar: tqdm) -> tuple[list[dict], dict]:
        from sailor2_jax.generate.sampling import SamplingConfig

        fewshot = self._fewshot(task)
        keep = max(1, self.max_length - task.max_new_tokens)
        prompts = [self.encode(fewshot.prompt(r, i))[-keep:] for i, r in enumerate(records)]
        completions = self.generator.generate(
            prompts, sampling=SamplingConfig(temperature=0.0), max_new_tokens=task.max_new_tokens,
            eos_ids=self.eos_ids, batch_size=self.tasks.batch_size, on_batch=bar.update)
        rows, outputs, refs = [], [], []
        for r, (c,) in zip(records, completions):
            ids = c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids
            raw = self.tok.decode(ids, skip_special_tokens=False)
            output = metrics.postprocess(task, raw)
            references = metrics.reference_texts(task, r["references"])
            outputs.append(output)
            refs.append(references)
            rows.append({**r, "raw_output": raw, "output": output,
                         "scores": metrics.sentence_scores(task, output, references)})

        def metric(idx):
            return metrics.corpus_scores(task, [outputs[i] for i in idx], [refs[i] for i in idx],
                                         [rows[i]["scores"] for i in idx])
        return rows, _by_language(rows, metric)

    def _fewshot(self, task: TaskBase) -> FewShot:
        if not task.num_fewshot:
            return FewShot(task, [])
        pool = read_records(task, self.tasks.path(task.fewshot_data))
        return FewShot(task, pool.kept)
