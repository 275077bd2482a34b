"""Task records: read and checked line by line (a bad line is reported with its file:line and skipped, never lost:
read = kept + skipped), and turned into prompts (templates, few-shot examples).

Templates are `str.format` strings over the record's fields (`{context}`, `{question}`, ...); a multiple-choice
choice is rendered with `choice_template` (`{choice}` plus the record's fields), a few-shot generation example's
answer with `answer_template` (`{answer}`: its first reference).
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sailor2_jax.eval.config import GenerationTask, MultipleChoiceTask, PerplexityTask, TaskBase


@dataclass
class Records:
    path: Path
    kept: list[dict]
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)

    @property
    def read(self) -> int:
        return len(self.kept) + len(self.skipped)


def _str(record: dict, key: str, *, empty: bool = False) -> None:
    value = record.get(key)
    if not isinstance(value, str) or (not empty and not value):
        raise ValueError(f"`{key}` must be a{'' if empty else ' non-empty'} string, got {value!r}"[:200])


def check_record(task: TaskBase, record) -> None:
    """A ValueError saying what is wrong with one record of the task's type."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "language" in record and not isinstance(record["language"], str):
        raise ValueError(f"`language` must be a string, got {record['language']!r}")
    if isinstance(task, PerplexityTask):
        _str(record, "text")
    elif isinstance(task, MultipleChoiceTask):
        _str(record, "context", empty=True)
        choices = record.get("choices")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise ValueError("`choices` must be a list of at least two non-empty strings")
        gold = record.get("gold")
        if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
            raise ValueError(f"`gold` must be an index into the {len(choices)} choices, got {gold!r}")
    elif isinstance(task, GenerationTask):
        _str(record, "prompt")
        refs = record.get("references")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError("`references` must be a non-empty list of strings")
    for template in _templates(task):
        try:
            template.format(**{**record, "choice": "", "answer": ""})
        except (KeyError, IndexError) as e:
            raise ValueError(f"template {template!r} needs field {e} that the record lacks") from None


def _templates(task: TaskBase) -> list[str]:
    if isinstance(task, MultipleChoiceTask):
        return [task.template, task.choice_template]
    if isinstance(task, GenerationTask):
        return [task.template, task.answer_template]
    return []


def read_records(task: TaskBase, path: Path, limit: int | None = None, report: bool = True) -> Records:
    """The valid records of a JSONL file (the first `limit` of them); each bad line is printed as
    `path:line: reason; record skipped` on stderr and counted."""
    if not path.is_file():
        raise FileNotFoundError(f"task {task.name}: data file not found: {path}")
    out = Records(path, [])
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            if limit is not None and len(out.kept) >= limit:
                break
            if not raw.strip():
                continue
            try:
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise ValueError(f"not valid JSON ({e.msg})") from None
                check_record(task, record)
            except ValueError as e:
                out.skipped.append((number, str(e)))
                if report:
                    print(f"{path}:{number}: {e}; record skipped", file=sys.stderr)
                continue
            out.kept.append(record)
    return out


# --- prompts -------------------------------------------------------------------------------------------------------

def query_text(task: TaskBase, record: dict) -> str:
    if isinstance(task, MultipleChoiceTask):
        return task.template.format(**record)
    if isinstance(task, GenerationTask):
        return task.template.format(**record)
    raise TypeError(task.type)


def choice_texts(task: MultipleChoiceTask, record: dict) -> list[str]:
    return [task.choice_template.format(**{**record, "choice": c}) for c in record["choices"]]


def shot_text(task: TaskBase, example: dict) -> str:
    """A few-shot example: its query followed by its answer."""
    if isinstance(task, MultipleChoiceTask):
        return query_text(task, example) + choice_texts(task, example)[example["gold"]]
    assert isinstance(task, GenerationTask)
    return query_text(task, example) + task.answer_template.format(**{**example, "answer": example["references"][0]})


class FewShot:
    """Few-shot examples per query: `num_fewshot` drawn without replacement with Random((seed, index)) from the
    pool (the examples of the query's language when `fewshot_same_language` and the pool has some), leaving out an
    example identical to the query."""

    def __init__(self, task: TaskBase, pool: list[dict]):
        self.task, self.pool = task, pool
        self.by_language: dict[str, list[dict]] = {}
        for ex in pool:
            self.by_language.setdefault(ex.get("language"), []).append(ex)

    def prompt(self, record: dict, index: int) -> str:
        task = self.task
        query = query_text(task, record)
        shots: list[str] = []
        if task.num_fewshot:
            pool = self.pool
            if task.fewshot_same_language and self.by_language.get(record.get("language")):
                pool = self.by_language[record["language"]]
            pool = [ex for ex in pool if ex is not record and query_text(task, ex) != query]
            if len(pool) < task.num_fewshot:
                raise ValueError(f"task {task.name}: {len(pool)} few-shot examples for a query of language "
                                 f"{record.get('language')!r}, num_fewshot={task.num_fewshot}")
            rng = random.Random(f"{task.fewshot_seed}:{index}")
            shots = [shot_text(task, ex) for ex in rng.sample(pool, task.num_fewshot)]
        return task.description + task.fewshot_separator.join([*shots, query])
