"""Run a tasks file on one model: per task, its records → scores → `DIR/<task>.jsonl` (one line per record) and its
metrics in `DIR/results.json` (`{"tasks": {name: {metric: value}}, "model", "time", ...}`), both written
atomically.

Metrics (per language too, as `metric/<language>`, when records carry one):
- perplexity: `ppl` = exp(total NLL / total tokens) and `bpb` = total NLL / (total UTF-8 bytes · ln 2), over all
  tokens of all texts (not a mean of per-text values);
- multiple choice, 0-100: `acc` (the choice of largest summed log-prob is the gold one), `acc_norm` (the same after
  dividing each log-prob by the choice's UTF-8 byte length: lm-eval's `acc_bytes`; its `acc_norm` divides by
  characters) and `ppl_sc`, OpenCompass' PPL rule as SailCompass scores choices: each candidate's *whole* prompt
  (context + choice, tokenized as one string, its left end cut to `max_length` tokens) is scored by its summed
  token cross-entropy divided by its token count (`HuggingFaceCausalLM._get_ppl`: every token but the first is
  predicted, every token counts in the denominator), and the lowest wins (the first on a tie). (OpenCompass run
  with left-padded batches also scores a padded row's first token from a pad position; that depends on the batch
  and is not reproduced: the value here is its value for a batch of one);
- passkey (eval/passkey.py): `exact_match` (0-100) of the key over the depth × length grid, per language and per
  cell, with the heat map `DIR/<task>.png`;
- generation: the task's `metrics` (eval/metrics.py), 0-100, and `language_consistency`: the share (0-100) of
  outputs whose answer (`metrics.answer_text`) lid.176 finds in the record's language (a translation's target:
  `target_language`, else the part of `language` after its last "-"), for tasks that ask for it and records that
  carry a language.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sailor2_jax.eval import metrics, passkey
from sailor2_jax.eval.config import (GenerationTask, MultipleChoiceTask, PasskeyTask, PerplexityTask, TaskBase,
                                     TasksFile)
from sailor2_jax.eval.task_records import FewShot, choice_texts, read_records
from sailor2_jax.eval.score import Scorer, encode_pair, pair_row, rolling_rows
from sailor2_jax.files import write_json, write_jsonl
from sailor2_jax.generate.engine import Generator
from sailor2_jax.model.source import OpenModel



def expected_language(record: dict) -> str:
    """The language an output for `record` must be in: `target_language`, else `language`'s last "-" part (a
    translation's `en-th` → th)."""
    from sailor2_jax.languages import canonical_language
    return canonical_language(record.get("target_language") or record["language"].rsplit("-", 1)[-1])


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
        self.generator = Generator(opened.model, opened.mesh, prefill_chunk=tasks.prefill_chunk)
        self.max_length = min(tasks.max_length, self.generator.cfg.max_position_embeddings)
        self.scorer = Scorer(self.generator, batch_size=tasks.batch_size)
        self.prefix_id = opened.eos_ids[0]

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def run(self, out_dir: Path, model_name: str) -> dict:
        results, counts = {}, {}
        start = time.time()
        for task in self.tasks.tasks:
            if isinstance(task, PasskeyTask):  # built from the embedded text
                kept = passkey.records(task.languages, task.lengths, task.depths, task.samples, task.seed,
                                       self.encode)[:self.tasks.task_limit(task)]
                counts[task.name] = {"read": len(kept), "scored": len(kept), "skipped": 0}
            else:
                records = read_records(task, self.tasks.path(task.data), self.tasks.task_limit(task))
                if not records.kept:
                    raise ValueError(f"task {task.name}: no valid record in {records.path}")
                kept = records.kept
                counts[task.name] = {"read": records.read, "scored": len(kept), "skipped": len(records.skipped)}
            with tqdm(total=len(kept), desc=task.name, unit="record", file=sys.stderr) as bar:
                rows, results[task.name] = getattr(self, task.type)(task, kept, bar)
            write_jsonl(out_dir / f"{task.name}.jsonl", rows)
            if isinstance(task, PasskeyTask):
                passkey.plot_heatmap(rows, task.lengths, task.depths, out_dir / f"{task.name}.png",
                                     title=f"passkey retrieval: {model_name}")
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
        flat, owner, whole, whole_owner = [], [], [], []
        n_tokens: list[list[int]] = []  # per record and choice: the whole prompt's token count
        for i, r in enumerate(records):
            context = fewshot.prompt(r, i)
            n_tokens.append([])
            for k, choice in enumerate(choice_texts(task, r)):
                flat.append(pair_row(*encode_pair(self.encode, context, choice), self.max_length, self.prefix_id))
                owner.append(i)
                ids = self.encode(context + choice)[-self.max_length:]
                n_tokens[i].append(len(ids))
                if len(ids) > 1:  # a single token predicts nothing: OpenCompass' value is 0 / 1
                    whole.append((ids, len(ids) - 1))
                    whole_owner.append((i, k))
        bar.reset(total=len(flat) + len(whole))
        bar.unit = "row"
        scores = self.scorer.score(flat + whole, on_rows=bar.update)
        lls: list[list[float]] = [[] for _ in records]
        for i, (ll, _) in zip(owner, scores):
            lls[i].append(ll)
        ce = [[0.0] * len(n) for n in n_tokens]  # mean token cross-entropy of each whole prompt
        for (i, k), (ll, _) in zip(whole_owner, scores[len(flat):]):
            ce[i][k] = -ll / n_tokens[i][k]
        rows = []
        for r, ll, c in zip(records, lls, ce):
            nbytes = np.array([len(x.encode("utf-8")) for x in choice_texts(task, r)], float)
            rows.append({**r, "logliks": ll, "pred": int(np.argmax(ll)),
                         "pred_norm": int(np.argmax(np.array(ll) / nbytes)), "ppl_sc": c,
                         "pred_ppl_sc": int(np.argmin(c)), "gold": r["gold"]})

        def metric(idx):
            return {name: 100.0 * float(np.mean([rows[i][key] == rows[i]["gold"] for i in idx]))
                    for name, key in (("acc", "pred"), ("acc_norm", "pred_norm"), ("ppl_sc", "pred_ppl_sc"))}
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
            raw = self.tok.decode(ids, skip_special_tokens=task.skip_special_tokens)
            output = metrics.postprocess(task, raw)
            references = metrics.reference_texts(task, r["references"])
            outputs.append(output)
            refs.append(references)
            row = {**r, "raw_output": raw, "output": output,
                   "scores": metrics.sentence_scores(task, output, references, self.is_thai)}
            if task.language_consistency and "language" in r:
                expected = expected_language(r)
                verdict = self.verifier.verdict(metrics.answer_text(task, output), expected)
                row |= {"output_language": verdict.language, "language_consistent": verdict.consistent}
            rows.append(row)

        def metric(idx):
            out = metrics.corpus_scores(task, [outputs[i] for i in idx], [refs[i] for i in idx],
                                        [rows[i]["scores"] for i in idx])
            checked = [rows[i]["language_consistent"] for i in idx if "language_consistent" in rows[i]]
            if checked:
                out["language_consistency"] = 100.0 * float(np.mean(checked))
            return out
        return rows, _by_language(rows, metric)

    def passkey(self, task: PasskeyTask, records: list[dict], bar: tqdm) -> tuple[list[dict], dict]:
        """Greedy completions of the passkey prompts (never truncated: a prompt is as long as its cell says),
        scored by exact match of the first number generated; metrics overall, per language and per grid cell
        (`exact_match/len<N>_depth<D>`)."""
        from sailor2_jax.generate.sampling import SamplingConfig

        completions = self.generator.generate(
            [self.encode(r["prompt"]) for r in records], sampling=SamplingConfig(temperature=0.0),
            max_new_tokens=task.max_new_tokens, eos_ids=self.eos_ids, batch_size=self.tasks.batch_size,
            on_batch=bar.update)
        rows = []
        for r, (c,) in zip(records, completions):
            output = self.tok.decode(c.token_ids, skip_special_tokens=True)
            rows.append({k: v for k, v in r.items() if k != "prompt"}
                        | {"output": output, "answer": passkey.answer(output),
                           "correct": passkey.answer(output) == r["key"]})

        def metric(idx):
            return {"exact_match": 100.0 * float(np.mean([rows[i]["correct"] for i in idx]))}
        out = _by_language(rows, metric)
        for length in task.lengths:
            for depth in task.depths:
                cell = [i for i, r in enumerate(rows) if r["length"] == length and r["depth"] == depth]
                if cell:
                    out[f"exact_match/len{length}_depth{depth:g}"] = metric(cell)["exact_match"]
        return rows, out

    @functools.cached_property
    def verifier(self):
        from sailor2_jax.post.verifier import LanguageVerifier
        return LanguageVerifier()

    def is_thai(self, text: str) -> bool:
        return self.verifier.identify(text) == "th"

    def _fewshot(self, task: TaskBase) -> FewShot:
        if not task.num_fewshot:
            return FewShot(task, [])
        pool = read_records(task, self.tasks.path(task.fewshot_data))
        return FewShot(task, pool.kept)
