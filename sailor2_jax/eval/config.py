"""A tasks file: what `sailor2-jax eval --tasks TASKS.yaml` runs.

```yaml
data_dir: data/sailcompass        # relative `data`/`fewshot_data` paths resolve here (default: as given, then the
                                  # package, so `data/eval/...` finds the embedded files)
max_length: 4096                  # context window in tokens (capped at the model's max_position_embeddings)
batch_size: 16                    # rows per scoring batch / prompts per generation batch
limit: null                       # score only the first N valid records of each task (a task's own `limit` wins)
tasks:
  - {name: udhr_ppl, type: perplexity, data: data/eval/udhr_perplexity.jsonl}
  - name: xcopa_th
    type: multiple_choice
    data: xcopa/th.jsonl
    template: "Premise: {context}\\nAnswer:"  # str.format over the record's fields
    choice_template: " {choice}"
  - {name: flores_en-th, type: generation, data: flores/en-th.jsonl, until: ["\\n"], metrics: [chrf++, bleu]}
  - {name: passkey, type: passkey, lengths: [4096, 16384, 32768], depths: [0, 0.5, 1]}  # built, no data
```

Records (one JSON object per line of `data`): perplexity `{"text", "language"?}`, multiple choice
`{"context", "choices": [...], "gold": index, "language"?}`, generation `{"prompt", "references": [...],
"language"?}`; other fields are kept and may be used by the templates. Few-shot examples come from `fewshot_data`
(records of the same kind), `num_fewshot` per query, drawn with `fewshot_seed` and the query's index (so a
record's prompt never depends on batching or on the other records), from the examples of the query's language
when records have one (`fewshot_same_language`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pydantic

from sailor2_jax.config import Config, resolve_path
from sailor2_jax.eval.sailcompass_metrics import SailCompassScoring
from sailor2_jax.languages import LANGUAGES

GenerationMetric = Literal["chrf++", "chrf", "bleu", "exact_match", "f1", "exact",
                           # SailCompass' evaluators (eval/sailcompass_metrics.py), on the raw output
                           "em_sc", "f1_sc", "em_tydiqa", "f1_tydiqa", "bleu_sc", "chrf++_sc", "option_sc"]
SAILCOMPASS_METRICS = ("em_sc", "f1_sc", "em_tydiqa", "f1_tydiqa", "bleu_sc", "chrf++_sc", "option_sc")


class TaskBase(Config):
    name: str = pydantic.Field(pattern=r"^[A-Za-z0-9_.+-]+$", description="also the per-record file's name")
    data: str = pydantic.Field(description="JSONL records")
    limit: int | None = pydantic.Field(None, gt=0, description="score only the first N valid records")
    num_fewshot: int = pydantic.Field(0, ge=0)
    fewshot_data: str | None = None
    fewshot_seed: int = 1234
    fewshot_same_language: bool = True
    fewshot_separator: str = "\n\n"
    description: str = pydantic.Field("", description="text put before the few-shot examples and the query")

    @pydantic.model_validator(mode="after")
    def _fewshot(self):
        if self.num_fewshot and not self.fewshot_data:
            raise ValueError(f"task {self.name}: num_fewshot={self.num_fewshot} needs fewshot_data")
        return self


class PerplexityTask(TaskBase):
    type: Literal["perplexity"]


class MultipleChoiceTask(TaskBase):
    type: Literal["multiple_choice"]
    template: str = "{context}"
    choice_template: str = "{choice}"


class GenerationTask(TaskBase):
    type: Literal["generation"]
    template: str = "{prompt}"
    answer_template: str = pydantic.Field(" {answer}", description="a few-shot example's answer (its first "
                                          "reference) after its templated prompt")
    max_new_tokens: int = pydantic.Field(256, gt=0)
    until: list[str] = pydantic.Field(default_factory=lambda: ["\n\n"], description="stop strings: the output "
                                      "is cut before the first one")
    metrics: list[GenerationMetric] = pydantic.Field(default_factory=lambda: ["chrf++"])
    postprocess: Literal["strip", "first_line", "none"] = pydantic.Field(
        "strip", description="strip: surrounding whitespace; first_line: the first non-empty line, stripped; none: "
        "as generated (cut at the stop strings only; SailCompass' metrics post-process themselves)")
    skip_special_tokens: bool = pydantic.Field(False, description="decode without special tokens (as OpenCompass "
                                               "decodes)")
    sailcompass: SailCompassScoring | None = pydantic.Field(None, description="what the SailCompass metrics look "
                                                            "for (written by eval-import sailcompass)")
    language_consistency: bool = pydantic.Field(True, description="report the share of outputs in the record's "
                                                "(target) language (lid.176), for records that carry a language")
    answer_pattern: str | None = pydantic.Field(None, description="regex: score its first match (group 1 if "
                                                "it has one) instead of the whole output, e.g. an option number")
    normalize_digits: bool = pydantic.Field(False, description="Thai/Lao/Khmer/Burmese/... digits → 0-9 in outputs "
                                            "and references before scoring")
    bleu_tokenize: str = pydantic.Field("13a", description="sacrebleu tokenizer: 13a, zh, char, intl, none ...")

    @pydantic.field_validator("until")
    @classmethod
    def _until(cls, v):
        if any(not s for s in v):
            raise ValueError("stop strings must be non-empty")
        return v

    @pydantic.model_validator(mode="after")
    def _sailcompass(self):
        needs = [m for m in self.metrics if m in SAILCOMPASS_METRICS]
        if needs and self.sailcompass is None:
            raise ValueError(f"task {self.name}: metrics {needs} need a `sailcompass` section (eval-import "
                             "sailcompass writes it)")
        return self


class PasskeyTask(TaskBase):
    """Passkey retrieval (eval/passkey.py): records built from the embedded UDHR text, not read from `data`."""
    type: Literal["passkey"]
    data: str = pydantic.Field("", description="unused: the records are built")
    languages: list[str] = pydantic.Field(default_factory=lambda: list(LANGUAGES), min_length=1)
    lengths: list[int] = pydantic.Field(default_factory=lambda: [1024, 2048, 4096], min_length=1,
                                        description="prompt lengths in tokens (the grid's columns)")
    depths: list[float] = pydantic.Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], min_length=1,
                                         description="needle depths, 0 = start of the haystack (the grid's rows)")
    samples: int = pydantic.Field(1, gt=0, description="keys per language and cell")
    seed: int = 0
    max_new_tokens: int = pydantic.Field(8, gt=0)

    @pydantic.field_validator("depths")
    @classmethod
    def _depths(cls, v):
        if any(not 0.0 <= d <= 1.0 for d in v):
            raise ValueError(f"depths must lie in [0, 1], got {v}")
        return v

    @pydantic.field_validator("languages")
    @classmethod
    def _languages(cls, v):
        if unknown := [x for x in v if x not in LANGUAGES]:
            raise ValueError(f"unknown languages {unknown} (known: {', '.join(LANGUAGES)})")
        return v


Task = Annotated[PerplexityTask | MultipleChoiceTask | GenerationTask | PasskeyTask,
                 pydantic.Field(discriminator="type")]


class TasksFile(Config):
    data_dir: str | None = None
    max_length: int = pydantic.Field(4096, gt=1, description="tokens per scored row and generation context")
    batch_size: int = pydantic.Field(16, gt=0)
    prefill_chunk: int | None = pydantic.Field(None, gt=0, description="prefill long prompts this many tokens at a "
                                               "time (a power of two; generate --prefill-chunk)")
    limit: int | None = pydantic.Field(None, gt=0, description="score only the first N valid records of each task "
                                       "that sets no limit of its own (the embedded files interleave languages)")
    tasks: list[Task] = pydantic.Field(min_length=1)

    @pydantic.model_validator(mode="after")
    def _unique(self):
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique: {names}")
        return self

    def task_limit(self, task: TaskBase) -> int | None:
        return task.limit if task.limit is not None else self.limit

    def path(self, relative: str) -> Path:
        """`data_dir`/relative when data_dir is set and that exists, else as given, else inside the package (the
        embedded `data/eval/...`); a file found nowhere is named as under data_dir."""
        packaged = resolve_path(relative)
        if self.data_dir is not None and not Path(relative).is_absolute():
            under = Path(self.data_dir).expanduser() / relative
            return under if under.exists() or not packaged.exists() else packaged
        return packaged


def load_tasks(path: str | Path, overrides: list[str] = (), only: list[str] | None = None) -> TasksFile:
    """A tasks file (a path, or a packaged name under configs/eval/), with `key=value` overrides of its top-level
    fields; `only` keeps the named tasks."""
    from sailor2_jax.config import find_config, load

    file = find_config("eval", path)
    tasks = load(TasksFile, file, overrides)
    if only:
        unknown = sorted(set(only) - {t.name for t in tasks.tasks})
        if unknown:
            raise ValueError(f"--only: no task {', '.join(unknown)} in {file} (it has "
                             f"{', '.join(t.name for t in tasks.tasks)})")
        tasks = tasks.replace(tasks=[t for t in tasks.tasks if t.name in only])
    return tasks
